"""bf16 vs fp32 on a trained model: sampled-frame differences and the network's speed ratio.

    python benchmarks/bench_precision.py [--quick] [--json] [--checkpoint CKPT]

Model: the shipped demo checkpoint (fdm_engine/assets/demo-balls.safetensors, the tiny FDM UNet
trained on 32 px bouncing balls), unless --checkpoint names another.

- frames: `fdm sample` runs (the real pipeline) with --precision fp32 and bf16, same seed and
  settings, conditioned on the checkpoint's test videos; max and mean |bf16 - fp32| of the sampled
  frames in model space ([-1, 1]), their relative RMS difference, and the largest uint8 pixel
  difference. Only the network is autocast; the sampler computes in fp32 in both runs.
- speed: seconds per network forward in each precision (batch 1 and 4, K frames, random inputs),
  alternating the two in rounds so both see the same states of a shared machine; the best of the
  rounds is reported (interference only adds time), and bf16 / fp32.
- the CPU's native bf16 support (AVX512-BF16 / AMX-BF16) and what `--precision auto` resolves to.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fdm_engine.cpu_memory import retain_freed_memory  # noqa: E402

DEMO = ROOT / "fdm_engine" / "assets" / "demo-balls.safetensors"


def frames_diff(ckpt: str, quick: bool) -> dict:
    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling

    from fdm_engine.datasets.procedural.make import make_dataset
    from fdm_engine.denoisers import load_denoiser

    settings = dict(model=ckpt, scheme="autoreg", n_obs=10, length=30 if quick else 100, steps=10,
                    num_videos=2 if quick else 4, batch_size=2, formats=("npz",), save_raw=True, seed=0)
    out, walls = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        # The given frames: test videos of the generator the checkpoint was trained on, made here.
        data = load_denoiser(ckpt).extra["data"]
        settings["data_dir"] = str(make_dataset(data["name"], Path(tmp) / data["name"], num_videos=1,
                                                num_test=settings["num_videos"], length=settings["n_obs"],
                                                size=data["size"], seed=data["seed"], params=data["config"]))
        for precision in ("fp32", "bf16"):
            folder = Path(tmp) / precision
            s = run_sampling(SampleConfig(**settings, precision=precision), folder, progress=False)
            walls[precision] = s["wall_s"], s["network_s"]
            out[precision] = [np.load(folder / f"video_{v:04d}.npz") for v in range(settings["num_videos"])]
        n_obs = settings["n_obs"]
        raw = {p: np.stack([z["raw"][n_obs:] for z in out[p]]) for p in out}
        pix = {p: np.stack([z["frames"][n_obs:] for z in out[p]]).astype(np.int16) for p in out}
    d = np.abs(raw["bf16"] - raw["fp32"])
    return {"scheme": settings["scheme"], "videos": settings["num_videos"], "length": settings["length"],
            "n_obs": n_obs, "steps": settings["steps"], "sampler": SampleConfig.sampler,
            "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "rel_rms_diff": float(np.sqrt((d**2).mean() / (raw["fp32"] ** 2).mean())),
            "max_uint8_diff": int(np.abs(pix["bf16"] - pix["fp32"]).max()),
            "wall_s_fp32": walls["fp32"][0], "wall_s_bf16": walls["bf16"][0],
            "network_s_fp32": walls["fp32"][1], "network_s_bf16": walls["bf16"][1]}


def speed(ckpt: str, quick: bool) -> list[dict]:
    from fdm_engine.denoisers import load_denoiser
    from fdm_engine.precision import with_precision

    model = load_denoiser(ckpt).model.eval()
    k, c, s = model.max_frames, model.channels, model.image_size
    nets = {"fp32": model, "bf16": with_precision(model, "bf16", torch.device("cpu"))}
    rows = []
    for batch in (1, 4):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, k, c, s, s, generator=g)
        idx = torch.arange(k).expand(batch, k)
        observed = torch.zeros(batch, k, dtype=torch.bool)
        observed[:, : k // 2] = True
        levels = torch.where(observed, 0.0, 500.0)
        times = {p: [] for p in nets}
        with torch.no_grad():
            for net in nets.values():  # warm-up
                net(x, idx, levels, observed)
            for _ in range(3 if quick else 8):
                for p, net in nets.items():
                    start = time.perf_counter()
                    net(x, idx, levels, observed)
                    times[p].append(time.perf_counter() - start)
        best = {p: min(t) for p, t in times.items()}
        rows.append({"batch": batch, "frames": k, "s_fp32": best["fp32"], "s_bf16": best["bf16"],
                     "bf16_over_fp32": best["bf16"] / best["fp32"]})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 videos of 30 frames, 3 timing rounds")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--checkpoint", default=str(DEMO))
    args = ap.parse_args(argv)
    retain_freed_memory()
    from fdm_engine.precision import native_cpu_bf16, resolve_precision

    report = {"checkpoint": Path(args.checkpoint).name, "threads": torch.get_num_threads(),
              "native_cpu_bf16": native_cpu_bf16(),
              "auto_on_this_cpu": resolve_precision("auto", torch.device("cpu")),
              "frames": frames_diff(args.checkpoint, args.quick), "speed": speed(args.checkpoint, args.quick)}
    if args.json:
        print(json.dumps(report))
        return
    f = report["frames"]
    print(f"native bf16: {report['native_cpu_bf16']}, auto -> {report['auto_on_this_cpu']}")
    print(f"frames bf16 vs fp32: max |d| {f['max_abs_diff']:.4g}, mean |d| {f['mean_abs_diff']:.4g}, "
          f"rel RMS {f['rel_rms_diff']:.4g}, max uint8 {f['max_uint8_diff']}")
    for r in report["speed"]:
        print(f"batch {r['batch']}: fp32 {r['s_fp32'] * 1e3:.1f} ms, bf16 {r['s_bf16'] * 1e3:.1f} ms, "
              f"bf16/fp32 {r['bf16_over_fp32']:.2f}")


if __name__ == "__main__":
    main()
