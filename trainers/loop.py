"""The training loop shared by every trainer: build, step, evaluate (sample), checkpoint, resume.

    result = train(TrainConfig(dataset="bouncing-balls", data_dir="data/balls", model="fdm",
                               preset="tiny", steps=1000))

One optimiser step = `grad_accum` micro-batches per rank, each a trainer-made Batch through
`diffusion_loss` (L2 on the prediction type over latent frames). Every random draw of a step
(clips' order and windows, masks, timesteps, noise) is a function of (seed, rank, step,
micro-batch) or of the saved data position, and the global RNG states are saved too, so a
resumed run continues the exact loss trajectory of an uninterrupted one (bit-exact on the CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fdm_engine.diffusion import diffusion_loss
from fdm_engine.diffusion.schedule import DiffusionConfig, NoiseSchedule
from fdm_engine.errors import FdmError
from fdm_engine.files import check_output_path, write_text_atomic
from fdm_engine.metrics_log import MetricsLog
from fdm_engine.run_lock import run_folder_lock
from trainers import checkpoints as ckpt
from trainers.base import TRAINERS, Trainer
from trainers.config import TrainConfig
from trainers.data import DataStream
from trainers.distributed import (
    DistEnv,
    barrier,
    cleanup,
    default_device,
    gather_objects,
    init_distributed,
    mean_over_ranks,
    wrap_model,
)
from trainers.ema import EMA
from trainers.masks import example_rng
from trainers.metrics import plot_losses
from trainers.optim import build_optimizer, clip_gradients, lr_at, set_lr
from trainers.resolve import CONFIG_FILE, resolve_for_run_dir

PLOT_EVERY_S = 120.0  # at most one loss-curve redraw per this many seconds (and one at the end)


class TrainingDiverged(FdmError):
    """The loss or the gradient norm became NaN or infinite; nothing was written for that step."""


@dataclasses.dataclass
class TrainRun:
    """Everything one training process holds."""

    cfg: TrainConfig
    env: DistEnv
    device: torch.device
    trainer: Trainer
    model: torch.nn.Module  # the bare model (what checkpoints store)
    net: torch.nn.Module  # what the step calls: the model, or its DDP wrapper
    ema: EMA
    optimizer: torch.optim.Optimizer
    diffusion: DiffusionConfig
    schedule: NoiseSchedule
    data: DataStream
    metrics: MetricsLog
    log: Callable[[str], None]
    step: int = 0
    sampling: object = None  # SamplingSetup (rank 0, when sampling is on)
    last_checkpoint: Path | None = None
    elapsed: float = 0.0  # training seconds before this process (from the checkpoint)
    last_plot: float = 0.0  # time.monotonic() of the last loss-curve PNG

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    model: torch.nn.Module
    ema_model: torch.nn.Module
    config: TrainConfig


@dataclasses.dataclass
class StepStats:
    loss: float
    grad_norm: float
    lr: float
    examples: int


# ---------------------------------------------------------------------------------------------
# Entry point


def train(cfg: TrainConfig, *, progress: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume the run in cfg's run folder) up to cfg.steps optimiser steps."""
    cfg, _ = resolve_for_run_dir(cfg)
    check_output_path(cfg.run_dir, "--run-dir", folder=True)
    device = default_device(cfg.device, DistEnv(local_rank=_local_rank()))
    env = init_distributed(device.type)
    # Rank 0 writes the folder, so rank 0 holds its lock: a second `fdm train` there stops at once.
    lock = run_folder_lock(cfg.run_dir, "--run-dir") if env.is_main else contextlib.nullcontext()
    try:
        with lock:
            return _train_locked(cfg, env, device, log, progress)
    finally:
        cleanup(env)


def _train_locked(cfg: TrainConfig, env: DistEnv, device: torch.device, log, progress: bool) -> TrainResult:
    run = build(cfg, env, device, log or _default_log(env))
    restore(run)
    if run.env.is_main:
        verb = f"resuming at step {run.step}" if run.step else "starting"
        run.log(f"{verb}: {cfg.model} ({cfg.preset}) on {cfg.dataset}, {_count(run.model)} parameters, "
                f"{env.world} x {device}, run folder {cfg.run_dir}")
    run_loop(run, progress)
    return TrainResult(run.run_dir, run.step, run.last_checkpoint, run.model, run.ema.module, cfg)


# ---------------------------------------------------------------------------------------------
# Build


