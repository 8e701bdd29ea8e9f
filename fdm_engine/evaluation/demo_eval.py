"""`fdm eval demo`: the README's quality figures for a demo checkpoint, from one command.

Given a checkpoint trained on a procedural dataset (`fdm demo export`) and that dataset's folder:

1. samples the first `num_videos` test videos, `n_obs` frames given, with each scheme at equal
   network evaluations (NFE): NFE = jobs x steps (one network call per job and sampler step), so
   scheme i runs steps_i = round(steps x jobs_0 / jobs_i), jobs_0 the first scheme's job count;
   the NFE each scheme really ran is reported (they differ by less than one job's worth of steps);
2. PSNR/SSIM per frame index against the truth (`evaluate_samples`, as `fdm eval video`);
3. long-range consistency against the generator's state (consistency.py) per frame index, for
   every scheme, the real videos (ceiling) and "repeat the last given frame" (no motion), on the
   generated frames only (frames n_obs..): the measure looks at a window of frames, which must not
   reach into the given frames, or the first generated frames would score the truth's consistency;
4. drift (drift.py): each measure's mean over the first and last `drift_frames` frames;
5. FVD (I3D logits) on 16-frame windows at `fvd_windows` evenly spaced starts in the generated
   part of each video: each scheme vs the held-out real videos' same windows, beside the floor
   (real test vs the first `num_train` training videos, same starts) and no motion;

and writes OUT/eval_demo.json, OUT/eval_demo.md (tables for the README), OUT/consistency.png,
OUT/drift.png and OUT/psnr_ssim.png. Samples stay in OUT/samples/SCHEME (`fdm sample` folders).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from fdm_engine.config import Config
from fdm_engine.errors import FdmError

SCHEMES = ("autoreg", "long-range", "hierarchy-2", "hierarchy-2-parallel")
FVD_FRAMES = 16


@dataclasses.dataclass(frozen=True)
class DemoEvalConfig(Config):
    checkpoint: str = ""
    data_dir: str | None = None  # default: as `fdm sample` finds the checkpoint's data (conditioning.py)
    schemes: tuple[str, ...] = SCHEMES
    num_videos: int = 8
    length: int = 300
    n_obs: int = 10
    steps: int = 10  # for the first scheme; the others get equal NFE
    sampler: str = "dpm++2m"
    psnr_frames: int = 20  # first predicted frames in the PSNR/SSIM table
    drift_frames: int = 100
    fvd: bool = True
    fvd_windows: int = 4  # per video
    num_train: int = 0  # training videos for the FVD floor (0: as many as num_videos)
    i3d: str | None = None  # default: $FDM_HOME/i3d.safetensors
    seed: int = 0


def equal_nfe_steps(schemes, length: int, n_obs: int, max_frames: int, steps: int) -> dict[str, dict]:
    """{scheme: {jobs, steps, nfe}} with steps chosen so every scheme's NFE is nearest to the first's
    (as `fdm eval schemes --nfe` chooses them: a tie takes the fewer steps)."""
    from fdm_engine.evaluation.scheme_score import steps_for_nfe
    from sampling_schemes import plan

    jobs = {s: len(plan(s, length, n_obs, max_frames).jobs) for s in schemes}
    target = steps * jobs[schemes[0]]
    out = {}
    for s, j in jobs.items():
        k, nfe = steps_for_nfe(target, lambda n, j=j: j * n, guess=steps)
        out[s] = {"jobs": j, "steps": k, "nfe": nfe}
    return out


def _truth(cfg: DemoEvalConfig, loaded, name: str, split: str, n: int, length: int):
    """The first n videos of a split, found as the sampling's conditioning finds them (--data-dir,
    the lookup, the checkpoint's training folder, else generated again): -> (videos, states, root)."""
    from fdm_engine.conditioning import open_conditioning_data

    model = loaded.model
    ds = open_conditioning_data(name, split, cfg.data_dir, loaded.extra, image_size=model.image_size,
                                channels=model.channels, length=length)
    if len(ds) < n:
        raise FdmError(f"{ds.root}: split {split!r} has {len(ds)} videos, fewer than the {n} asked for")
    if ds.num_frames(0) < length:
        raise FdmError(f"{ds.root}: videos have {ds.num_frames(0)} frames, fewer than --length {length}")
    # each video and its state together: a generated split keeps only its last videos made
    pairs = [(ds.read(i, length)[:length], ds.state(i)) for i in range(n)]
    return [v for v, _ in pairs], [s for _, s in pairs], ds.root


