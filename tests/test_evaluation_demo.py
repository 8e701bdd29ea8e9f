"""Demo-model evaluation: bouncing-balls consistency from the generator's state, drift measures,
equal-NFE step choice, and a smoke run of `fdm eval demo`."""

import json

import numpy as np
import pytest

from cli_helpers import run_fdm
from fdm_engine.datasets.procedural.balls import PALETTE, BouncingBalls, render
from fdm_engine.evaluation.consistency import CONSISTENCY, blob_counts, consistency, window_max
from fdm_engine.evaluation.drift import DRIFT, drift_summary, drift_values

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos():
    """Real bouncing-balls videos as the demo data has them: 300 frames of 32 px, 3 balls."""
    return [BouncingBalls().generate(np.random.default_rng([7, v]), 300, 32) for v in range(2)]


def test_blob_counts_match_scipy_labelling():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    masks = rng.random((40, 12, 12)) < np.linspace(0.2, 0.7, 40)[:, None, None]
    for min_area in (1, 3):
        want = []
        for m in masks:
            lab, n = ndimage.label(m)  # 4-connectivity by default
            want.append(int((np.bincount(lab.ravel())[1:] >= min_area).sum()))
        assert blob_counts(masks, min_area).tolist() == want


def test_window_max_by_hand():
    x = np.array([0.0, 3, 1, 0, 0, 5, 0])
    assert window_max(x, 3).tolist() == [3, 3, 3, 1, 5, 5, 5]
    assert window_max(x, 5, rank=2).tolist() == [1, 1, 1, 3, 1, 0, 0]


def test_real_videos_are_consistent(videos):
    """The real videos score 1 nearly everywhere (occlusion longer than the window is the rest)."""
    assert "bouncing-balls" in CONSISTENCY
    for frames, state in videos:
        c = consistency("bouncing-balls", frames, state)
        assert set(c) == {"colour", "count", "size", "score"}
        assert all(v.shape == (300,) and v.min() >= 0 and v.max() <= 1 for v in c.values())
        assert c["score"].mean() >= 0.97 and np.median(c["score"]) == 1


def _edit(frames, state, t0, colours=None, keep=None):
    """The video with its balls recoloured / some erased from frame t0 on (re-rendered from the state)."""
    colours = state["colours"] if colours is None else colours
    keep = np.arange(len(state["radii"])) if keep is None else keep
    tail = render(state["centres"][t0:, keep], state["radii"][keep], colours[keep], frames.shape[1])
    return np.concatenate([frames[:t0], tail])


def test_changed_colour_and_erased_ball_lower_the_score(videos):
    frames, state = videos[0]
    t0, settle = 150, 31  # past the window's half width, the edit is all the measure sees
    real = consistency("bouncing-balls", frames, state)
    used = {tuple(c) for c in state["colours"]}
    new = next(p for p in PALETTE if tuple(p) not in used)
    recoloured = state["colours"].copy()
    recoloured[0] = new
    c = consistency("bouncing-balls", _edit(frames, state, t0, colours=recoloured), state)
    after = slice(t0 + settle, None)
    assert np.array_equal(c["score"][:t0 - settle], real["score"][:t0 - settle])  # before: untouched
    assert c["colour"][after].max() <= 0.5 + 1e-9  # 2 of the 4 colours seen are right
    assert c["size"][after].max() <= 2 / 3 + 1e-9  # the true red... ball is gone
    assert c["score"][after].mean() < real["score"][after].mean() - 0.2
    e = consistency("bouncing-balls", _edit(frames, state, t0, keep=np.array([1, 2])), state)
    assert e["colour"][after].max() <= 2 / 3 + 1e-9 and e["count"][after].max() <= 2 / 3 + 1e-9
    assert e["score"][after].mean() < real["score"][after].mean() - 0.2


