"""Procedural datasets: deterministic per seed, readable by name in every layout, and their
saved state matches the pixels."""

import json
import tempfile

import numpy as np
import pytest

from fdm_engine.datasets import GENERATORS, detect_dataset, make_dataset, open_dataset, validate
from fdm_engine.datasets.procedural.digits import glyph
from fdm_engine.errors import FdmError

NAMES = ["bouncing-balls", "moving-digits", "revisit-world"]


def make(tmp_path, name, seed=0, layout="npy", n=3, length=24, size=32, **kw):
    out = tempfile.mkdtemp(prefix=f"{name}-{layout}-", dir=tmp_path)  # a fresh, empty folder
    return make_dataset(name, out, n, length, size, seed=seed, format=layout, **kw)


def all_videos(root, name):
    return [open_dataset(name, root, s).read(i) for s in ("train", "test")
            for i in range(len(open_dataset(name, root, s)))]


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_videos_other_seed_other_videos(tmp_path, name):
    a = all_videos(make(tmp_path, name, seed=1), name)
    b = all_videos(make(tmp_path, name, seed=1), name)
    c = all_videos(make(tmp_path, name, seed=2), name)
    assert len(a) == 4  # 3 train + max(1, 3 // 10) test
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not np.array_equal(a[0], a[1])  # videos differ within a dataset too
    # Video n depends on (seed, split, n) only, not on how many were made.
    more = all_videos(make(tmp_path, name, seed=1, n=5), name)
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], more[:3], strict=True))


@pytest.mark.parametrize("layout", ["npy", "carla", "mp4"])
@pytest.mark.parametrize("name", NAMES)
def test_made_datasets_open_by_name_in_every_layout(tmp_path, name, layout):
    root = make(tmp_path, name, layout=layout, n=2, length=10, size=16, num_test=1)
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["name"] == name and manifest["format"] == layout and manifest["seed"] == 0
    assert detect_dataset(root) == name
    for split, count in (("train", 2), ("test", 1)):
        ds = open_dataset(name, root, split)
        assert len(ds) == count and ds.video_length == 10 and ds.image_size == 16
        assert validate(ds).checked == count
        assert ds.clip(0, 6, np.random.default_rng(0)).shape[:1] == (6,)
        assert set(ds.state(0)) >= {GENERATORS.get(name).coords_key}
    exact = all_videos(make(tmp_path, name, layout="npy", n=2, length=10, size=16, num_test=1), name)
    got = all_videos(root, name)
    for x, y in zip(exact, got, strict=True):
        err = np.abs(np.asarray(x, int) - np.asarray(y[..., : x.shape[-1]], int)).mean()
        assert err == 0 if layout != "mp4" else err < 12  # mp4 is lossy (and tiny frames are hard)
    if layout == "carla":
        ds = open_dataset(name, root)
        coords = np.load(root / "coords_0.npy")
        assert np.allclose(coords, ds.state(0)[GENERATORS.get(name).coords_key].reshape(10, -1))


def test_ball_centres_have_the_ball_colour(tmp_path):
    root = make(tmp_path, "bouncing-balls", n=3, length=40, size=32)
    checked = 0
    for i in range(3):
        ds = open_dataset("bouncing-balls", root)
        frames, s = ds.read(i), ds.state(i)
        centres, radii, colours = s["centres"], s["radii"], s["colours"]
        assert centres.shape == (40, len(radii), 2) and frames.shape == (40, 32, 32, 3)
        assert ((centres >= radii[:, None] - 1e-4) & (centres <= 32 - radii[:, None] + 1e-4)).all()
        for t in range(40):
            for k, (x, y) in enumerate(centres[t]):
                px = np.array([np.floor(x) + 0.5, np.floor(y) + 0.5])
                # Skip a centre pixel that a ball drawn later (on top) reaches.
                if any(np.hypot(*(px - centres[t, j])) < radii[j] + 1 for j in range(k + 1, len(radii))):
                    continue
                assert np.array_equal(frames[t, int(y), int(x)], colours[k]), (i, t, k)
                checked += 1
        # The balls move: the centres are not constant.
        assert np.abs(np.diff(centres, axis=0)).max() > 0.1
    assert checked > 200


def test_digit_positions_match_the_pixels(tmp_path):
    root = make(tmp_path, "moving-digits", n=2, length=30, size=48)
    ds = open_dataset("moving-digits", root)
    for i in range(2):
        frames, s = ds.read(i)[..., 0], ds.state(i)
        pos, digits = s["positions"], s["digits"]
        glyphs = [glyph(int(d), int(h)) for d, (h, w) in zip(digits, s["glyph_shapes"], strict=True)]
        assert [g.shape for g in glyphs] == [tuple(x) for x in s["glyph_shapes"]]
        for t in range(30):
            inside = np.zeros((48, 48), bool)
            for g, (x, y) in zip(glyphs, pos[t], strict=True):
                h, w = g.shape
                assert 0 <= x <= 48 - w and 0 <= y <= 48 - h
                assert (frames[t, y:y + h, x:x + w] >= g).all()  # the glyph is drawn there
                inside[y:y + h, x:x + w] = True
            assert not frames[t][~inside].any()  # and nothing is drawn anywhere else
        assert len(np.unique(pos[:, 0], axis=0)) > 5  # it moves


