"""PNG figures for the evaluation commands (matplotlib, Agg backend, imported on first use)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from fdm_engine.files import atomic_write

    path = Path(path)
    try:
        with atomic_write(path) as tmp:  # a full disk leaves the previous picture, never half a PNG
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _pyplot().close(fig)
    return path


def off_scale_limit(values, decades: float = 3.0) -> float | None:
    """The top of an axis that shows `values` (>= 0): `decades` decades above the median of the
    finite positive ones, when some value lies beyond that (or is inf/nan); None when all fit. One
    runaway row (a diverging guided chain at KL 1e151) would otherwise flatten every other one."""
    import math
    import statistics

    finite = [v for v in values if math.isfinite(v) and v > 0]
    if not finite:
        return None
    top = statistics.median(finite) * 10 ** decades
    return top if any(not (math.isfinite(v) and v <= top) for v in values) else None


def plot_schemes(scores, path, title: str) -> Path:
    """scores: list of SchemeScore at one setting -> KL bars, per-frame variance ratio, error by distance.
    Each scheme has one colour in all three panels, named in the legend beside them. A value more
    than three decades above the median (`off_scale_limit`) is drawn to the axis' edge, hatched
    (bars) and with its value written (bar label, legend entry)."""
    import math

    plt = _pyplot()
    n = len(scores)
    fig, axes = plt.subplots(1, 3, figsize=(19, max(4.5, 0.22 * n + 1.5)))
    colours = plt.get_cmap("tab10" if n <= 10 else "turbo")([i / max(n - 1, 1) if n > 10 else i for i in range(n)])
    names = [s.scheme for s in scores]
    kls = [s.kl for s in scores]
    top = off_scale_limit(kls)
    off = [top is not None and not (math.isfinite(k) and k <= top) for k in kls]
    shown = [top if o else k for k, o in zip(kls, off)]
    bars = axes[0].barh(names, shown, color=colours)
    for bar, o in zip(bars, off):
        bar.set_hatch("//" if o else None)
    axes[0].bar_label(bars, labels=[f"{k:.3g}" + (" (off scale)" if o else "") for k, o in zip(kls, off)],
                      fontsize=6, padding=2)  # the value, where a log axis hides it
    axes[0].invert_yaxis()
    axes[0].tick_params(axis="y", labelsize=7 if n > 12 else 9)
    axes[0].set_xlabel("KL(scheme || true), nats per pixel")
    finite = [k for k in shown if math.isfinite(k)] or [1e-12]  # (no limit when none is finite)
    if all(0 < k for k in finite) and max(finite) > 100 * min(finite):  # e.g. an unstable guided chain
        axes[0].set_xscale("log")
        axes[0].set_xlim(min(finite) / 3, max(finite) * 30)  # room for the labels
    else:
        axes[0].set_xlim(0, max(max(finite), 1e-12) * 1.35)
    peaks = [max(s.variance_ratio) for s in scores]
    errors = [max(abs(e) for e in s.cov_error) for s in scores]
    v_top, e_top = off_scale_limit(peaks), off_scale_limit(errors)
    for s, c, peak, error in zip(scores, colours, peaks, errors):
        beyond = any(lim is not None and not (math.isfinite(x) and x <= lim)
                     for x, lim in ((peak, v_top), (error, e_top)))
        axes[1].plot(range(s.length), s.variance_ratio, lw=1, label=s.scheme + (" (off scale)" if beyond else ""),
                     color=c)
        axes[2].plot(range(s.length), s.cov_error, lw=1, color=c)
    axes[1].axhline(1, color="k", lw=0.5)
    axes[1].axvspan(0, scores[0].n_obs - 0.5, color="0.9")
    axes[1].set(xlabel="frame index", ylabel="variance ratio (scheme / true)")
    axes[2].axhline(0, color="k", lw=0.5)
    axes[2].set(xlabel="frame distance", ylabel="mean covariance error / prior variance")
    # the axes span the curves on the scale; the off-scale ones leave it at the edge
    v_max = max(p for p in peaks if v_top is None or (math.isfinite(p) and p <= v_top))
    e_max = max(e for e in errors if e_top is None or (math.isfinite(e) and e <= e_top))
    if v_max > 100:  # a growing chain: see every curve
        axes[1].set_yscale("log")
        axes[2].set_yscale("symlog", linthresh=0.1)
    if v_top is not None:
        low = min(min(s.variance_ratio) for s, p in zip(scores, peaks) if math.isfinite(p) and p <= v_top)
        axes[1].set_ylim(low / 2, v_max * 3) if v_max > 100 else axes[1].set_ylim(min(0, low), v_max * 1.1)
    if e_top is not None:
        axes[2].set_ylim(-e_max * 1.1, e_max * 1.1)
    axes[2].legend(*axes[1].get_legend_handles_labels(), fontsize=6 if n > 12 else 7, loc="upper left",
                   bbox_to_anchor=(1.02, 1), borderaxespad=0, title="both line panels", title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.86, 1))  # the legend lies right of the last panel
    return _save(fig, path)


def plot_samplers(scores, path, title: str, floor: float = 1e-8) -> Path:
    """scores: list of SamplerScore -> KL against network evaluations (NFE: a Heun step costs two),
    a panel per sampler, a line per spacing."""
    plt = _pyplot()
    samplers = list(dict.fromkeys(s.sampler for s in scores))
    fig, axes = plt.subplots(1, len(samplers), figsize=(4.2 * len(samplers), 4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], samplers):
        mine = [s for s in scores if s.sampler == name]
        for spacing in dict.fromkeys(s.spacing for s in mine):
            rows = sorted((s.steps_run, max(s.kl, floor)) for s in mine if s.spacing == spacing)
            ax.plot(*zip(*rows), marker="o", ms=3, label=spacing)
        ax.set(xscale="log", yscale="log", title=name, xlabel="network evaluations per job")
        ax.grid(True, which="both", lw=0.3)
    axes[0][0].set_ylabel("KL to the exact conditional, nats")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_optimisation(history: list[float], path, title: str) -> Path:
    """Best exact KL so far against KL evaluations of an `optimize-steps` run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(history) + 1), history, lw=1.2)
    ax.axhline(history[0], ls="--", lw=0.8, color="grey", label=f"logsnr spacing: {history[0]:.3g}")
    ax.set(yscale="log", xlabel="KL evaluations (Powell)", ylabel="exact KL, nats", title=title)
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_video_report(report: dict, path) -> Path:
    """fdm eval video's report -> PSNR and SSIM per frame index, revisit PSNR against gap."""
    plt = _pyplot()
    revisit = report.get("revisit")
    fig, axes = plt.subplots(1, 3 if revisit else 2, figsize=(14 if revisit else 10, 4))
    n_obs = report["n_obs"]
    for ax, name, unit in ((axes[0], "psnr", "PSNR, dB"), (axes[1], "ssim", "SSIM")):
        per_frame = report[name]["per_frame"]
        ax.plot(range(n_obs, len(per_frame)), per_frame[n_obs:], lw=1)
        ax.set(xlabel="frame index", ylabel=unit, title=f"{name.upper()}: mean {report[name]['mean']:.3f}")
    if revisit:
        gaps = [g["gap"] for g in revisit["by_gap"]]
        axes[2].plot(gaps, [g["psnr"] for g in revisit["by_gap"]], marker="o")
        axes[2].set(xlabel="frames between visits", ylabel="PSNR between visits, dB",
                    title=f"revisits: {revisit['pairs']} pairs, mean {revisit['psnr']:.2f} dB")
    fig.suptitle(f"{report['samples_dir']} vs {report['truth']} ({report['videos']} videos)")
    fig.tight_layout()
    return _save(fig, path)