def build(cfg: TrainConfig, env: DistEnv, device: torch.device, log) -> TrainRun:
    from fdm_engine.datasets import open_dataset
    from fdm_engine.models import build_model

    micro = _micro_batch(cfg, env)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.model_config).to(device)
    trainer = TRAINERS.get(cfg.model)(cfg, model)
    _seed_globals(cfg.seed, env.rank)
    videos = open_dataset(cfg.dataset, cfg.data_dir, split="train", image_size=model.image_size,
                          channels=model.channels)
    clips = videos.windows(trainer.clip_length(), train=True, seed=cfg.seed)
    workers = cfg.num_workers if cfg.num_workers is not None else (4 if device.type == "cuda" else 0)
    diffusion = DiffusionConfig(schedule=cfg.noise_schedule, num_steps=cfg.diffusion_steps, prediction=cfg.prediction)
    run = TrainRun(
        cfg=cfg, env=env, device=device, trainer=trainer, model=model, net=model,
        ema=EMA(model, cfg.ema_decay, cfg.ema_warmup),
        optimizer=build_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.weight_decay),
        diffusion=diffusion, schedule=NoiseSchedule(diffusion),
        data=DataStream(clips, micro, env, cfg.seed, workers, pin_memory=device.type == "cuda"),
        metrics=MetricsLog(Path(cfg.run_dir) / "metrics.jsonl", enabled=env.is_main), log=log,
    )
    if env.is_main and cfg.sample_every:
        from trainers.sampling import prepare_sampling

        run.sampling = prepare_sampling(cfg, run.ema.module, cfg.model, diffusion, trainer.frames,
                                        extra=trainer.checkpoint_extra())
    return run


def write_config(run: TrainRun) -> None:
    """RUN_DIR/config.json marks a run that has started: written once a step has succeeded (or at
    a resume), so a start that fails (a clip longer than the videos, ...) leaves nothing that
    would make the corrected command look like "a run with other settings"."""
    if run.env.is_main:
        write_text_atomic(run.run_dir / CONFIG_FILE, run.cfg.to_json() + "\n")


def _micro_batch(cfg: TrainConfig, env: DistEnv) -> int:
    parts = env.world * cfg.grad_accum
    if cfg.batch_size % parts:
        raise FdmError(f"--batch-size {cfg.batch_size} must be a multiple of ranks x --grad-accum "
                       f"({env.world} x {cfg.grad_accum} = {parts})")
    return cfg.batch_size // parts


def _seed_globals(seed: int, rank: int) -> None:
    """Global RNGs (dropout and anything else outside the per-step generators) differ per rank."""
    torch.manual_seed(seed * 1000 + rank + 1)
    np.random.seed((seed * 1000 + rank + 1) % 2**32)
    random.seed(seed * 1000 + rank + 1)


# ---------------------------------------------------------------------------------------------
# Checkpoint / resume


def restore(run: TrainRun) -> None:
    """Continue from the newest loadable checkpoint of the run folder, if any; then wrap for DDP."""
    found = ckpt.latest_training_checkpoint(run.run_dir, run.device)
    if found is not None:
        path, state = found
        companion = state["companion"]
        run.model.load_state_dict(state["weights"])
        run.ema.load_state_dict(state["ema"], companion["ema_updates"])
        run.optimizer.load_state_dict(companion["optimizer"])
        run.data.load_state(companion["data"])
        rngs = companion["rng"]
        ckpt.set_rng_state(rngs[run.env.rank] if len(rngs) == run.env.world else rngs[0])
        run.step = int(companion["step"])
        run.elapsed = float(companion.get("elapsed_s", 0.0))
        run.last_checkpoint = path
    run.metrics.truncate_after(run.step)
    run.net = wrap_model(run.model, run.env, run.device)


def save(run: TrainRun) -> None:
    """Checkpoint the current step (rank 0 writes; every rank contributes its RNG state)."""
    rngs = gather_objects(ckpt.rng_state(), run.env)
    if run.env.is_main:
        extra = {"dataset": run.cfg.dataset, "train_config": run.cfg.to_dict(), "elapsed_s": run.elapsed,
                 **run.trainer.checkpoint_extra()}
        if run.cfg.data_dir is not None:
            extra["data_dir"] = str(Path(run.cfg.data_dir).resolve())
        run.last_checkpoint = ckpt.save_training_checkpoint(
            run.run_dir, run.step, run.model, run.ema, run.diffusion, run.optimizer,
            run.data.state(), rngs, extra, elapsed=run.elapsed)
        ckpt.prune_checkpoints(run.run_dir, run.cfg.keep_checkpoints)
        if run.step == run.cfg.steps or time.monotonic() - run.last_plot > PLOT_EVERY_S:
            plot_losses(run.metrics.read(), run.run_dir / "loss.png")  # ~1 s: not at every save
            run.last_plot = time.monotonic()
    barrier(run.env)


# ---------------------------------------------------------------------------------------------
# Step


