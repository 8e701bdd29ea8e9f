"""`fdm train`: train a denoiser; one option per TrainConfig field, plus --config and helpers."""

from __future__ import annotations

import dataclasses
import json
import typing

import click

HELP = {
    "dataset": "Dataset name (fdm data list), e.g. carla_no_traffic, minerl, bouncing-balls.",
    "data_dir": "Dataset folder. [default: $FDM_DATA_DIR/NAME or datasets/NAME]",
    "model": "fdm | vdm | ramvid | ssm. [default: the preset's model, else fdm]",
    "preset": "Named settings (--list-presets). [default: the model's preset for the dataset, else tiny]",
    "run_dir": "Run folder; an existing one is resumed. [default: runs/DATASET-PRESET]",
    "diffusion_steps": "Diffusion timesteps N.",
    "noise_schedule": "Beta schedule: linear | cosine.",
    "prediction": "What the network predicts: eps | x0 | v.",
    "clip_length": "Frames per training clip (fdm: T, of which the model sees K; others: the model's frames).",
    "num_workers": "Data loader processes. [default: 0 on CPU, 4 on GPU]",
    "steps": "Optimiser steps to train to (a resumed run continues up to it).",
    "batch_size": "Examples per optimiser step over all ranks and micro-batches.",
    "grad_accum": "Micro-batches per optimiser step and rank.",
    "lr": "Learning rate (after warm-up).",
    "warmup_steps": "Linear learning-rate warm-up steps.",
    "decay_steps": "Decay the learning rate linearly to 0 over the last N steps (0 = constant; may be set "
                   "when resuming, to anneal a run).",
    "optimizer": "adamw | adam.",
    "weight_decay": "Weight decay.",
    "grad_clip": "Clip the global gradient norm to this (0 = off).",
    "ema_decay": "EMA decay of the weights that checkpoints and samples use.",
    "ema_warmup": "Ramp the EMA decay up as min(decay, (1+n)/(10+n)).",
    "autocast": "auto (bf16 on CUDA, off on CPU) | bf16 | off.",
    "seed": "Seed of initial weights, data order, masks and noise.",
    "device": "cpu, cuda, cuda:1, ... [default: cuda:LOCAL_RANK if available, else cpu]",
    "uncondition_rate": "ramvid: probability that a clip has no conditioning frames.",
    "max_num_mask_frames": "ramvid: at most this many conditioning frames per clip.",
    "temporal_layer": "ssm: attn | bi-s4d.",
    "guidance_weight": "vdm, ssm: reconstruction-guidance weight w_r when sampling with given frames.",
    "noise_levels": "fdm: per-clip (one diffusion level per training example, FDM) | per-frame (an independent "
                    "level per latent frame, Diffusion-Forcing training; observed frames stay clean). "
                    "[default: per-clip]",
    "save_every": "Checkpoint every N steps (and at the end).",
    "keep_checkpoints": "Keep the newest N checkpoints (0 = all).",
    "log_every": "Write a metrics record every N steps.",
    "sample_every": "Sample videos with the EMA weights every N steps (0 = never).",
    "sample_scheme": "Sampling scheme of periodic samples (fdm schemes list).",
    "sample_n_obs": "Given frames of periodic samples. [default: the preset's, else min(36, length // 4)]",
    "sample_length": "Frames per periodic sample. [default: the test videos' length]",
    "sample_sampler": "Noise sampler of periodic samples: ddpm, ddim, dpm++2m, ...",
    "sample_steps": "Denoising steps per job of periodic samples.",
    "sample_videos": "Videos per periodic sampling.",
}


def _field_options(func):
    """One click option per TrainConfig field (model_config has its own --model-option)."""
    from trainers.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for field in reversed(dataclasses.fields(TrainConfig)):
        if field.name == "model_config":
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = next(t for t in typing.get_args(hints[field.name]) if t is not type(None))
        if kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=HELP[field.name])
        else:
            option = click.option(flag, field.name, type=kind, default=None, help=HELP[field.name])
        func = option(func)
    return func


def _model_options(ctx, param, values) -> dict:
    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE (got {item!r})")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


@click.command(context_settings={"show_default": True})
@_field_options
@click.option("--model-option", "model_config", multiple=True, callback=_model_options, metavar="KEY=VALUE",
              help="Override a model config field (JSON value), repeatable: --model-option base_channels=64.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="JSON file of TrainConfig fields (e.g. a run's config.json); options given here win.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit.")
@click.option("--list-presets", is_flag=True, help="List the presets and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config_file, print_config, list_presets, quiet, **options):
    """Train a video denoiser (fdm, vdm, ramvid, ssm) on a dataset; resumes an existing run folder.

    \b
    Writes RUN_DIR/config.json, metrics.jsonl, loss.png, checkpoints/step_NNNNNNN.safetensors
    (model + EMA; `fdm sample` takes them) and samples/step_NNNNNNN/*.mp4. Under torchrun every
    rank trains its share of each batch; rank 0 writes.

    \b
    Examples:
      fdm train --dataset carla_no_traffic                      # the published FDM CARLA run
      fdm train --dataset bouncing-balls --data-dir data/balls --model fdm --preset tiny --steps 2000
      torchrun --nproc_per_node 4 -m cli.main train --preset ssm-ucf101-32 --data-dir UCF-101
    """
    if list_presets:
        _echo_presets()
        return
    from trainers import TrainConfig
    from trainers.config import load_config_file, merge

    cfg = TrainConfig.from_dict({k: v for k, v in options.items() if v is not None and v != {}})
    if config_file:
        cfg = merge(load_config_file(config_file), cfg)
    if print_config:
        from trainers.resolve import resolve_for_run_dir

        click.echo(json.dumps(resolve_for_run_dir(cfg)[0].to_dict(), indent=1, sort_keys=True))
        return
    from trainers import train as run_training

    result = run_training(cfg, progress=not quiet)
    if result.checkpoint is not None and _is_main():
        click.echo(f"trained {result.config.model} to step {result.step}: {result.checkpoint}")


def _echo_presets() -> None:
    from trainers.presets import preset_table

    for p in preset_table():
        click.echo(f"{p.model:7s} {p.name:20s} {p.about}")


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", 0)) == 0

