"""Bad input to every command: exit code 2, one line on stderr naming the flag, value or file, no
traceback, and nothing the user had (data, checkpoints, samples, earlier outputs) changed.

Runs in-process (tests/cli_helpers.py): a subprocess would pay the torch import per row. Sizes
that cannot be allocated are far beyond any machine (tens of TB), so the rows hold anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import run_fdm

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
ORACLE = "oracle:ou:lengthscale=4"
SAMPLE = ["sample", ORACLE, "--length", "12", "--n-obs", "2", "--steps", "2", "--quiet", "--format", "npz"]
DATA_MAKE = ["data", "make", "bouncing-balls", "--num-videos", "1", "--length", "4", "--size", "8", "-q"]
TRAIN = ["train", "--dataset", "bouncing-balls", "--data-dir", "{data}", "--preset", "tiny", "--steps", "1",
         "--quiet"]


def _checkpoint(path: Path, diffusion: dict | None = None, model: dict | None = None) -> None:
    """A tiny FDM checkpoint, its metadata edited as a hand-made or damaged file would be."""
    from safetensors.torch import load_file, save_file

    from fdm_engine.checkpoint import save_checkpoint
    from fdm_engine.diffusion import DiffusionConfig
    from fdm_engine.models.fdm_unet import FDMUNet, FDMUNetConfig

    net = FDMUNet(FDMUNetConfig(image_size=8, channels=3, base_channels=8, channel_mult=(1,),
                                attention_resolutions=(), num_heads=1, max_frames=6))
    save_checkpoint(path, net, DiffusionConfig(), extra={"dataset": "bouncing-balls"})
    if diffusion or model:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        for key, change in (("diffusion", diffusion), ("model_config", model)):
            if change:
                meta[key] = json.dumps({**json.loads(meta[key]), **change})
        save_file(load_file(str(path)), str(path), meta)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A user's folder: a dataset, checkpoints (good, beta_end=5, base_channels=10**12), a finished
    `fdm sample` run, a plain file, an earlier picture."""
    from fdm_engine.datasets import make_dataset

    root = tmp_path_factory.mktemp("user")
    data = make_dataset("bouncing-balls", root / "balls", num_videos=2, num_test=1, length=24, size=8, seed=0)
    _checkpoint(root / "ckpt.safetensors")
    _checkpoint(root / "beta5.safetensors", diffusion={"beta_end": 5})
    _checkpoint(root / "huge.safetensors", model={"base_channels": 10**12})
    (root / "afile").write_text("not a folder\n")
    (root / "old.png").write_bytes(b"an earlier picture")
    vd = _video_diffusion_files(root / "vd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        code, _, err = run_fdm(_Capture(), "sample", "ckpt.safetensors", "--n-obs", "4", "--length", "12",
                               "--steps", "2", "--data-dir", str(data), "--quiet", "--format", "npz",
                               "--out", "samples")
    assert code == 0, err
    return {"root": root, "data": data, "ckpt": root / "ckpt.safetensors", "beta5": root / "beta5.safetensors",
            "huge": root / "huge.safetensors", "afile": root / "afile", "samples": root / "samples", **vd}


def _video_diffusion_files(folder: Path) -> dict[str, Path]:
    """A video_diffusion checkpoint and its config, a config of a wider model, a hostile pickle."""
    import torch

    from published_helpers import Payload, to_yaml, vd_config, write_vd_published

    folder.mkdir()
    ckpt, cfg = write_vd_published(folder)
    wide = vd_config(features=64)
    wide["diffusion"]["score_network"]["params"]["conditioning"]["projections"]["timestep"]["params"]["num_features"] = 64
    (folder / "wide.yaml").write_text(to_yaml(wide))
    torch.save({"step": 1, "model_state_dict": {"x": Payload(folder / "pwned")}, "config": {"diffusion": {}}},
               folder / "evil.pt")
    return {"vd_ckpt": ckpt, "vd_cfg": cfg, "vd_wide": folder / "wide.yaml", "vd_evil": folder / "evil.pt"}


