"""`fdm sample`'s background thread (journal, outputs, state bookkeeping): a failure on it is raised
in the run, never swallowed, and the work queued after it is not done; the run then resumes to the
frames of an uninterrupted one; the uint8 frames converted as jobs finish are those of the raw frames."""

import numpy as np
import pytest

from fdm_engine.sample_config import SampleConfig
from fdm_engine.sample_run import run_sampling
from fdm_engine.video_io import to_uint8
from fdm_engine.writer import Background

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw) -> SampleConfig:
    base = dict(model="oracle:ou:lengthscale=4,size=8", scheme="autoreg", n_obs=3, length=30, max_frames=8, steps=2,
                sampler="ddpm", num_videos=4, videos_in_flight=2, formats=("npz",), save_raw=True, seed=5)
    return SampleConfig(**{**base, **kw})


def test_background_work_after_a_failure_is_skipped_and_the_failure_raised_once():
    done = []
    bg = Background(max_pending=1)
    bg.submit(lambda: done.append(1))

    def fail():
        raise OSError("disk full")

    bg.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(100):  # raised by the first call after the failure
            bg.submit(lambda: done.append(2))
            bg.wait()
    bg.close()  # reported once: closing does not raise it again
    assert done == [1]


def test_a_failing_output_write_stops_the_run_and_resume_gives_identical_frames(tmp_path, monkeypatch):
    import fdm_engine.sample_run as sr

    ref = tmp_path / "ref"
    run_sampling(cfg(), ref, progress=False)
    real, calls = sr.write_outputs, []

    def write_outputs(out, video, *a, **kw):
        calls.append(video)
        if video == 2:
            raise OSError("disk full")
        return real(out, video, *a, **kw)

    out = tmp_path / "cut"
    monkeypatch.setattr(sr, "write_outputs", write_outputs)
    with pytest.raises(OSError, match="disk full"):
        run_sampling(cfg(), out, progress=False)
    assert calls == [0, 1, 2] and not (out / "video_0002.npz").exists()
    state = (out / "state_rank0.pt").read_text()
    assert '"finished_videos": [0, 1]' in state  # video 2 is not marked written
    monkeypatch.setattr(sr, "write_outputs", real)
    run_sampling(cfg(), out, resume=True, progress=False)
    for v in range(4):
        a, b = np.load(ref / f"video_{v:04d}.npz"), np.load(out / f"video_{v:04d}.npz")
        assert np.array_equal(a["raw"], b["raw"]) and np.array_equal(a["frames"], b["frames"]), v
        # uint8 frames made job by job (and, on resume, from the journal) = those of the raw frames
        assert np.array_equal(b["frames"], to_uint8(b["raw"])), v


@pytest.mark.parametrize("scheme,extra", [("hierarchy-2", {}), ("fifo", {"partitions": 1, "steps": 4}),
                                          ("autoreg", {"n_obs": 0})])
def test_uint8_frames_made_job_by_job_are_those_of_the_raw_frames(scheme, extra, tmp_path):
    """Also where per-frame jobs revisit frames (fifo) and where no frame is given (n_obs 0)."""
    run_sampling(cfg(scheme=scheme, sampler="ddim", **extra), tmp_path, progress=False)
    for v in range(4):
        z = np.load(tmp_path / f"video_{v:04d}.npz")
        assert np.array_equal(z["frames"], to_uint8(z["raw"])), v


def test_each_commit_records_the_counters_of_its_own_round(tmp_path, monkeypatch):
    # The commit runs on the background thread while the next round samples: it must record the
    # counters its round left, not those the next round is changing (resume starts from them).
    import time

    import fdm_engine.sample_run as sr
    from fdm_engine.sample_state import RunState

    seen, real_commit = [], RunState.commit

    class Late(Background):  # each piece of work starts late: the next round samples meanwhile
        def submit(self, fn):
            super().submit(lambda: (time.sleep(0.05), fn()))

    def commit(self, counters=None):
        if counters is not None:  # a round's commit (a fresh state commits with none)
            seen.append(dict(counters))
        return real_commit(self, counters)

    monkeypatch.setattr(sr, "Background", Late)
    monkeypatch.setattr(RunState, "commit", commit)
    run_sampling(cfg(num_videos=2, videos_in_flight=1), tmp_path / "run", progress=False)
    rounds = [c["rounds"] for c in seen]
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) > 2
    nfe = [c["nfe"] for c in seen]
    assert nfe == [2 * r for r in rounds]  # autoreg: one job of 2 steps per round