def test_revisited_poses_show_the_same_view(tmp_path):
    root = make(tmp_path, "revisit-world", n=2, length=60, size=24)
    ds = open_dataset("revisit-world", root)
    for i in range(2):
        frames, s = ds.read(i), ds.state(i)
        pose, period, world = s["pose"], int(s["period"]), s["world"]
        assert 2 <= period < 60 and world.shape == (96, 96, 3)
        revisits = 0
        for a in range(60):
            x, y = pose[a]
            assert np.array_equal(frames[a], world[y:y + 24, x:x + 24])
            for b in range(a + 1, 60):
                if (pose[a] == pose[b]).all():
                    assert np.array_equal(frames[a], frames[b])
                    revisits += 1
        assert revisits >= 60 - period  # every frame after the first loop is a revisit
        step = np.abs(np.diff(pose[:period], axis=0)).max()
        assert 0 < step < 24  # the camera moves, and consecutive views overlap


def test_make_refuses_bad_arguments(tmp_path):
    with pytest.raises(FdmError, match="unknown procedural dataset 'balls'"):
        make_dataset("balls", tmp_path / "a", 2, 10, 16)
    with pytest.raises(FdmError, match="--num-videos"):
        make_dataset("bouncing-balls", tmp_path / "a", 0, 10, 16)
    with pytest.raises(FdmError, match="--size"):
        make_dataset("bouncing-balls", tmp_path / "a", 2, 10, 4)
    with pytest.raises(FdmError, match="unknown field.*radius"):
        make_dataset("bouncing-balls", tmp_path / "a", 2, 10, 16, params={"radius": 3})
    root = make_dataset("bouncing-balls", tmp_path / "b", 2, 10, 16, params={"num_balls": 5})
    assert len(open_dataset("bouncing-balls", root).state(0)["radii"]) == 5
    with pytest.raises(FdmError, match="not an empty folder"):
        make_dataset("bouncing-balls", root, 2, 10, 16)
    with pytest.raises(FdmError, match="holds 'bouncing-balls' data, not 'moving-digits'"):
        open_dataset("moving-digits", root)
    with pytest.raises(FdmError, match="dataset.json: no such file"):
        open_dataset("revisit-world", tmp_path)


def test_channels_and_size_conversion_on_open(tmp_path):
    """A grey dataset stored as RGB mp4 reads back as 1 channel; image_size resizes."""
    exact = make(tmp_path, "moving-digits", n=1, length=6, size=32, num_test=0)
    lossy = make(tmp_path, "moving-digits", layout="mp4", n=1, length=6, size=32, num_test=0)
    ref = open_dataset("moving-digits", exact).clip(0)  # [6, 1, 32, 32]
    ds = open_dataset("moving-digits", lossy, channels=1)
    assert ds.channels == 1 and ds.frame_shape == (32, 32, 3)
    x = ds.clip(0)
    assert x.shape == ref.shape and (x - ref).abs().mean() < 0.05
    small = open_dataset("moving-digits", exact, image_size=16, channels=3).clip(0, 2)
    assert small.shape == (2, 3, 16, 16) and small.min() >= -1 and small.max() <= 1
    assert (small - ref[:2, :, ::2, ::2]).abs().mean() < 0.2  # a fair downsampling


def test_an_interrupted_make_leaves_nothing_and_blocks_no_rerun(tmp_path, monkeypatch):
    from fdm_engine.datasets.procedural.balls import BouncingBalls

    made = []
    real = BouncingBalls.generate

    def interrupted(self, rng, length, size):
        if len(made) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the fourth video
        made.append(1)
        return real(self, rng, length, size)

    monkeypatch.setattr(BouncingBalls, "generate", interrupted)
    out = tmp_path / "data" / "balls"
    with pytest.raises(KeyboardInterrupt):
        make_dataset("bouncing-balls", out, 10, 6, 16)
    assert list((tmp_path / "data").iterdir()) == []  # neither OUT nor its partial sibling
    monkeypatch.setattr(BouncingBalls, "generate", real)
    (tmp_path / "data" / ".balls.partial-1-dead").mkdir()  # a SIGKILLed run's leftover
    out.mkdir()  # an empty OUT is fine
    make_dataset("bouncing-balls", out, 3, 6, 16, num_test=1)
    assert len(open_dataset("bouncing-balls", out, "train")) == 3
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # as a plain mkdir makes it


def _umask() -> int:
    import os

    old = os.umask(0)
    os.umask(old)
    return old


def test_conditioning_data_of_an_unknown_dataset_lists_the_known_ones():
    from fdm_engine.conditioning import open_conditioning_data
    from fdm_engine.errors import FdmError

    with pytest.raises(FdmError, match="bouncing-balls"):
        open_conditioning_data("bouncing-bals", "test", None, {}, image_size=32, channels=3, length=20)


def test_generated_conditioning_is_refused_when_the_runs_checkpoint_cannot_be_read():
    """Without the checkpoint's recorded generator settings the generated videos could be others."""
    from fdm_engine.conditioning import open_conditioning_data
    from fdm_engine.errors import FdmError

    with pytest.raises(FdmError, match="cannot be read"):
        open_conditioning_data("bouncing-balls", "test", None, None, image_size=32, channels=3, length=20)