class _Capture:
    """capsys for a module fixture: the output is discarded."""

    def readouterr(self):
        return "", ""


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root -> a hash of its bytes (folders: "dir")."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# (id, argv with {placeholders}, text the message must hold)
CASES = [
    # fdm itself
    ("unknown-command", ["transmogrify"], "transmogrify"),
    ("unknown-option", ["sample", ORACLE, "--colour", "red"], "--colour"),
    ("missing-argument", ["convert", "{ckpt}"], "DST"),
    ("not-an-integer", [*SAMPLE, "--num-videos", "two"], "--num-videos"),
    # sample (paths, models, sizes; SampleConfig's own fields are tested in test_sample_cli)
    ("sample-out-below-file", [*SAMPLE, "--out", "{afile}/run"], "is a file"),
    ("sample-out-proc", [*SAMPLE, "--out", "/proc/fdm-test"], "/proc"),
    ("sample-out-is-file", [*SAMPLE, "--out", "{afile}"], "not a folder"),
    ("sample-obs-mistyped-folder", ["sample", "{ckpt}", "--length", "12", "--n-obs", "2", "--obs", "frames/",
                                    "--quiet", "--out", "{root}/o"], "no such video file"),
    ("sample-no-such-checkpoint", ["sample", "{root}/nope.safetensors", "--out", "{root}/o"], "nope.safetensors"),
    # a missing path is named as missing, whatever its suffix (not 'unknown checkpoint format')
    ("sample-no-such-path", ["sample", "{root}/nope", "--out", "{root}/o"], "nope: no such file"),
    ("sample-oracle-published-flags", ["sample", ORACLE, "--flags", "--x 1", "--out", "{root}/o"],
     "--flags is for published checkpoints, not the oracle"),
    ("sample-oracle-from-config", ["sample", ORACLE, "--from", "ramvid", "--config", "{vd_cfg}", "--out", "{root}/o"],
     "--from and --config are for published checkpoints, not the oracle"),
    ("sample-oracle-too-big", ["sample", "oracle:ou:size=1000000", "--length", "12", "--n-obs", "2",
                               "--quiet", "--out", "{root}/o"], "size=1000000"),
    ("sample-buffer-too-big", ["sample", "oracle:ou:size=1000000", "--length", "12", "--n-obs", "0",
                               "--quiet", "--out", "{root}/o"], "12 frames"),
    ("sample-beta-end-5", ["sample", "{beta5}", "--length", "12", "--n-obs", "4", "--quiet", "--out", "{root}/o"],
     "beta_end 5"),
    ("sample-huge-model", ["sample", "{huge}", "--length", "12", "--n-obs", "4", "--quiet", "--out", "{root}/o"],
     "base_channels=1000000000000"),
    ("sample-unknown-scheme", [*SAMPLE, "--scheme", "zigzag", "--out", "{root}/o"], "zigzag"),
    ("sample-hierarchy-1", [*SAMPLE, "--scheme", "hierarchy-1", "--out", "{root}/o"], "hierarchy-1"),
    ("sample-history-guidance-nan", [*SAMPLE, "--history-guidance", "nan", "--out", "{root}/o"],
     "--history-guidance nan"),
    ("sample-history-guidance-negative", [*SAMPLE, "--history-guidance", "-1", "--out", "{root}/o"],
     "--history-guidance -1"),
    ("sample-history-drop-unknown", [*SAMPLE, "--history-guidance", "1", "--history-drop", "oldest", "--out",
                                     "{root}/o"], "--history-drop 'oldest'"),
    ("sample-history-context-noise", [*SAMPLE, "--history-guidance", "1", "--context-noise", "50", "--out",
                                      "{root}/o"], "--context-noise 50"),
    ("eval-scheme-history-context-noise", ["eval", "scheme", "autoreg", "--length", "40", "--n-obs", "4",
                                           "--sampler", "ddim", "--history-guidance", "1", "--context-noise", "50"],
     "--context-noise 50"),
    ("sample-history-drop-no-count", [*SAMPLE, "--history-guidance", "1", "--history-drop", "keep-nearest",
                                      "--out", "{root}/o"], "keep-nearest:2"),
    # convert
    ("convert-dst-below-file", ["convert", "{ckpt}", "{afile}/x.safetensors"], "is a file"),
    ("convert-dst-proc", ["convert", "{ckpt}", "/proc/x.safetensors"], "/proc"),
    ("convert-dst-device", ["convert", "{ckpt}", "/dev/full"], "not a regular file"),
    ("convert-dst-folder", ["convert", "{ckpt}", "{data}"], "is a folder"),
    ("convert-dst-suffix", ["convert", "{ckpt}", "{root}/x.zip"], ".zip"),
    ("convert-src-missing", ["convert", "{root}/missing.pt", "{root}/x.safetensors"], "missing.pt"),
    ("convert-src-not-checkpoint", ["convert", "{afile}", "{root}/x.safetensors"], "afile"),
    ("convert-huge-model", ["convert", "{huge}", "{root}/x.pt"], "base_channels"),
    ("convert-no-such-path", ["convert", "{root}/nope", "{root}/x.pt"], "nope: no such file"),
    ("convert-beta-end-5", ["convert", "{beta5}", "{root}/x.pt"], "beta_end"),
    ("convert-vd-no-config", ["convert", "{vd_ckpt}", "{root}/x.safetensors"], "needs --config"),
    ("convert-vd-config-missing", ["convert", "{vd_ckpt}", "{root}/x.safetensors", "--from", "video-diffusion",
                                   "--config", "{root}/none.yaml"], "none.yaml"),
    ("convert-vd-shape", ["convert", "{vd_ckpt}", "{root}/x.safetensors", "--from", "video-diffusion", "--config",
                          "{vd_wide}"], "'_projections.timestep._projection.1.weight' has shape [128, 32] in the file "
                                        "but [256, 64]"),
    ("convert-vd-pickle-runs-code", ["convert", "{vd_evil}", "{root}/x.safetensors", "--from", "video-diffusion",
                                     "--config", "{vd_cfg}"], "could run code"),
    ("sample-config-not-published", ["sample", "{ckpt}", "--config", "{vd_cfg}", "--n-obs", "0", "--length", "6",
                                     "--quiet", "--out", "{root}/o"], "pass --from NAME too"),
    ("sample-vd-no-config", ["sample", "{vd_ckpt}", "--n-obs", "0", "--length", "6", "--quiet", "--out", "{root}/o"],
     "needs --config"),
    # schemes
    ("schemes-unknown", ["schemes", "plan", "zigzag", "--length", "20"], "zigzag"),
    ("schemes-family", ["schemes", "plan", "hierarchy-N", "--length", "20"], "hierarchy-N"),
    ("schemes-one-level", ["schemes", "stats", "hierarchy-1", "--length", "20"], "N must be >= 2"),
    ("schemes-length-0", ["schemes", "stats", "hierarchy-2", "--length", "0"], "--length"),
    ("schemes-length-missing", ["schemes", "stats", "hierarchy-2"], "--length"),
    ("schemes-n-obs-too-many", ["schemes", "stats", "hierarchy-2", "--length", "20", "--n-obs", "30"], "--n-obs"),
    ("schemes-max-frames-1", ["schemes", "stats", "autoreg", "--length", "20", "--max-frames", "1"],
     "--max-frames"),
    ("schemes-step-size-k", ["schemes", "plan", "autoreg", "--length", "20", "--step-size", "20"], "--step-size"),
    ("schemes-steps-0", ["schemes", "stats", "autoreg", "--length", "20", "--steps", "0"], "--steps"),
    ("schemes-show-below-file", ["schemes", "show", "autoreg", "--length", "20", "--out", "{afile}/x.png"],
     "is a file"),
    ("schemes-show-proc", ["schemes", "show", "autoreg", "--length", "20", "--out", "/proc/x.png"], "/proc"),
    ("schemes-show-not-png", ["schemes", "show", "autoreg", "--length", "20", "--out", "{root}/x.txt"], ".png"),
    ("schemes-list-extra", ["schemes", "list", "--verbose"], "--verbose"),
    # data
    ("data-make-size-huge", [*DATA_MAKE[:-3], "--size", "1000000", "--out", "{root}/d", "-q"], "--size 1000000"),
    ("data-make-length-huge", [*DATA_MAKE[:5], "--length", "100000000000", "--size", "8", "--out", "{root}/d",
                               "-q"], "--length 100000000000"),
    ("data-make-disk", [*DATA_MAKE[:3], "--num-videos", "1000000000000", "--length", "300", "--size", "64",
                        "--out", "{root}/d", "-q"], "of disk"),
    ("data-make-param-text", [*DATA_MAKE, "--param", "num_balls=abc", "--out", "{root}/d"], "num_balls"),
    ("data-make-param-range", [*DATA_MAKE, "--param", "num_balls=-3", "--out", "{root}/d"], "num_balls"),
    ("data-make-param-unknown", [*DATA_MAKE, "--param", "colour=1", "--out", "{root}/d"], "colour"),
    ("data-make-param-no-value", [*DATA_MAKE, "--param", "num_balls", "--out", "{root}/d"], "KEY=VALUE"),
    ("data-make-out-below-file", [*DATA_MAKE, "--out", "{afile}/d"], "is a file"),
    ("data-make-out-proc", [*DATA_MAKE, "--out", "/proc/d"], "/proc"),
    ("data-make-out-is-file", [*DATA_MAKE, "--out", "{afile}"], "not a folder"),
    ("data-make-out-not-empty", [*DATA_MAKE, "--out", "{data}"], "not an empty folder"),
    ("data-make-no-videos", [*DATA_MAKE, "--num-videos", "-1", "--out", "{root}/d"], "--num-videos"),
    ("data-make-length-0", [*DATA_MAKE, "--length", "0", "--out", "{root}/d"], "--length"),
    ("data-make-size-0", [*DATA_MAKE, "--size", "0", "--out", "{root}/d"], "--size"),
    ("data-make-fps-0", [*DATA_MAKE, "--fps", "0", "--out", "{root}/d"], "--fps"),
    ("data-make-unknown", ["data", "make", "lava-lamps", "--out", "{root}/d", "-q"], "lava-lamps"),
    ("data-info-file", ["data", "info", "{afile}"], "afile"),
    ("data-info-unknown", ["data", "info", "--dataset", "nope"], "nope"),
    ("data-info-nothing", ["data", "info"], "DIRECTORY"),
    ("data-list-extra", ["data", "list", "extra"], "extra"),
    # train
    ("train-model-option-text", [*TRAIN, "--model-option", "base_channels=abc", "--run-dir", "{root}/r"],
     "base_channels"),
    ("train-model-option-huge", [*TRAIN, "--model-option", "base_channels=1000000000000", "--run-dir",
                                 "{root}/r"], "base_channels=1000000000000"),
    ("train-model-option-unknown", [*TRAIN, "--model-option", "base_chanels=8", "--run-dir", "{root}/r"],
     "base_chanels"),
    ("train-model-option-no-value", [*TRAIN, "--model-option", "base_channels", "--run-dir", "{root}/r"],
     "KEY=VALUE"),
    ("train-run-dir-below-file", [*TRAIN, "--run-dir", "{afile}/r"], "is a file"),
    ("train-run-dir-proc", [*TRAIN, "--run-dir", "/proc/r"], "/proc"),
    ("train-run-dir-is-file", [*TRAIN, "--run-dir", "{afile}"], "not a folder"),
    ("train-steps-negative", [*TRAIN, "--steps", "-1", "--run-dir", "{root}/r"], "--steps"),
    ("train-lr-negative", [*TRAIN, "--lr", "-1", "--run-dir", "{root}/r"], "--lr"),
    ("train-noise-levels-unknown", [*TRAIN, "--noise-levels", "per-pixel", "--run-dir", "{root}/r"], "per-pixel"),
    ("train-noise-levels-vdm", [*TRAIN, "--model", "vdm", "--noise-levels", "per-frame", "--run-dir", "{root}/r"],
     "--noise-levels applies to --model fdm"),
    ("train-unknown-model", [*TRAIN, "--model", "gan", "--run-dir", "{root}/r"], "gan"),
    ("train-config-not-json", ["train", "--config", "{afile}"], "afile"),
    # eval
    ("eval-scheme-length-huge", ["eval", "scheme", "hierarchy-2", "--length", "1000000"], "--length 1000000"),
    ("eval-scheme-mc-negative", ["eval", "scheme", "hierarchy-2", "--length", "40", "--n-obs", "4",
                                 "--monte-carlo", "-1"], "--monte-carlo"),
    ("eval-scheme-oracle-text", ["eval", "scheme", "hierarchy-2", "--length", "40", "--n-obs", "4",
                                 "--oracle", "oracle:periodic:lengthscale=abc"], "abc"),
    ("eval-scheme-history-exact", ["eval", "scheme", "hierarchy-2", "--length", "40", "--n-obs", "4",
                                   "--history-guidance", "1"], "--sampler"),
    ("eval-scheme-history-drop", ["eval", "scheme", "hierarchy-2", "--length", "40", "--n-obs", "4", "--sampler",
                                  "ddim", "--history-guidance", "1", "--history-drop", "keep-nearest:-1"],
     "keep-nearest:-1"),
    ("eval-scheme-adaptive", ["eval", "scheme", "adaptive-autoreg", "--length", "40", "--n-obs", "4"],
     "--monte-carlo"),
    ("eval-sampler-empty-range", ["eval", "sampler", "ddim", "--observed", "5-2"], "5-2"),
    ("eval-sampler-no-latent", ["eval", "sampler", "ddim", "--latent", "none"], "--latent"),
    ("eval-sampler-mc-negative", ["eval", "sampler", "ddim", "--monte-carlo", "-1"], "--monte-carlo"),
    ("eval-sampler-long-list", ["eval", "sampler", "ddim", "--latent", "0-99999"], "100000 in all"),
    ("eval-sampler-job-huge", ["eval", "sampler", "ddim", "--observed", "none", "--latent", "0-999999"],
     "1000000 frames"),
    ("eval-sampler-steps-0", ["eval", "sampler", "ddim", "--steps", "0"], "--steps"),
    ("eval-sampler-exact", ["eval", "sampler", "exact"], "NAME"),
    ("eval-sampler-text-frames", ["eval", "sampler", "ddim", "--observed", "a-b"], "--observed"),
    ("eval-samplers-unknown", ["eval", "samplers", "--samplers", "euler-magic"], "euler-magic"),
    ("eval-samplers-out-below-file", ["eval", "samplers", "--out", "{afile}/x.png"], "is a file"),
    ("eval-samplers-out-proc", ["eval", "samplers", "--out", "/proc/x.png"], "/proc"),
    ("eval-schemes-none", ["eval", "schemes", "--length", "40"], "--all"),
    ("eval-schemes-out-proc", ["eval", "schemes", "autoreg", "--length", "40", "--out", "/proc/x.png"], "/proc"),
    ("eval-video-n-obs-negative", ["eval", "video", "{samples}", "--n-obs", "-1"], "--n-obs"),
    ("eval-video-n-obs-all", ["eval", "video", "{samples}", "--n-obs", "12"], "no generated frames"),
    ("eval-video-out-below-file", ["eval", "video", "{samples}", "--out", "{afile}/e"], "is a file"),
    ("eval-video-not-a-folder", ["eval", "video", "{afile}"], "afile"),
    ("eval-video-no-samples", ["eval", "video", "{data}"], "no video_NNNN"),
    ("eval-i3d-out-proc", ["eval", "i3d-weights", "{afile}", "--out", "/proc/i3d.safetensors"], "/proc"),
    ("eval-i3d-not-pickle", ["eval", "i3d-weights", "{afile}", "--out", "{root}/i3d.safetensors"], "afile"),
    # demo
    ("demo-out-proc", ["demo", "--out", "/proc/demo", "-q"], "/proc"),
    ("demo-length-1", ["demo", "--length", "1", "-q", "--out", "{root}/o"], "--length"),
    ("demo-no-checkpoint", ["demo", "--checkpoint", "{root}/none.safetensors", "-q", "--out", "{root}/o"],
     "none.safetensors"),
    # report
    ("report-nothing", ["report"], "DIRS"),
    ("report-a-file", ["report", "{afile}"], "afile"),
    ("report-out-proc", ["report", "{samples}", "--out", "/proc/report"], "/proc"),
    ("eval-fvd-no-weights", ["eval", "fvd", "{samples}", "{samples}", "--i3d", "{root}/none.safetensors"],
     "none.safetensors"),
    # the user's sets are checked before the (also missing) weights
    ("eval-fvd-no-fake-folder", ["eval", "fvd", "{samples}", "{root}/no_such_samples/", "--i3d",
                                 "{root}/none.safetensors"], "{root}/no_such_samples/: no such folder"),
    ("eval-fvd-no-real-folder", ["eval", "fvd", "no_such_real", "{samples}", "--i3d", "{root}/none.safetensors"],
     "no_such_real: no such folder"),
]