def _consistency_curves(name: str, videos, states, n_obs: int) -> dict[str, list[float]]:
    """Curves over frames n_obs.. (index i is frame n_obs + i), mean over videos."""
    from fdm_engine.evaluation.consistency import consistency

    per = [consistency(name, v[n_obs:], s) for v, s in zip(videos, states)]
    return {k: np.mean([p[k] for p in per], axis=0).tolist() for k in per[0]}


def _drift(videos, frames: int) -> dict:
    from fdm_engine.evaluation.drift import drift_summary, drift_values

    per = [drift_values(v) for v in videos]
    values = {k: np.stack([p[k] for p in per]) for k in per[0]}
    return {"summary": drift_summary(values, frames, frames),
            "per_frame": {k: v.mean(0).tolist() for k, v in values.items()}}


def _window_starts(length: int, n_obs: int, windows: int) -> list[int]:
    last = length - FVD_FRAMES
    if last < n_obs:
        raise FdmError(f"FVD needs {FVD_FRAMES} generated frames (--length {length}, --n-obs {n_obs})")
    return sorted({int(round(x)) for x in np.linspace(n_obs, last, windows)})


def _window_set(name: str, videos, starts):
    from fdm_engine.evaluation.video_sets import VideoSet

    clips = [v[s:s + FVD_FRAMES] for v in videos for s in starts]
    return VideoSet(name, [FVD_FRAMES] * len(clips), clips[0].shape[1:], lambda i, n: clips[i])


def _fvd(model, sets: dict, reference: str, progress) -> dict:
    """{name: videos} -> FVD of each set against `reference`'s (features computed once per set)."""
    from fdm_engine.evaluation.fvd import frechet_distance, gaussian_fit, video_features

    fits = {name: gaussian_fit(video_features(s, model, FVD_FRAMES)) for name, s in progress(sets.items())}
    return {name: frechet_distance(fits[reference], fit) for name, fit in fits.items() if name != reference}


