"""`fdm schemes`: list, plan, show and measure sampling schemes."""

from __future__ import annotations

import json
import shutil
import sys

import click

from cli.paths import OutputPath
from fdm_engine.errors import FdmError
from sampling_schemes import Plan, job_source
from sampling_schemes.registry import SCHEMES

DESCRIPTIONS = {
    "autoreg": "observe the last K-S frames, generate the next S",
    "long-range": "observe (K-S)//2 recent frames plus the latest given frames, generate the next S",
    "hierarchy-N": "coarse-to-fine over N levels (FDM paper); sequential",
    "hierarchy-N-parallel": "hierarchy whose level-l jobs observe only levels < l: one round per level",
    "adaptive-autoreg": "autoreg's latent frames, observed frames picked per video (farthest point)",
    "adaptive-hierarchy-N": "hierarchy-N's latent frames, observed frames picked per video",
    "df-pyramid": "Diffusion Forcing: chunks of S, later frames --uncertainty-scale levels noisier",
    "df-trapezoid": "Diffusion Forcing: chunks of S, both ends of a chunk lead",
    "df-autoregressive": "Diffusion Forcing: one frame at a time within each chunk",
    "fifo": "FIFO-Diffusion: a diagonal queue, one clean frame out per step (--partitions, --lookahead)",
    "ar-step": "SkyReels-V2: blocks of --block-size start --ar-step calls apart",
}


def level_flags(f):
    """The per-frame schemes' settings (docs/perframe.md); other schemes ignore them."""
    f = click.option("--ar-step", type=int, default=1, show_default=True,
                     help="ar-step: calls between the starts of consecutive blocks (0: together).")(f)
    f = click.option("--block-size", type=int, default=1, show_default=True,
                     help="ar-step: frames that start together.")(f)
    f = click.option("--lookahead", is_flag=True, help="fifo: each call also sees the cleaner queue frames "
                                                       "before its own (twice the calls).")(f)
    f = click.option("--partitions", type=int, default=0, show_default=True,
                     help="fifo: calls per diagonal step (0: the fewest with <= K frames each).")(f)
    return click.option("--uncertainty-scale", type=float, default=1.0, show_default=True,
                        help="df-pyramid/df-trapezoid: levels between neighbouring frames of a chunk.")(f)


def options_of(steps, uncertainty_scale, partitions, lookahead, block_size, ar_step):
    from sampling_schemes.levels import LevelOptions

    return LevelOptions(steps, uncertainty_scale, partitions, lookahead, block_size, ar_step)


def plan_options(f):
    """The options every planning sub-command shares (they map onto plan()'s arguments)."""
    f = click.option("--step-size", type=int, default=None, help="S: latent frames per job [default: K//2].")(f)
    f = click.option("--max-frames", type=int, default=20, show_default=True,
                     help="K: frames the model sees at once.")(f)
    f = click.option("--n-obs", type=int, default=0, show_default=True,
                     help="Given frames 0..n-1 (0: unconditional start, since planning needs no video; "
                          "`fdm sample` defaults to FDM's 36 given frames).")(f)
    f = click.option("--length", type=int, required=True, help="T: frames in the video.")(f)
    return click.argument("scheme")(f)


def make_plan(scheme: str, length: int, n_obs: int, max_frames: int, step_size: int | None, options=None) -> Plan:
    """The static plan, or for an adaptive scheme a preview with time as the embedding."""
    source = job_source(scheme, length, n_obs, max_frames, step_size, options=options)
    if source.fixed_plan is None:
        click.echo(f"note: {scheme} picks observed frames from the video at run time; "
                   "this preview uses the frame index as the embedding", err=True)
    return source.preview()


@click.group()
def schemes():
    """Sampling schemes: which frames each job generates and which it observes."""


@schemes.command("list")
def list_schemes():
    """List the known schemes (N is any number of levels >= 2)."""
    for name in SCHEMES.names():
        click.echo(f"{name:<22} {DESCRIPTIONS.get(name, '(plug-in)')}")


def steps_option(f):
    """--steps, one default for plan, show and stats: `fdm sample`'s (fdm_engine/sample_config.py)."""
    from fdm_engine.sample_config import option_default

    return click.option("--steps", type=click.IntRange(min=1), default=option_default("steps"), show_default=True,
                        help="Sampler steps per job, as `fdm sample --steps` (NFE = jobs x steps; per-frame "
                             "schemes plan on this many noise levels).")(f)


def history_options(f):
    """History guidance (fdm_engine/history_guidance.py), as `fdm sample`: its calls with history to
    drop evaluate the network twice, so they count 2 in NFE."""
    from fdm_engine.sample_config import option_default

    f = click.option("--history-drop", default=option_default("history_drop"), show_default=True,
                     help="History guidance: what the reduced prediction leaves out (all | keep-nearest:N).")(f)
    return click.option("--history-guidance", type=float, default=option_default("history_guidance"),
                        show_default=True, help="History guidance weight W, as `fdm sample`; 0 = off. A guided "
                                                "call with history to drop counts 2 NFE (full and reduced).")(f)


