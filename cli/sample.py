"""`fdm sample`: generate long videos with a sampling scheme."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.paths import OutputPath
from fdm_engine.errors import count
from fdm_engine.sample_config import PRECISIONS, option_default as default


def _formats(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in value.split(",") if f.strip())


@click.command(context_settings={"show_default": True})
@click.argument("model")
@click.option("--from", "published_format", default=None, metavar="NAME",
              help="MODEL was written by a published codebase: fdm, ramvid, ssm, video-diffusion "
                   "(as `fdm convert --from`). [default: fdm's own formats, or the format the file shows]")
@click.option("--flags", "published_flags", default=None, metavar='"..."',
              help="A published checkpoint's training arguments (ramvid, ssm).")
@click.option("--config", "published_config", default=None, metavar="FILE.yaml",
              help="A published checkpoint's training config (video-diffusion).")
@click.option("--scheme", default=default("scheme"), help="Sampling scheme (see `fdm schemes list`).")
@click.option("--n-obs", type=int, default=default("n_obs"),
              help="Given frames 0..N-1 to condition on (36: FDM's evaluation setting); 0 = unconditional.")
@click.option("--length", type=int, default=None,
              help="Frames per video. [default: the conditioning videos' length]")
@click.option("--max-frames", type=int, default=None, help="Frames per job (K). [default: the model's]")
@click.option("--step-size", type=int, default=None, help="Latent frames per job (S). [default: K // 2]")
@click.option("--sampler", default=default("sampler"), show_default=True,
              help="Noise sampler: ddpm, ddpm-small, ddim, dpm++2m, dpm++3m, dpm++2m-sde, unipc, unipc-2, heun.")
@click.option("--steps", type=int, default=default("steps"), show_default=True,
              help="Network evaluations per job (a Heun step costs 2).")
@click.option("--spacing", default=default("spacing"), show_default=True,
              help="Timestep spacing: optimised (the log-SNR profile measured optimal on the oracle; at 10 "
                   "steps it beats DDPM-1000 there), logsnr (uniform in log-SNR; as good from ~50 steps), "
                   "linspace (= improved-diffusion's timestep_respacing), trailing, karras, or FILE.json: a "
                   "list of timesteps (e.g. from `fdm eval optimize-steps`), which then sets the steps.")
@click.option("--eta", type=float, default=default("eta"), help="DDIM noise (0 = deterministic).")
@click.option("--clip-denoised/--no-clip-denoised", default=default("clip_denoised"),
              help="Clamp x0 predictions to the data range [-1, 1] at every step, as the published samplers do. "
                   "[default: on for checkpoints, off for the oracle]")
@click.option("--context-noise", type=float, default=default("context_noise"),
              help="Show observed frames at this diffusion timestep instead of clean (fresh noise per job), "
                   "as Diffusion Forcing stabilises long rollouts. [default: clean]")
@click.option("--uncertainty-scale", type=float, default=default("uncertainty_scale"),
              help="df-pyramid/df-trapezoid: levels between neighbouring frames of a chunk.")
@click.option("--partitions", type=int, default=default("partitions"),
              help="fifo: calls per diagonal step (0: the fewest with <= K frames each).")
@click.option("--lookahead", is_flag=True, help="fifo: lookahead denoising (twice the calls).")
@click.option("--block-size", type=int, default=default("block_size"), help="ar-step: frames that start together.")
@click.option("--ar-step", type=int, default=default("ar_step"),
              help="ar-step: calls between the starts of consecutive blocks.")
@click.option("--history-guidance", type=float, default=default("history_guidance"),
              help="History guidance weight W (DFoT): pred = full + W (full - reduced), the predictions "
                   "with the job's whole history and with --history-drop's frames left out, both in one "
                   "network call of twice the rows. 0 = off. For models trained on random observed "
                   "subsets (fdm).")
@click.option("--history-drop", default=default("history_drop"),
              help="History the reduced prediction leaves out: all (no history: vanilla history guidance), "
                   "or keep-nearest:N (all but the N observed frames nearest the job's latent frames).")
@click.option("--num-videos", type=int, default=default("num_videos"), help="Videos to sample.")
@click.option("--batch-size", type=int, default=default("batch_size"),
              help="Jobs per network call (0 = 2 on CPU, 32 on GPU).")
@click.option("--videos-in-flight", type=int, default=default("videos_in_flight"),
              help="Videos held in memory at once; each is written and released when done "
                   "(0 = the batch size). The frames do not depend on it.")
@click.option("--seed", type=int, default=default("seed"), help="Same seed, same videos (whatever the batch size).")
@click.option("--precision", default=default("precision"),
              help=f"{', '.join(PRECISIONS)}: the network's arithmetic (autocast; the sampler stays fp32, "
                   "the oracle is always fp32). auto = bf16 on CUDA; on a CPU bf16 only with native bf16 "
                   "matmul that measures faster, else fp32.")
@click.option("--device", default=default("device"), help="cpu, cuda, cuda:N; auto = CUDA when available.")
@click.option("--out", type=OutputPath(folder=True), default="samples", help="Output folder.")
@click.option("--obs", default=None,
              help="Conditioning: a video file (.mp4/.gif/.npy) or a dataset NAME[:split[:index]]. "
                   "[default: the test split of the checkpoint's dataset; the oracle draws its own]")
@click.option("--data-dir", default=None, help="Dataset folder. [default: $FDM_DATA_DIR/NAME or datasets/NAME]")
@click.option("--format", "formats", default=",".join(default("formats")), callback=_formats,
              help="Comma-separated outputs: mp4, gif, npz, png.")
@click.option("--save-raw", is_flag=True, help="Also store unclipped float frames (`raw`) in the npz.")
@click.option("--fps", type=int, default=default("fps"), help="Frames per second of mp4/gif outputs.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out (same settings); "
                                            "a run there already complete is left as it is.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sample(model, out, resume, quiet, **options):
    """Sample long videos from MODEL: a checkpoint (.safetensors or .pt) or an analytic oracle
    spec such as `oracle:periodic:lengthscale=4,period=24,weight=0.8` (covariance ou, se or
    periodic; keys lengthscale, period, weight, scale, size, channels; its frames are 8 x 8 with 1
    channel unless size= and channels= say otherwise).

    \b
    Writes OUT/video_NNNN.{mp4,npz,png,gif} per video as soon as it is done, and OUT/plan.json
    (jobs, NFE, rounds, wall time). Memory holds --videos-in-flight videos, whatever
    --num-videos. The state is journaled after every round: after an interruption, run the same
    command with --resume. An OUT that holds another run is refused. Under torchrun the videos
    are split over the ranks.

    \b
    Examples: fdm sample ckpt.pt --scheme hierarchy-2 --n-obs 36
              fdm sample diffusion-100000.pt --config video_diffusion_models.yaml --n-obs 0 --length 16
    """
    from fdm_engine.sample_run import Interrupted, SampleConfig, Shard, run_sampling

    cfg = SampleConfig(model=model, **options)
    shard = Shard.from_env()
    try:
        summary = run_sampling(cfg, Path(out), resume=resume, shard=shard, progress=not quiet and shard.rank == 0)
    except Interrupted as e:  # Ctrl-C: what was kept, and how to go on (as `fdm train` says)
        if shard.rank == 0:
            click.echo(e.note, err=True)
        sys.exit(130)
    if summary.get("already_complete"):
        if shard.rank == 0:
            click.echo(f"nothing to resume: the run in {out} is already complete ({count(cfg.num_videos, 'video')}, "
                       f"plan.json)")
        return
    if shard.rank == 0:
        # a resumed run's counts are the whole run's, its time only this session's
        click.echo(f"wrote {count(cfg.num_videos, 'video')} to {out}: {count(summary['nfe'], 'network evaluation')} "
                   f"in {count(summary['rounds'], 'round')}, {summary['wall_s']:.1f} s"
                   + (" this session" if resume else ""))