def run_demo_eval(cfg: DemoEvalConfig, out, progress: bool = True) -> dict:
    """Everything listed in the module docstring; returns the JSON-ready report."""
    from tqdm import tqdm

    from fdm_engine.checkpoint import load_checkpoint
    from fdm_engine.evaluation.consistency import CONSISTENCY
    from fdm_engine.evaluation.video_eval import evaluate_samples, read_samples
    from fdm_engine.sample_run import SampleConfig, run_sampling

    ckpt = Path(cfg.checkpoint)
    if not ckpt.is_file():
        raise FdmError(f"{ckpt}: no such checkpoint")
    loaded = load_checkpoint(ckpt)
    extra = loaded.extra
    name = (extra.get("data") or {}).get("name") or extra.get("dataset")
    if name not in CONSISTENCY:
        raise FdmError(f"{ckpt}: trained on {name!r}, which has no consistency measure "
                       f"(known: {', '.join(CONSISTENCY.names())})")
    if cfg.fvd:  # its inputs before the sampling (hours): missing weights or too short videos fail now
        from fdm_engine.evaluation.i3d import load_i3d

        starts = _window_starts(cfg.length, cfg.n_obs, cfg.fvd_windows)
        try:
            i3d = load_i3d(cfg.i3d)
        except FdmError as e:
            raise FdmError(f"{e}; or pass --no-fvd to evaluate without FVD") from None
    k = loaded.model.max_frames
    budget = equal_nfe_steps(list(cfg.schemes), cfg.length, cfg.n_obs, k, cfg.steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real, states, data_dir = _truth(cfg, loaded, name, "test", cfg.num_videos, cfg.length)
    report = {"config": cfg.to_dict(), "dataset": name, "data_dir": str(data_dir), "max_frames": k,
              "checkpoint_step": extra.get("step"), "nfe": budget, "schemes": {}}
    still = [np.repeat(v[cfg.n_obs - 1:cfg.n_obs], cfg.length, axis=0) for v in real]
    still = [np.concatenate([v[:cfg.n_obs], s[cfg.n_obs:]]) for v, s in zip(real, still)]
    generated = {}
    for scheme in cfg.schemes:
        folder = out / "samples" / scheme
        sc = SampleConfig(model=str(ckpt), scheme=scheme, n_obs=cfg.n_obs, length=cfg.length,
                          steps=budget[scheme]["steps"], sampler=cfg.sampler, num_videos=cfg.num_videos,
                          obs=f"{name}:test", data_dir=cfg.data_dir, seed=cfg.seed, formats=("npz",))
        start = time.perf_counter()
        summary = run_sampling(sc, folder, progress=progress)
        video = evaluate_samples(folder, n_obs=cfg.n_obs)
        generated[scheme] = list(read_samples(folder)[1])
        report["schemes"][scheme] = {
            "nfe_per_video": summary["nfe"] // cfg.num_videos, "wall_s": time.perf_counter() - start,
            **{m: {"per_frame": video[m]["per_frame"][cfg.n_obs:cfg.n_obs + cfg.psnr_frames],
                   "mean": video[m]["mean"]} for m in ("psnr", "ssim")}}
    rows = {**generated, "real": real, "no-motion": still}
    for key, videos in tqdm(rows.items(), desc="consistency + drift", disable=not progress):
        entry = report["schemes"].setdefault(key, {})
        entry["consistency"] = _consistency_curves(name, videos, states, cfg.n_obs)
        entry["drift"] = _drift(videos, cfg.drift_frames)
    if cfg.fvd:
        train, _, _ = _truth(cfg, loaded, name, "train", cfg.num_train or cfg.num_videos, cfg.length)
        sets = {"real": _window_set("real", real, starts), "train (floor)": _window_set("train", train, starts),
                "no-motion": _window_set("no-motion", still, starts),
                **{s: _window_set(s, v, starts) for s, v in generated.items()}}
        report["fvd"] = {"starts": starts, "windows": {n: len(s) for n, s in sets.items()},
                         "vs_real": _fvd(i3d, sets, "real", lambda it: tqdm(list(it), desc="I3D",
                                                                             disable=not progress))}
    write_outputs(report, out)
    return report


def consistency_tail(entry: dict, frames: int) -> tuple[float, float]:
    """(mean score over the generated frames, mean over the last `frames`)."""
    score = np.asarray(entry["consistency"]["score"])
    return float(score.mean()), float(score[-frames:].mean())


def markdown(report: dict) -> str:
    cfg = report["config"]
    n_obs, tail = cfg["n_obs"], cfg["drift_frames"]
    lines = [f"{cfg['num_videos']} test videos x {cfg['length']} frames, {n_obs} given, K={report['max_frames']}, "
             f"{cfg['sampler']}; checkpoint step {report['checkpoint_step']}.", "",
             "| scheme | steps | NFE / video | PSNR (first " + f"{cfg['psnr_frames']}) | SSIM | FVD vs real | "
             f"consistency (generated) | consistency (last {tail}) | "
             + " | ".join(f"{m} tail/head" for m in next(iter(report["schemes"].values()))["drift"]["summary"])
             + " |", "|" + " --- |" * (9 + len(next(iter(report["schemes"].values()))["drift"]["summary"]) - 1)]
    fvd = (report.get("fvd") or {}).get("vs_real", {})
    for key, e in report["schemes"].items():
        nfe = report["nfe"].get(key, {})
        psnr = f"{np.mean(e['psnr']['per_frame']):.2f}" if "psnr" in e else "-"
        ssim = f"{np.mean(e['ssim']['per_frame']):.3f}" if "ssim" in e else "-"
        f = fvd.get(key)
        gen, last = consistency_tail(e, tail)
        drift = " | ".join(f"{d['ratio']:.3f}" if d["ratio"] is not None else "-" for d in e["drift"]["summary"].values())
        lines.append(f"| {key} | {nfe.get('steps', '-')} | {e.get('nfe_per_video', '-')} | {psnr} | {ssim} | "
                     f"{'-' if f is None else f'{f:.1f}'} | {gen:.3f} | {last:.3f} | {drift} |")
    if "train (floor)" in fvd:
        lines += ["", f"FVD floor (held-out real vs training videos): {fvd['train (floor)']:.1f}; "
                  f"{sum(report['fvd']['windows'].values()) // len(report['fvd']['windows'])} windows of "
                  f"{FVD_FRAMES} frames per set, starts {report['fvd']['starts']}."]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, out: Path) -> None:
    from fdm_engine.evaluation.plots import plot_demo_consistency, plot_demo_drift, plot_demo_psnr

    (out / "eval_demo.json").write_text(json.dumps(report, indent=1))
    (out / "eval_demo.md").write_text(markdown(report))
    n_obs = report["config"]["n_obs"]
    plot_demo_consistency(report["schemes"], n_obs, out / "consistency.png")
    plot_demo_drift(report["schemes"], report["config"]["drift_frames"], out / "drift.png")
    plot_demo_psnr({k: v for k, v in report["schemes"].items() if "psnr" in v}, n_obs, out / "psnr_ssim.png")
