"""Datasets: published formats read back exactly, video folders, directory resolution, windows,
and bad data (FdmError naming the file; skip_bad warns and skips)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fdm_engine.datasets import (
    DATASETS,
    BadVideoWarning,
    detect_dataset,
    open_dataset,
    parse_dataset_ref,
    resolve_data_dir,
    validate,
)
from fdm_engine.errors import FdmError
from fdm_engine.video_io import from_uint8, write_video


def video(seed, t=12, h=8, w=8, c=3):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, c), dtype=np.uint8)


def write_npy_dataset(root, train=11, test=2, **shape):
    """minerl / mazes_cwvae layout: {split}/{n}.npy. 11 train videos so 10.npy sorts after 9.npy."""
    videos = {}
    for split, count in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        for n in range(count):
            videos[split, n] = video(100 * (split == "test") + n, **shape)
            np.save(root / split / f"{n}.npy", videos[split, n])
    return videos


def write_carla_dataset(root, train=3, test=2, **shape):
    """carla_no_traffic layout, CSVs as the published script writes them (absolute foreign paths)."""
    root.mkdir(parents=True, exist_ok=True)
    videos, coords = [], []
    for i in range(train + test):
        videos.append(video(i, **shape))
        coords.append(np.random.default_rng(i).normal(size=(len(videos[-1]), 3)).astype(np.float32))
        torch.save(torch.from_numpy(videos[-1]), root / f"video_{i}.pt")
        np.save(root / f"coords_{i}.npy", coords[-1])
    for split, idx in (("train", range(train)), ("test", range(train, train + test))):
        rows = "".join(f"{k},/home/someone/carla/no-traffic/video_{i}.pt\n" for k, i in enumerate(idx))
        (root / f"video_{split}.csv").write_text(",path\n" + rows)
    return videos, coords


# --------------------------------------------------------------------------- published formats


@pytest.mark.parametrize("name", ["minerl", "mazes_cwvae"])
def test_npy_splits_read_back_exactly(tmp_path, name):
    videos = write_npy_dataset(tmp_path / name)
    for split, count in (("train", 11), ("test", 2)):
        ds = open_dataset(name, tmp_path / name, split)
        assert len(ds) == count and ds.video_length == 12 and ds.image_size == 8 and ds.channels == 3
        for n in range(count):
            assert np.array_equal(ds.read(n), videos[split, n])
            assert torch.equal(ds.clip(n), from_uint8(videos[split, n]))
    assert ds.path(1).name == "1.npy"
    assert open_dataset(name, tmp_path / name).path(10).name == "10.npy"
    assert detect_dataset(tmp_path / name) == name  # the folder's name picks among npy datasets


def test_carla_reads_back_exactly_with_coords(tmp_path):
    videos, coords = write_carla_dataset(tmp_path / "carla")
    train = open_dataset("carla_no_traffic", tmp_path / "carla", "train")
    test = open_dataset("carla_no_traffic", tmp_path / "carla", "test")
    assert (len(train), len(test)) == (3, 2)
    for ds, offset in ((train, 0), (test, 3)):
        for k in range(len(ds)):
            assert np.array_equal(ds.read(k), videos[offset + k])
            assert np.array_equal(ds.state(k)["coords"], coords[offset + k])
    x = test.clip(1, length=5, start=4)
    assert torch.equal(x, from_uint8(videos[4][4:9]))
    assert detect_dataset(tmp_path / "carla") == "carla_no_traffic"


# --------------------------------------------------------------------------- video folders


def smooth(t, h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = [np.stack([128 + 90 * np.sin((x + 2 * i) / 7 + k) * np.cos(y / 9) for k in range(3)], -1) for i in range(t)]
    return np.clip(f, 0, 255).astype(np.uint8)


def test_folder_round_trips_mp4_within_codec_error(tmp_path):
    v = smooth(9, 32, 32)
    write_video(tmp_path / "clips" / "a" / "one.mp4", v)
    write_video(tmp_path / "clips" / "two.gif", v[:, :, :, :1].repeat(3, -1) // 64 * 64)
    ds = open_dataset("folder", tmp_path / "clips")
    assert [p.name for p in ds.paths] == ["one.mp4", "two.gif"]  # recursive, sorted by path
    r = ds.read(0)
    assert r.shape == v.shape
    assert np.abs(r.astype(int) - v.astype(int)).mean() < 4
    x = ds.clip(0, length=4, start=2)
    assert x.shape == (4, 3, 32, 32)
    assert (x - from_uint8(v[2:6])).abs().mean() < 4 / 127.5
    assert detect_dataset(tmp_path / "clips") == "folder"


def test_folder_resizes_and_centre_crops(tmp_path):
    v = np.zeros((3, 16, 32, 3), np.uint8)
    v[:, :, 8:24] = 255  # a white centre square between black side bands
    write_video(tmp_path / "wide.avi", v)  # lossless
    ds = open_dataset("folder", tmp_path, image_size=8)
    x = ds.clip(0)
    assert x.shape == (3, 3, 8, 8) and ds.image_size == 8
    assert torch.allclose(x, torch.ones_like(x))  # the crop kept only the white centre


def test_folder_ucf_split_lists(tmp_path):
    for cls in ("ApplyEyeMakeup", "Archery"):
        for g in (1, 8):
            write_video(tmp_path / "UCF-101" / cls / f"v_{cls}_g{g:02d}_c01.avi", video(g, t=3))
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                           "Archery/v_Archery_g08_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    train = open_dataset("folder", tmp_path, "train")
    test = open_dataset("folder", tmp_path, "test")
    assert [p.name for p in train.paths] == ["v_ApplyEyeMakeup_g08_c01.avi", "v_Archery_g08_c01.avi"]
    assert [p.name for p in test.paths] == ["v_ApplyEyeMakeup_g01_c01.avi"]
    assert np.array_equal(test.read(0), video(1, t=3))
    (lists / "testlist01.txt").write_text("Nope/v_Nope_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    with pytest.raises(FdmError, match="testlist01.txt.*v_Nope_g01_c01.avi"):
        open_dataset("folder", tmp_path, "test")
    with pytest.warns(BadVideoWarning, match="v_Nope"):
        assert len(open_dataset("folder", tmp_path, "test", skip_bad=True)) == 1


# --------------------------------------------------------------------------- where data lives


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FDM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FdmError, match=r"datasets/minerl.*--data-dir.*FDM_DATA_DIR"):
        resolve_data_dir("minerl")
    (tmp_path / "datasets" / "minerl").mkdir(parents=True)
    assert resolve_data_dir("minerl") == tmp_path / "datasets" / "minerl"
    monkeypatch.setenv("FDM_DATA_DIR", str(tmp_path / "store"))
    with pytest.raises(FdmError, match=r"store/minerl.*FDM_DATA_DIR"):
        resolve_data_dir("minerl")
    (tmp_path / "store" / "minerl").mkdir(parents=True)
    assert resolve_data_dir("minerl") == tmp_path / "store" / "minerl"
    assert resolve_data_dir("minerl", tmp_path) == tmp_path  # --data-dir wins
    with pytest.raises(FdmError, match="--data-dir .*nope"):
        resolve_data_dir("minerl", tmp_path / "nope")


def test_open_dataset_by_default_dir_and_unknown_name(tmp_path, monkeypatch):
    monkeypatch.delenv("FDM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    write_npy_dataset(tmp_path / "datasets" / "mazes_cwvae", train=2, test=1)
    assert len(open_dataset("mazes_cwvae", split="test")) == 1
    with pytest.raises(FdmError, match="unknown dataset 'mnist'.*carla_no_traffic"):
        open_dataset("mnist")
    assert {"carla_no_traffic", "minerl", "mazes_cwvae", "folder", "bouncing-balls"} <= set(DATASETS.names())


def test_parse_dataset_ref():
    assert parse_dataset_ref("minerl") == ("minerl", "test", 0)
    assert parse_dataset_ref("minerl:train:3") == ("minerl", "train", 3)
    with pytest.raises(FdmError, match="index"):
        parse_dataset_ref("minerl:test:x")


# --------------------------------------------------------------------------- windows


def test_training_windows_are_seeded_and_eval_windows_start_at_zero(tmp_path):
    videos = write_npy_dataset(tmp_path, train=4, test=1, t=30)
    ds = open_dataset("minerl", tmp_path)
    clips = ds.windows(10, train=True, seed=7)
    a = [clips[i] for i in range(4)]
    assert all(x.shape == (10, 3, 8, 8) for x in a)
    starts = []
    for i, x in enumerate(a):
        full = from_uint8(videos["train", i])
        s = [s for s in range(21) if torch.equal(full[s:s + 10], x)]
        assert s, "a window must be 10 consecutive frames of its video"
        starts.append(s[0])
    assert all(torch.equal(x, y) for x, y in zip(a, [ds.windows(10, seed=7)[i] for i in range(4)], strict=True))
    assert len(set(starts)) > 1  # not all from frame 0
    clips.set_epoch(1)
    assert any(not torch.equal(clips[i], a[i]) for i in range(4))
    evaluation = ds.windows(10, train=False)
    assert torch.equal(evaluation[2], from_uint8(videos["train", 2][:10]))
    batch = next(iter(DataLoader(clips, batch_size=3)))
    assert batch.shape == (3, 10, 3, 8, 8) and batch.dtype == torch.float32


# --------------------------------------------------------------------------- bad data


def test_missing_folder_and_empty_or_missing_split(tmp_path):
    with pytest.raises(FdmError, match="nope"):
        open_dataset("minerl", tmp_path / "nope")
    (tmp_path / "train").mkdir()
    with pytest.raises(FdmError, match="train.*no N.npy"):
        open_dataset("minerl", tmp_path, "train")
    with pytest.raises(FdmError, match="test: no such folder"):
        open_dataset("minerl", tmp_path, "test")
    (tmp_path / "video_train.csv").write_text(",path\n")
    with pytest.raises(FdmError, match="video_train.csv: lists no videos"):
        open_dataset("carla_no_traffic", tmp_path, "train")
    with pytest.raises(FdmError, match="video_test.csv: no such file"):
        open_dataset("carla_no_traffic", tmp_path, "test")


@pytest.mark.parametrize("problem", ["corrupt", "truncated", "dtype", "shape", "frame-size"])
def test_bad_npy_files_are_named_or_skipped(tmp_path, problem):
    write_npy_dataset(tmp_path, train=3, test=1)
    bad = tmp_path / "train" / "1.npy"
    if problem == "corrupt":
        bad.write_bytes(b"\x93NUMPY garbage" * 10)
    elif problem == "truncated":
        bad.write_bytes(bad.read_bytes()[:500])
    elif problem == "dtype":
        np.save(bad, video(1).astype(np.float32))
    elif problem == "shape":
        np.save(bad, video(1)[..., 0])  # [T, H, W]: no channel axis
    else:
        np.save(bad, video(1, h=9))
    ds = open_dataset("minerl", tmp_path)  # headers are read lazily without skip_bad
    with pytest.raises(FdmError, match="train/1.npy"):
        ds.read(1)
    with pytest.raises(FdmError, match="train/1.npy"):
        validate(ds)
    with pytest.warns(BadVideoWarning, match="train/1.npy"):
        ds = open_dataset("minerl", tmp_path, skip_bad=True)
    assert [p.name for p in ds.paths] == ["0.npy", "2.npy"]
    assert validate(ds).bad == []


def test_bad_carla_files(tmp_path):
    write_carla_dataset(tmp_path, train=3, test=1)
    (tmp_path / "video_1.pt").unlink()
    (tmp_path / "video_2.pt").write_bytes(b"PK\x03\x04 not really a zip")
    ds = open_dataset("carla_no_traffic", tmp_path)
    with pytest.raises(FdmError, match="video_1.pt: no such file"):
        ds.read(1)
    with pytest.raises(FdmError, match="video_2.pt"):
        ds.read(2)
    with pytest.warns(BadVideoWarning) as record:
        ds = open_dataset("carla_no_traffic", tmp_path, skip_bad=True)
    assert len(ds) == 1 and sorted(str(w.message).split(":")[0][-10:] for w in record) == ["video_1.pt", "video_2.pt"]


def test_corrupt_and_truncated_mp4_in_a_folder(tmp_path):
    write_video(tmp_path / "good.mp4", smooth(6, 16, 16))
    write_video(tmp_path / "cut.mp4", smooth(6, 16, 16))
    data = (tmp_path / "cut.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    ds = open_dataset("folder", tmp_path)
    with pytest.raises(FdmError, match="cut.mp4"):
        validate(ds)
    with pytest.warns(BadVideoWarning):
        ds = open_dataset("folder", tmp_path, skip_bad=True)
    assert [p.name for p in ds.paths] == ["good.mp4"]


def test_short_videos(tmp_path):
    write_npy_dataset(tmp_path, train=3, test=1)
    np.save(tmp_path / "train" / "2.npy", video(2, t=5))
    with pytest.raises(FdmError, match="train/2.npy: 5 frames, fewer than the 10 requested"):
        open_dataset("minerl", tmp_path, min_length=10)
    with pytest.warns(BadVideoWarning, match="2.npy"):
        assert len(open_dataset("minerl", tmp_path, min_length=10, skip_bad=True)) == 2
    ds = open_dataset("minerl", tmp_path)
    with pytest.raises(FdmError, match="train/2.npy: 5 frames, fewer than the 10"):
        ds.clip(2, 10)
    with pytest.raises(FdmError, match="train/2.npy"):
        ds.windows(10)[2]
    # skip_bad without min_length: the window loader warns and the next video stands in
    ds = open_dataset("minerl", tmp_path, skip_bad=True)
    clips = ds.windows(10, train=False)
    with pytest.warns(BadVideoWarning, match="2.npy"):
        x = clips[2]
    assert torch.equal(x, ds.clip(0, 10))


def test_index_out_of_range_names_the_split(tmp_path):
    write_npy_dataset(tmp_path, train=2, test=1)
    with pytest.raises(FdmError, match="index 5 out of range.*'test'.*1 videos"):
        open_dataset("minerl", tmp_path, "test").clip(5, 4)
