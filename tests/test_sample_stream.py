"""Streaming sampling runs: bounded memory, the journal (bytes per round, kills, damage), identical
frames whatever the in-flight count or batch size, the run-folder lock and refusals, precision."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_fdm
from fdm_engine.errors import FdmError
from fdm_engine.sample_config import SampleConfig
from fdm_engine.sample_run import run_sampling

ROOT = Path(__file__).resolve().parents[1]
ORACLE = "oracle:ou:lengthscale=4,size=8"
pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> SampleConfig:
    base = dict(model=ORACLE, scheme="hierarchy-2", n_obs=3, length=30, max_frames=8, steps=3, sampler="ddpm",
                num_videos=5, formats=("npz",), save_raw=True, seed=3)
    return SampleConfig(**{**base, **kw})


def raw(out: Path, n: int) -> np.ndarray:
    return np.stack([np.load(out / f"video_{i:04d}.npz")["raw"] for i in range(n)])


@pytest.mark.parametrize("scheme", ["hierarchy-2", "adaptive-autoreg"])
def test_frames_do_not_depend_on_videos_in_flight_or_batch_size(scheme, tmp_path):
    runs = {}
    for in_flight, batch in ((1, 1), (5, 1), (1, 7), (5, 7), (2, 3)):
        out = tmp_path / f"{in_flight}_{batch}"
        s = run_sampling(cfg(scheme=scheme, videos_in_flight=in_flight, batch_size=batch), out, progress=False)
        runs[in_flight, batch] = raw(out, 5), s
    ref, _ = runs[1, 1]
    for key, (frames, summary) in runs.items():
        np.testing.assert_allclose(frames, ref, atol=1e-5, err_msg=str(key))
        assert summary["nfe"] == runs[1, 1][1]["nfe"]
    assert np.array_equal(runs[5, 1][0], ref), "same batch size: bit-identical"
    assert runs[5, 7][1]["network_calls"] < runs[1, 1][1]["network_calls"]
    assert not list(Path(tmp_path / "1_1").glob("state_rank0*")), "a finished run leaves no state"


@pytest.mark.parametrize("scheme", ["autoreg", "hierarchy-2"])
def test_oracle_frames_are_bit_identical_for_in_flight_1_and_v_and_batch_1_and_7(scheme, tmp_path):
    """The oracle's arithmetic is per batch element and padding slots add exact zeros, so with it
    the frames are not just close but equal, whatever the in-flight count (1 or V) and batch size."""
    runs = {}
    for in_flight, batch in ((1, 1), (5, 1), (1, 7), (5, 7)):
        out = tmp_path / f"{in_flight}_{batch}"
        run_sampling(cfg(scheme=scheme, videos_in_flight=in_flight, batch_size=batch), out, progress=False)
        runs[in_flight, batch] = raw(out, 5)
    for key, frames in runs.items():
        assert np.array_equal(frames, runs[1, 1]), key


class Stop(Exception):
    pass


def interrupt_after(monkeypatch, commits: int):
    """Make the run stop (like a kill) right after its N-th state commit."""
    from fdm_engine.sample_state import RunState

    real, seen = RunState.commit, []

    def commit(self, counters=None):
        real(self, counters)
        seen.append(1)
        if len(seen) == commits:
            raise Stop

    monkeypatch.setattr(RunState, "commit", commit)
    return lambda: monkeypatch.setattr(RunState, "commit", real)


def test_bytes_written_per_round_follow_the_frames_made(tmp_path, monkeypatch):
    """Each round writes its new frames (+ a small manifest), never the videos again."""
    from fdm_engine.sample_state import RunState

    totals = []
    real = RunState.commit

    def commit(self, counters=None):
        real(self, counters)
        totals.append(self.bytes_written)  # journals appended since the last commit + this manifest

    monkeypatch.setattr(RunState, "commit", commit)
    frame_bytes = 1 * 8 * 8 * 4
    c = cfg(scheme="autoreg", num_videos=3, length=60, videos_in_flight=3)
    run_sampling(c, tmp_path / "o", progress=False)
    made_per_round = 3 * 4  # 3 videos x S = 4 latent frames per autoreg job
    rounds = [b - a for a, b in zip(totals, totals[1:])]
    full = rounds[:12]  # rounds 1..12 make 4 frames per video (15 rounds in all)
    overhead = [b - made_per_round * frame_bytes for b in full]
    assert len(full) == 12 and all(0 < o < 4096 for o in overhead), overhead
    assert max(rounds) < made_per_round * frame_bytes + 4096, "no commit rewrites the videos"


@pytest.mark.parametrize("damage,needle", [
    ("truncate_journal", "truncated"),
    ("flip_journal_byte", "checksum"),
    ("empty_manifest", "empty"),
    ("pickle_manifest", "not an fdm sampling state"),
    ("cut_manifest", "not an fdm sampling state"),
])
def test_a_damaged_state_is_refused_with_one_line(damage, needle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    restore = interrupt_after(monkeypatch, 4)
    with pytest.raises(Stop):
        run_sampling(cfg(), out, progress=False)
    restore()
    manifest = out / "state_rank0.pt"
    journals = sorted((out / "state_rank0.parts").glob("*.journal"))
    committed = json.loads(manifest.read_text())["state"]["journals"]
    journal = out / "state_rank0.parts" / f"video_{int(next(iter(committed))):04d}.journal"
    assert journal in journals
    if damage == "truncate_journal":
        os.truncate(journal, journal.stat().st_size - 10)
    elif damage == "flip_journal_byte":
        data = bytearray(journal.read_bytes())
        data[-5] ^= 0xFF
        journal.write_bytes(bytes(data))
    elif damage == "empty_manifest":
        manifest.write_bytes(b"")
    elif damage == "pickle_manifest":
        torch.save({"state": {"buffer": torch.zeros(2)}}, manifest)
    elif damage == "cut_manifest":
        manifest.write_bytes(manifest.read_bytes()[:-20])
    before = files(out)
    args = ["sample", ORACLE, "--scheme", "hierarchy-2", "--n-obs", "3", "--length", "30", "--max-frames", "8",
            "--steps", "3", "--sampler", "ddpm", "--num-videos", "5", "--format", "npz", "--save-raw", "--seed", "3",
            "--out", out, "--quiet", "--resume"]
    code, _, err = run_fdm(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert needle in lines[0] and "state_rank0" in lines[0] and "start over" in lines[0]
    assert "weights_only" not in err
    assert files(out) == before, "nothing was changed"


def test_an_interrupted_run_resumes_identically_from_any_round(tmp_path, monkeypatch):
    ref = tmp_path / "ref"
    run_sampling(cfg(videos_in_flight=2), ref, progress=False)
    for commits in (2, 7, 13):
        out = tmp_path / f"cut{commits}"
        restore = interrupt_after(monkeypatch, commits)
        with pytest.raises(Stop):
            run_sampling(cfg(videos_in_flight=2), out, progress=False)
        restore()
        with pytest.raises(FdmError, match="--resume"):
            run_sampling(cfg(videos_in_flight=2), out, progress=False)
        # in-flight and batch size may change on resume: they do not change the frames
        run_sampling(cfg(videos_in_flight=3), out, resume=True, progress=False)
        assert np.array_equal(raw(out, 5), raw(ref, 5)), commits


def fail_first_journal(monkeypatch):
    """Make the run fail as it writes its first round (before that round is committed)."""
    from fdm_engine.sample_state import RunState

    real = RunState.append

    def append(self, *args, **kw):
        raise Stop

    monkeypatch.setattr(RunState, "append", append)
    return lambda: monkeypatch.setattr(RunState, "append", real)


def test_a_run_that_fails_before_its_first_commit_leaves_nothing(tmp_path, monkeypatch):
    """A failed start must not block the corrected command (no state to --resume, nothing to delete)."""
    out, kept = tmp_path / "o", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's")
    for folder in (out, kept):
        restore = fail_first_journal(monkeypatch)
        with pytest.raises(Stop):
            run_sampling(cfg(num_videos=2), folder, progress=False)
        restore()
        assert not list(folder.glob("state_rank0*")), folder
    assert not out.exists(), "the folder the failed run created goes too"
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    run_sampling(cfg(num_videos=2), out, progress=False)  # the corrected command, no --resume
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "video_0000.npz", "video_0001.npz"]


def test_a_failure_keeps_a_resumable_state_once_a_round_is_committed(tmp_path, monkeypatch, capsys):
    ref, out = tmp_path / "ref", tmp_path / "o"
    run_sampling(cfg(num_videos=2), ref, progress=False)
    restore = interrupt_after(monkeypatch, 3)  # fresh state, round 1, round 2
    with pytest.raises(Stop):
        run_sampling(cfg(num_videos=2), out, progress=False)
    restore()
    # a resumed run that fails before committing anything new keeps the state it was given
    restore = fail_first_journal(monkeypatch)
    with pytest.raises(Stop):
        run_sampling(cfg(num_videos=2), out, resume=True, progress=False)
    restore()
    assert (out / "state_rank0.pt").exists()
    # other settings: refused, saying how to start over
    code, _, err = run_fdm(capsys, "sample", ORACLE, "--scheme", "autoreg", "--n-obs", "3", "--length", "30",
                           "--max-frames", "8", "--steps", "3", "--sampler", "ddpm", "--num-videos", "2",
                           "--format", "npz", "--save-raw", "--seed", "3", "--out", out, "--quiet", "--resume")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "different settings (scheme)" in lines[0] and "delete state_rank0.pt and state_rank0.parts" in lines[0]
    assert "start over" in lines[0] and "another --out" in lines[0]
    run_sampling(cfg(num_videos=2), out, resume=True, progress=False)
    assert np.array_equal(raw(out, 2), raw(ref, 2))


def files(folder: Path) -> dict:
    """Contents of every file but the lock (which names its holder)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def test_a_folder_holding_another_run_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    run_sampling(cfg(num_videos=2), out, progress=False)
    before = files(out)
    for extra in ([], ["--num-videos", "3"]):
        code, _, err = run_fdm(capsys, "sample", ORACLE, "--n-obs", "3", "--length", "30", "--max-frames", "8",
                               "--num-videos", "2", "--format", "npz", "--out", out, "--quiet", *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "holds another run" in err, err
        assert "choose another --out" in err
    assert files(out) == before


def test_resume_with_no_run_is_refused_and_resume_of_a_finished_run_leaves_it(tmp_path, capsys):
    def sample(out, *extra):
        return run_fdm(capsys, "sample", ORACLE, "--n-obs", "3", "--length", "12", "--max-frames", "8",
                       "--num-videos", "1", "--steps", "2", "--format", "npz", "--out", out, "--quiet", *extra)

    missing, empty, done = tmp_path / "missing", tmp_path / "empty", tmp_path / "done"
    empty.mkdir()
    for out, why in ((missing, "does not exist: there is no run to resume"), (empty, "holds no run to resume")):
        code, _, err = sample(out, "--resume")
        assert code == 2 and len(err.strip().splitlines()) == 1 and why in err and str(out) in err, err
    assert not missing.exists() and not any(empty.iterdir()), "a refused resume creates nothing"
    assert sample(done)[0] == 0
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in done.iterdir()}
    code, stdout, err = sample(done, "--resume")
    assert code == 0 and stdout.strip() == f"nothing to resume: the run in {done} is already complete " \
                                           f"(1 video, plan.json)", (stdout, err)
    code, _, err = sample(done, "--resume", "--steps", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "finished run with different settings (steps)" in err
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in done.iterdir()} == before, "the finished run is left"
    (done / "state_rank1.pt").write_text("{}")  # another rank's part unfinished: no rank may stop alone
    code, _, err = sample(done, "--resume")
    assert code == 2 and "finished on rank 0 but not on every rank (state_rank1.pt)" in err, err


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    from fdm_engine.run_lock import run_folder_lock

    out = tmp_path / "o"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from fdm_engine.run_lock import run_folder_lock
        with run_folder_lock({str(out)!r}, "--out", ".fdm-sample-rank0.lock", "`fdm sample`"):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_fdm(capsys, "sample", ORACLE, "--n-obs", "3", "--length", "30", "--max-frames", "8",
                               "--format", "npz", "--out", out, "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "in use by another `fdm sample`" in err and str(holder.pid) in err
        assert not list(out.glob("video_*")) and not (out / "state_rank0.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    with run_folder_lock(out, "--out", ".fdm-sample-rank0.lock", "`fdm sample`"):  # a killed holder frees it
        pass


def test_a_finished_run_leaves_no_lock_file(tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run_fdm(capsys, "sample", ORACLE, "--n-obs", "3", "--length", "12", "--max-frames", "8",
                           "--num-videos", "1", "--steps", "2", "--format", "npz", "--out", out, "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "video_0000.npz"]


def test_a_lock_on_a_file_its_holder_removed_is_taken_again_on_the_name(tmp_path, monkeypatch):
    """The race of removing the lock file at release: B opens the file, its holder A removes it
    and lets go, C creates a new one and locks it, then B's flock on the old file succeeds. B must
    see that the name is no longer its file, and then find C holding the name's file."""
    import fcntl

    from fdm_engine import run_lock

    path, fds, real_flock = tmp_path / ".lock", [], fcntl.flock

    def flock(fd, op):
        if not fds:  # B has opened the old file: A removes it, C locks a new one
            path.unlink()
            fds.append(os.open(path, os.O_RDWR | os.O_CREAT))
            real_flock(fds[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.pwrite(fds[0], b"4242\n", 0)
        real_flock(fd, op)

    path.write_text("1\n")
    monkeypatch.setattr(run_lock.fcntl, "flock", flock)
    try:
        with pytest.raises(FdmError, match="in use by another .* 4242"):
            with run_lock.run_folder_lock(tmp_path, name=".lock"):
                pass
        assert path.exists(), "C's lock file stays while C holds it"
    finally:
        os.close(fds[0])
    with run_lock.run_folder_lock(tmp_path, name=".lock"):  # C gone: the name's file is free again
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def _fdm(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


def wait_for_rounds(proc, manifest: Path, target: int) -> None:
    """Until the running `fdm sample` has committed `target` rounds (its manifest says so)."""
    rounds, deadline = 0, time.time() + 300
    while rounds < target and proc.poll() is None and time.time() < deadline:
        try:
            rounds = json.loads(manifest.read_text())["state"]["counters"].get("rounds", 0)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal; make it longer"


@pytest.mark.slow
def test_sigkill_at_three_rounds_then_resume_gives_identical_frames(tmp_path):
    args = ["sample", "oracle:ou:lengthscale=4,size=8", "--scheme", "autoreg", "--n-obs", "2", "--length", "60",
            "--max-frames", "6", "--sampler", "ddpm", "--steps", "60", "--num-videos", "3", "--videos-in-flight",
            "2", "--format", "npz", "--save-raw", "--quiet"]
    assert _fdm([*args, "--out", tmp_path / "ref"]).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    killed_at = []
    for target in (3, 9, 17):
        out = tmp_path / f"k{target}"
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args, "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest = out / "state_rank0.pt"
        wait_for_rounds(proc, manifest, target)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(json.loads(manifest.read_text())["state"]["counters"]["rounds"])
        r = _fdm([*args, "--out", out, "--resume"])
        assert r.returncode == 0, r.stderr
        for i in range(3):
            a, b = np.load(tmp_path / "ref" / f"video_{i:04d}.npz"), np.load(out / f"video_{i:04d}.npz")
            assert np.array_equal(a["raw"], b["raw"]), (target, i)
    assert len(set(killed_at)) == 3, killed_at


PEAK = textwrap.dedent("""
    import resource, sys
    from fdm_engine.sample_config import SampleConfig
    from fdm_engine.sample_run import run_sampling
    v = int(sys.argv[1])
    cfg = SampleConfig(model="oracle:ou:lengthscale=4,size=32,channels=3", scheme="autoreg", n_obs=2, length=400,
                       max_frames=20, steps=1, num_videos=v, batch_size=2, videos_in_flight=2, formats=("npz",))
    run_sampling(cfg, sys.argv[2], progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_videos(tmp_path):
    """One video is 400 x 3 x 32 x 32 floats = 4.9 MB: holding 12 more would add ~59 MB."""
    video_mb = 400 * 3 * 32 * 32 * 4 / 2**20
    peak = {}
    for v in (2, 14):
        r = subprocess.run(
            [sys.executable, "-c", PEAK, str(v), str(tmp_path / f"v{v}")], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=600)
        assert r.returncode == 0, r.stderr
        peak[v] = int(r.stdout.split()[-1]) / 1024  # MB
    assert peak[14] - peak[2] < 3 * video_mb, peak


def tiny_fdm():
    from fdm_engine.models.fdm_unet import FDMUNet, fdm_preset

    torch.manual_seed(0)
    model = FDMUNet(fdm_preset("tiny").replace(image_size=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


# Relative RMS differences bf16 vs fp32 on the tiny FDM (random weights, 8 px): measured 1.3 % for
# the network's output and 0.2 % for sampled frames (2 DDIM steps); the bounds leave 2x room.
NETWORK_TOLERANCE, FRAMES_TOLERANCE = 0.03, 0.005


def rel_rms(a, b) -> float:
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def test_bf16_runs_on_the_cpu_within_tolerance_of_fp32(monkeypatch):
    from fdm_engine.diffusion import NoiseSchedule
    from fdm_engine.executor import Executor, SamplingState
    from fdm_engine.precision import Autocast, resolve_precision, with_precision
    from fdm_engine.samplers import make_sampler
    from sampling_schemes import job_source

    model = tiny_fdm()
    k, c, s = model.max_frames, model.channels, model.image_size
    x, idx = torch.randn(1, k, c, s, s), torch.arange(k)[None]
    levels, observed = torch.full((1, k), 500.0), torch.zeros(1, k, dtype=torch.bool)
    bf16 = with_precision(model, "bf16", torch.device("cpu"))
    assert isinstance(bf16, Autocast) and with_precision(model, "fp32", torch.device("cpu")) is model
    with torch.no_grad():
        out16, out32 = bf16(x, idx, levels, observed), model(x, idx, levels, observed)
    assert out16.dtype == torch.float32 and 0 < rel_rms(out16, out32) < NETWORK_TOLERANCE
    given = torch.rand(1, 4, c, s, s) * 2 - 1
    frames = {}
    for precision, net in (("fp32", model), ("bf16", bf16)):
        ex = Executor(net, make_sampler("ddim", NoiseSchedule(), 2), seed=0)
        frames[precision] = ex.run(job_source("autoreg", k, 4, k), SamplingState.start(given, k)).buffer[:, 4:]
    assert torch.isfinite(frames["bf16"]).all()
    assert 0 < rel_rms(frames["bf16"], frames["fp32"]) < FRAMES_TOLERANCE
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr("fdm_engine.precision.cpu_bf16_pays", lambda: False)  # a CPU without native bf16
    assert (resolve_precision("auto", cpu), resolve_precision("auto", cuda)) == ("fp32", "bf16")
    assert resolve_precision("bf16", cpu, exact=True) == "fp32", "the oracle is always fp32"


def test_auto_precision_on_the_cpu_is_bf16_only_with_native_bf16_that_measures_faster(monkeypatch):
    import fdm_engine.precision as P

    cpu, timed, bf16_s = torch.device("cpu"), [], {}

    def seconds(dtype, **_):
        timed.append(dtype)
        return bf16_s["s"] if dtype == torch.bfloat16 else 1.0

    monkeypatch.setattr(P, "matmul_seconds", seconds)
    try:
        for native, s, want in ((False, 0.5, "fp32"), (True, 0.5, "bf16"), (True, 2.0, "fp32")):
            P.cpu_bf16_pays.cache_clear()
            monkeypatch.setattr(P, "native_cpu_bf16", lambda: native)
            bf16_s["s"] = s
            assert P.resolve_precision("auto", cpu) == want, (native, s)
            assert P.resolve_precision("auto", cpu) == want and P.resolve_precision("fp32", cpu) == "fp32"
        assert timed.count(torch.float32) == 2, "timed once per process, and not without native bf16"
    finally:
        P.cpu_bf16_pays.cache_clear()


def test_native_bf16_is_what_the_cpu_flags_say():
    from fdm_engine.precision import matmul_seconds, native_cpu_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = set(next((l for l in cpuinfo.read_text().splitlines() if l.startswith("flags")), "").split())
    assert native_cpu_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    assert 0 < matmul_seconds(torch.float32, size=64, repeats=2) < 10


def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path, capsys):
    args = ["sample", "oracle:ou:lengthscale=4,size=8", "--scheme", "autoreg", "--n-obs", "2", "--length", "60",
            "--max-frames", "6", "--sampler", "ddpm", "--steps", "60", "--num-videos", "2", "--format", "npz",
            "--quiet", "--out", tmp_path / "o"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    manifest = tmp_path / "o" / "state_rank0.pt"
    wait_for_rounds(proc, manifest, 2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    kept = json.loads(manifest.read_text())["state"]
    assert last.startswith(f"stopped by SIGINT after {kept['counters']['rounds']} rounds: "
                           f"{len(kept['finished_videos'])} of 2 videos written"), err
    assert str(manifest) in last and "run the same command with --resume to continue" in last, err
    # every video on disk is counted as written (its files are not written again on --resume)
    assert len(kept["finished_videos"]) == len(list((tmp_path / "o").glob("video_*.npz")))
    code, _, err = run_fdm(capsys, *args, "--resume")  # as it says
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["plan.json", "video_0000.npz", "video_0001.npz"]


def test_ctrl_c_before_the_first_round_says_nothing_was_kept(tmp_path):
    from fdm_engine.sample_run import Shard, stopped_note

    note = stopped_note(tmp_path / "o", Shard(), 2)
    assert note == f"stopped by SIGINT before the first round was done: nothing was kept in {tmp_path / 'o'}; " \
                   f"run the same command to start again"


def test_ctrl_c_before_this_run_holds_out_describes_nothing_in_it(tmp_path, monkeypatch):
    """Interrupted while the model loads: OUT's contents (here an earlier finished run) are not this run's."""
    import fdm_engine.sample_run as sr

    out = tmp_path / "o"
    out.mkdir()
    (out / "plan.json").write_text("{}")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sr, "load_denoiser", interrupted)
    with pytest.raises(sr.Interrupted) as e:
        sr.run_sampling(cfg(), out, progress=False)
    assert e.value.note == f"stopped by SIGINT before sampling started: nothing was changed in {out}"
    assert sorted(p.name for p in out.iterdir()) == ["plan.json"]


def test_the_summary_line_counts_in_words_and_says_a_resumed_time_is_this_sessions(tmp_path, monkeypatch, capsys):
    args = ["sample", ORACLE, "--scheme", "hierarchy-2", "--n-obs", "3", "--length", "30", "--max-frames", "8",
            "--steps", "3", "--sampler", "ddpm", "--num-videos", "1", "--format", "npz", "--seed", "3", "--quiet"]
    ref, out = tmp_path / "ref", tmp_path / "o"
    code, said, err = run_fdm(capsys, *args, "--out", ref)
    plan = json.loads((ref / "plan.json").read_text())
    counts = f"{plan['nfe']} network evaluations in {plan['rounds']} rounds"
    assert code == 0 and re.fullmatch(rf"wrote 1 video to {re.escape(str(ref))}: {counts}, [0-9.]+ s\n", said), said
    restore = interrupt_after(monkeypatch, 3)
    with pytest.raises(Stop):
        run_fdm(capsys, *args, "--out", out)
    restore()
    capsys.readouterr()
    code, said, err = run_fdm(capsys, *args, "--out", out, "--resume")
    # the counts are the whole run's (as the uninterrupted one's), the time only this session's
    assert code == 0 and re.fullmatch(rf"wrote 1 video to {re.escape(str(out))}: {counts}, [0-9.]+ s this session\n",
                                      said), said