def train_step(run: TrainRun) -> StepStats:
    """One optimiser step: accumulate micro-batch gradients, check, clip, step, update the EMA."""
    cfg = run.cfg
    lr = lr_at(run.step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.decay_steps)
    set_lr(run.optimizer, lr)
    run.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=run.device)
    examples = 0
    for micro in range(cfg.grad_accum):
        clips = run.data.next()  # [b, T, C, H, W]
        rng = example_rng(cfg.seed, run.env.rank, run.step, micro)
        batch = run.trainer.make_batch(clips, rng).to(run.device)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last or run.net is run.model else run.net.no_sync()
        with sync:
            with _autocast(cfg.autocast, run.device):
                loss = diffusion_loss(run.net, run.schedule, batch.x0, batch.frame_indices, batch.observed,
                                      batch.valid, generator=gen, draw=run.trainer.level_draw())
            (loss / cfg.grad_accum).backward()
        total += loss.detach().float()
        examples += len(clips)
    loss_value = float(mean_over_ranks(total / cfg.grad_accum, run.env))
    _check_finite(run, "loss", loss_value)
    grad_norm = clip_gradients(run.model.parameters(), cfg.grad_clip)
    _check_finite(run, "gradient norm", grad_norm)
    run.optimizer.step()
    run.ema.update(run.model)
    return StepStats(loss_value, grad_norm, lr, examples * run.env.world)


def _check_finite(run: TrainRun, what: str, value: float) -> None:
    if math.isfinite(value):
        return
    last = run.last_checkpoint or "none yet"
    raise TrainingDiverged(f"the {what} became {value} at step {run.step + 1}; stopped without saving it. "
                           f"Last good checkpoint: {last}. Try a lower --lr, --grad-clip, or --autocast off")


def _autocast(mode: str, device: torch.device):
    """bf16 autocast on CUDA for "auto" (when supported) and anywhere for "bf16"; else off."""
    if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Loop, logging, evaluation


def run_loop(run: TrainRun, progress: bool) -> None:
    from tqdm import tqdm

    cfg = run.cfg
    bar = tqdm(total=cfg.steps, initial=run.step, unit="step", dynamic_ncols=True, desc=f"train {cfg.model}",
               disable=not (progress and run.env.is_main))
    window: list[StepStats] = []
    tick = time.perf_counter()
    if run.step:  # resumed: the run had started
        write_config(run)
    with StopRequest(enabled=not run.env.distributed) as stop, contextlib.closing(bar):
        while run.step < cfg.steps:
            stats = train_step(run)
            if not run.step:
                write_config(run)
            run.step += 1
            window.append(stats)
            bar.set_postfix(loss=f"{stats.loss:.4f}", refresh=False)
            bar.update(1)
            if run.step % cfg.log_every == 0 or run.step == cfg.steps or stop.signal:
                now = time.perf_counter()
                run.elapsed += now - tick
                log_metrics(run, window, now - tick)
                window, tick = [], now
            if run.step % cfg.save_every == 0 or run.step == cfg.steps or stop.signal:
                save(run)
            if stop.signal:
                run.log(f"stopped by {stop.signal.name} at step {run.step}; saved {run.last_checkpoint}; "
                        f"run the same command to resume")
                raise KeyboardInterrupt
            if cfg.sample_every and run.step % cfg.sample_every == 0:
                evaluate(run)
                tick = time.perf_counter()  # sampling time is not training time


class StopRequest:
    """SIGINT / SIGTERM ask the loop to checkpoint at the next step boundary and stop; a second
    signal acts as usual. Single process in the main thread only (DDP ranks would see the signal
    at different steps; there a killed run resumes from its last periodic checkpoint)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: signal.Signals | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum)
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def log_metrics(run: TrainRun, window: list[StepStats], seconds: float) -> None:
    n = len(window)
    record = {
        "step": run.step,
        "loss": sum(s.loss for s in window) / n,
        "lr": window[-1].lr,
        "grad_norm": sum(s.grad_norm for s in window) / n,
        "steps_per_s": n / max(seconds, 1e-9),
        "samples_per_s": sum(s.examples for s in window) / max(seconds, 1e-9),
        "time": run.elapsed,
    }
    run.metrics.write(record)


def evaluate(run: TrainRun) -> list[Path]:
    """Sample videos with the EMA weights into RUN_DIR/samples/step_N/ (rank 0)."""
    paths: list[Path] = []
    if run.env.is_main and run.sampling is not None:
        from trainers.sampling import sample_videos, samples_dir

        # The build step wraps the model as the checkpoint's extra says (e.g. reconstruction guidance).
        paths = sample_videos(run.sampling, run.ema.module, run.diffusion, samples_dir(run.run_dir, run.step),
                              run.device)
        run.log(f"step {run.step}: wrote {len(paths)} sample video(s) to {paths[0].parent}")
    barrier(run.env)
    return paths


def _default_log(env: DistEnv) -> Callable[[str], None]:
    from tqdm import tqdm

    def log(message: str) -> None:
        if env.is_main:
            tqdm.write(message)

    return log


def _local_rank() -> int:
    import os

    return int(os.environ.get("LOCAL_RANK", 0))


def _count(model: torch.nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(n)