def guidance_spec(weight: float, drop: str) -> str | None:
    """The --history-drop that NFE counts with (None: unguided), after checking both flags."""
    from fdm_engine.history_guidance import check_weight, parse_drop
    from fdm_engine.sample_config import drop_without_guidance

    check_weight(weight)
    parse_drop(drop)
    if (problem := drop_without_guidance(weight, drop)) is not None:
        raise FdmError(problem)
    return None if weight == 0 else drop


@schemes.command("plan")
@plan_options
@steps_option
@level_flags
@click.option("--json", "as_json", is_flag=True, help='Print {"jobs": [{"observed": [...], "latent": [...]}]}.')
def plan_cmd(scheme, length, n_obs, max_frames, step_size, steps, as_json, **levels):
    """Print the jobs of SCHEME in execution order."""
    p = make_plan(scheme, length, n_obs, max_frames, step_size, options_of(steps, **levels))
    if as_json:
        click.echo(p.to_json())
        return
    for k, job in enumerate(p.jobs):
        moves = "" if job.schedule is None else f"  levels {list(job.start)} -> {list(job.end)} in {job.calls} calls"
        click.echo(f"job {k:>3}  level {job.level}  observe {list(job.observed)}  generate {list(job.latent)}{moves}")


@schemes.command("show")
@plan_options
@click.option("--out", type=OutputPath(suffixes=(".png",)), default=None, help="Also write the picture (PNG) here.")
@click.option("--width", type=int, default=None, help="Terminal columns [default: the terminal's width].")
@steps_option
@level_flags
def show(scheme, length, n_obs, max_frames, step_size, out, width, steps, **levels):
    """Draw SCHEME: a row per job, a column per frame (per-frame schemes: a row per network call,
    each frame shown by its noise level)."""
    p = make_plan(scheme, length, n_obs, max_frames, step_size, options_of(steps, **levels))
    if p.per_frame:
        return _show_levels(p, scheme, steps, out, width)
    from sampling_schemes.render import ASCII_GLYPHS, GLYPHS, render_png, render_text

    glyphs = GLYPHS if _can_print("".join(GLYPHS) + "│") else ASCII_GLYPHS
    click.echo(render_text(p, width or shutil.get_terminal_size().columns, glyphs))
    if out:
        S = step_size or max_frames // 2
        title = f"{scheme}: T={length}, n_obs={n_obs}, K={max_frames}, S={S}: {len(p)} jobs, depth {p.depth}"
        from fdm_engine.files import atomic_write

        with atomic_write(out) as tmp:  # a full disk leaves the previous picture, never half a PNG
            render_png(p, tmp, title)
        click.echo(f"wrote {out}")


def _show_levels(p: Plan, scheme: str, steps: int, out, width) -> None:
    from sampling_schemes.render_levels import render_levels_png, render_levels_text

    click.echo(render_levels_text(p, steps, width or shutil.get_terminal_size().columns))
    if out:
        from fdm_engine.files import atomic_write

        title = f"{scheme}: T={p.length}, n_obs={p.n_obs}, N={steps}: {p.nfe(steps)} NFE, {p.calls(steps)} calls"
        with atomic_write(out) as tmp:
            render_levels_png(p, steps, tmp, title)
        click.echo(f"wrote {out}")


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


@schemes.command("stats")
@plan_options
@steps_option
@level_flags
@history_options
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(scheme, length, n_obs, max_frames, step_size, steps, as_json, history_guidance, history_drop, **levels):
    """Count SCHEME's jobs, network evaluations, rounds (DAG depth), batched calls and widest round."""
    from fdm_engine.history_guidance import plan_nfe

    drop = guidance_spec(history_guidance, history_drop)
    p = make_plan(scheme, length, n_obs, max_frames, step_size, options_of(steps, **levels))
    numbers = {"jobs": len(p), "nfe": plan_nfe(p, steps, drop), "depth": p.depth, "calls": p.calls(steps),
               "widest": p.widest}
    if as_json:
        click.echo(json.dumps(numbers))
        return
    click.echo(f"jobs:   {numbers['jobs']}")
    how = "network calls of single jobs" if p.per_frame else f"{numbers['jobs']} jobs x {steps} steps"
    if drop is not None:
        how = (f"{p.nfe(steps)} {'network calls of single jobs' if p.per_frame else 'job steps'}, "
               f"{numbers['nfe'] - p.nfe(steps)} of them with history to drop count twice under history guidance")
    click.echo(f"NFE:    {numbers['nfe']}  ({how})")
    click.echo(f"depth:  {numbers['depth']}  (rounds run in sequence, jobs within a round batched)")
    click.echo(f"calls:  {numbers['calls']}  (batched network calls: per round, its longest job)")
    click.echo(f"widest: {numbers['widest']}  (jobs in the largest round)")