def _blur(frames):
    x = frames.astype(np.float64)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    out = sum(p[:, i:i + x.shape[1], j:j + x.shape[2]] for i in range(3) for j in range(3)) / 9
    return np.rint(out).astype(np.uint8)


def _noise(frames, sigma=40.0):
    n = np.random.default_rng(0).normal(0, sigma, frames.shape)
    return np.clip(frames + n, 0, 255).astype(np.uint8)


def test_drift_measures_see_blur_and_noise(videos):
    frames = videos[0][0][:50]
    real, blur, noise = (drift_values(f) for f in (frames, _blur(frames), _noise(frames)))
    assert set(real) == set(DRIFT.names()) == {"gradient-energy", "laplacian-var", "palette-fraction"}
    for m in ("gradient-energy", "laplacian-var"):
        assert (blur[m] < 0.7 * real[m]).all() and (noise[m] > real[m]).all()
    assert real["palette-fraction"].min() > 0.85
    assert (blur["palette-fraction"] < real["palette-fraction"]).all()
    assert (noise["palette-fraction"] < 0.75 * real["palette-fraction"]).all()


def test_drift_summary_head_vs_tail(videos):
    frames = videos[0][0]
    steady = drift_summary(drift_values(frames))
    assert all(0.75 < s["ratio"] < 1.33 for s in steady.values())
    sliding = np.concatenate([frames[:200], _blur(frames[200:])])
    assert drift_summary(drift_values(sliding))["gradient-energy"]["ratio"] < 0.7
    # The ratio is tail mean / head mean exactly.
    v = {"x": np.arange(10.0) + 1}
    assert drift_summary(v, 2, 3)["x"] == {"head": 1.5, "tail": 9.0, "ratio": 6.0}


def test_equal_nfe_steps():
    from fdm_engine.evaluation.demo_eval import SCHEMES, equal_nfe_steps

    budget = equal_nfe_steps(list(SCHEMES), 300, 10, 10, 10)
    target = budget[SCHEMES[0]]["nfe"]
    assert budget[SCHEMES[0]]["steps"] == 10
    for b in budget.values():
        assert b["nfe"] == b["jobs"] * b["steps"]
        assert abs(b["nfe"] - target) <= b["jobs"] / 2  # the nearest total that whole steps allow
    # a tie takes the fewer steps, as steps_for_nfe does: 56 NFE over 16 jobs is 3 steps (48), not 4 (64)
    tie = equal_nfe_steps(["autoreg", "hierarchy-2-parallel"], 80, 10, 10, 4)
    assert tie["autoreg"] == {"jobs": 14, "steps": 4, "nfe": 56}
    assert tie["hierarchy-2-parallel"] == {"jobs": 16, "steps": 3, "nfe": 48}


@pytest.mark.parametrize("extra,needle", [(["--quick"], "no I3D weights at"), (["--quick"], "or pass --no-fvd"),
                                          (["--length", "12", "--drift-frames", "4"], "FVD needs 16")])