def plot_demo_consistency(schemes: dict, n_obs: int, path) -> Path:
    """`fdm eval demo`'s schemes -> one panel per consistency curve (score, colour, count, size)
    against frame index (the curves start at frame n_obs), a line per scheme (real videos and no
    motion dashed)."""
    plt = _pyplot()
    curves = list(next(iter(schemes.values()))["consistency"])
    curves = ["score"] + [c for c in curves if c != "score"]
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False, sharey=True)
    for ax, curve in zip(axes[0], curves):
        for name, e in schemes.items():
            y = e["consistency"][curve]
            x = range(n_obs, n_obs + len(y))
            ax.plot(x, y, lw=1, ls="--" if name in ("real", "no-motion") else "-", label=name)
        ax.axvspan(0, n_obs - 0.5, color="0.9")
        ax.set(xlabel="frame index", title=curve, ylim=(-0.02, 1.05))
    axes[0][0].set_ylabel("consistency with the true state")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_demo_drift(schemes: dict, frames: int, path) -> Path:
    """A panel per drift measure: its per-frame mean over videos, a line per scheme; the first and
    last `frames` frames shaded."""
    plt = _pyplot()
    measures = list(next(iter(schemes.values()))["drift"]["per_frame"])
    fig, axes = plt.subplots(1, len(measures), figsize=(4.5 * len(measures), 3.8), squeeze=False)
    for ax, m in zip(axes[0], measures):
        for name, e in schemes.items():
            y = e["drift"]["per_frame"][m]
            r = e["drift"]["summary"][m]["ratio"]
            ax.plot(range(len(y)), y, lw=1, ls="--" if name in ("real", "no-motion") else "-",
                    label=f"{name} ({r:.2f})" if r is not None else name)
        n = len(y)
        ax.axvspan(0, frames, color="0.93")
        ax.axvspan(n - frames, n, color="0.93")
        ax.set(xlabel="frame index", title=f"{m} (last/first {frames})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_demo_psnr(schemes: dict, n_obs: int, path) -> Path:
    """PSNR and SSIM of the first predicted frames against the truth, a line per scheme."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, m in zip(axes, ("psnr", "ssim")):
        for name, e in schemes.items():
            y = e[m]["per_frame"]
            ax.plot(range(n_obs, n_obs + len(y)), y, marker="o", ms=2, lw=1, label=name)
        ax.set(xlabel="frame index", ylabel=m.upper())
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