@pytest.mark.parametrize("argv,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, capsys, monkeypatch, argv, needle):
    root = world["root"]
    monkeypatch.chdir(root)
    argv = [a.format(**world) for a in argv]
    needle = needle.format(**world)
    before = snapshot(root)
    code, _, err = run_fdm(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and len(lines[0]) < 500, err
    assert needle in lines[0], err
    after = snapshot(root)
    assert {k: after.get(k) for k in before} == before, "the command changed or removed the user's files"
    new = sorted(set(after) - set(before))
    # nothing new either: a failed `fdm sample` start leaves no state (or folder) to block the corrected command
    assert not new, new


def test_the_table_covers_every_command():
    from cli.main import COMMANDS

    covered = {c[1][0] for c in CASES}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered
    assert len(CASES) >= 60


@pytest.mark.parametrize("argv,name", [
    (["schemes", "show", "hierarchy-2", "--length", "300", "--out", "{out}"], "plan.png"),
    pytest.param(["convert", "{ckpt}", "{out}"], "model.pt", marks=pytest.mark.slow),  # torch.save: no errno
], ids=["picture", "checkpoint"])
def test_a_full_disk_keeps_the_previous_file_and_says_so(world, tmp_path, argv, name):
    """`ulimit -f` (the file-size limit: writes fail as on a full disk) while writing a picture or a checkpoint."""
    import resource

    old = tmp_path / name
    old.write_bytes(b"the previous file")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.RLIM_INFINITY))

    argv = [a.format(out=old, **world) for a in argv]
    r = subprocess.run([sys.executable, "-m", "cli.main", *argv], capture_output=True, text=True, preexec_fn=limit,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "could not write" in lines[0] and "previous file is intact" in lines[0]
    assert old.read_bytes() == b"the previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no temporary file is left"


def test_a_second_train_on_a_locked_run_folder_stops_at_once(world, capsys, tmp_path):
    from fdm_engine.run_lock import run_folder_lock

    run = tmp_path / "run"
    with run_folder_lock(run, "--run-dir"):  # as a running `fdm train` holds it
        code, _, err = run_fdm(capsys, *[a.format(**world) for a in TRAIN], "--run-dir", run)
        assert sorted(p.name for p in run.iterdir()) == [".fdm-lock"], "nothing written beside the holder's run"
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "in use by another fdm process" in err and str(os.getpid()) in err


def _small_train(world, run) -> list:
    return [*[a.format(**world) for a in TRAIN], "--run-dir", run, "--batch-size", "1", "--model-option",
            "image_size=8", "--model-option", "max_frames=6", "--model-option", "base_channels=8",
            "--sample-every", "0"]


def test_a_failed_train_start_leaves_no_run_folder(world, capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_fdm(capsys, *_small_train(world, run), "--clip-length", "1000")  # the videos have 24
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fewer than the 1000 requested" in err, err
    assert not run.exists(), "a failed start leaves no run folder (no config.json to block the retry)"


@pytest.mark.slow
def test_the_corrected_command_after_a_failed_start_trains(world, capsys, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_fdm(capsys, *_small_train(world, run), "--clip-length", "1000")
    assert code == 2, err
    code, _, err = run_fdm(capsys, *_small_train(world, run), "--clip-length", "12")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["clip_length"] == 12


def test_eval_video_finds_the_truth_a_checkpoint_run_recorded(world, capsys, tmp_path):
    """`fdm sample CKPT` without --obs conditions on the checkpoint's dataset; plan.json records it
    as "conditioning" and `fdm eval video` scores against it."""
    code, out, err = run_fdm(capsys, "eval", "video", world["samples"], "--out", tmp_path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["truth"] == "bouncing-balls:test" and report["n_obs"] == 4
    # the given frames are the truth's own, so they score perfectly
    assert all(v >= 60 for v in report["psnr"]["per_frame"][:4])