def test_eval_demo_checks_its_fvd_inputs_before_sampling(tmp_path, capsys, extra, needle):
    """Missing I3D weights or videos too short for FVD fail at once, not after all the sampling."""
    from fdm_engine.demo import DEMO_CHECKPOINT

    out = tmp_path / "eval"
    code, _, err = run_fdm(capsys, "eval", "demo", DEMO_CHECKPOINT, "--i3d", tmp_path / "none.safetensors",
                           "--out", out, "-q", *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists(), "nothing sampled"


@pytest.mark.slow  # ~55 s on the loaded 2-core machine (I3D at 224 px on 7 window sets)
def test_eval_demo_smoke(tmp_path, capsys):
    """`fdm eval demo --quick` with a random tiny FDM and a random small I3D: every output written,
    real videos at the consistency ceiling, NFE equal across schemes."""
    import torch
    from safetensors.torch import save_file

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.evaluation.i3d import FORMAT, I3DConfig, InceptionI3d
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    data = tmp_path / "balls"
    code, _, err = run_fdm(capsys, "data", "make", "bouncing-balls", "--out", data, "--num-videos", "2",
                           "--num-test", "2", "--length", "40", "--size", "16", "-q")
    assert code == 0, err
    torch.manual_seed(0)
    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=8, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=6))
    ckpt = save_checkpoint(tmp_path / "ckpt.safetensors", model, DiffusionConfig(),
                           extra={"dataset": "bouncing-balls", "data_dir": str(data), "step": 1,
                                  "data": {"name": "bouncing-balls"}})
    i3d = InceptionI3d(I3DConfig(width_div=8)).eval()
    save_file(i3d.state_dict(), str(tmp_path / "i3d.safetensors"),
              metadata={"format": FORMAT, "config": i3d.config.to_json()})
    out = tmp_path / "eval"
    code, stdout, err = run_fdm(capsys, "eval", "demo", ckpt, "--quick", "--schemes", "autoreg,hierarchy-2-parallel",
                                "--n-obs", "4", "--i3d", tmp_path / "i3d.safetensors", "--out", out, "-q")
    assert code == 0, err
    for name in ("eval_demo.json", "eval_demo.md", "consistency.png", "drift.png", "psnr_ssim.png"):
        assert (out / name).is_file()
    report = json.loads((out / "eval_demo.json").read_text())
    assert set(report["schemes"]) == {"autoreg", "hierarchy-2-parallel", "real", "no-motion"}
    for s in ("autoreg", "hierarchy-2-parallel"):
        e = report["schemes"][s]
        assert e["nfe_per_video"] == report["nfe"][s]["nfe"]
        assert len(e["psnr"]["per_frame"]) == 20 and len(e["consistency"]["score"]) == 40 - 4  # generated frames only
    fvd = report["fvd"]["vs_real"]
    assert set(fvd) == {"train (floor)", "no-motion", "autoreg", "hierarchy-2-parallel"}
    assert all(v >= 0 for v in fvd.values())
    assert "| autoreg |" in stdout and "FVD floor" in stdout


def test_eval_demo_without_the_data_folder_generates_it_again(tmp_path, capsys, monkeypatch):
    """The checkpoint's training folder is gone: the held-out truth and the conditioning are the
    same videos `fdm data make` wrote, generated again from the recorded manifest."""
    import shutil

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.datasets import open_dataset
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    data = tmp_path / "balls"
    code, _, err = run_fdm(capsys, "data", "make", "bouncing-balls", "--out", data, "--num-videos", "2",
                           "--num-test", "2", "--length", "40", "--size", "16", "--seed", "4", "-q")
    assert code == 0, err
    truth = [open_dataset("bouncing-balls", data, split="test").read(i) for i in range(2)]
    manifest = json.loads((data / "dataset.json").read_text())
    shutil.rmtree(data)
    model = FDMUNet(FDMUNetConfig(image_size=16, channels=3, base_channels=8, channel_mult=(1, 2),
                                  attention_resolutions=(8,), num_heads=2, max_frames=6))
    ckpt = save_checkpoint(tmp_path / "ckpt.safetensors", model, DiffusionConfig(),
                           extra={"dataset": "bouncing-balls", "data_dir": str(data), "data": manifest})
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval"
    code, _, err = run_fdm(capsys, "eval", "demo", ckpt, "--quick", "--no-fvd", "--schemes", "autoreg",
                           "--n-obs", "4", "--out", out, "-q")
    assert code == 0, err
    report = json.loads((out / "eval_demo.json").read_text())
    assert report["data_dir"].startswith("<bouncing-balls generated")
    for i in range(2):
        given = np.load(out / "samples" / "autoreg" / f"video_{i:04d}.npz")["frames"][:4]
        assert np.array_equal(given, truth[i][:4])
    assert len(report["schemes"]["real"]["consistency"]["score"]) == 40 - 4  # scored with the generated states
