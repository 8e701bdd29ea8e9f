"""video_io: round trips per format, the strip, the pixel convention, and errors naming the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from fdm_engine.errors import FdmError
from fdm_engine.video_io import from_uint8, read_npz_frames, read_video, to_uint8, write_strip, write_video


def smooth_video(t=8, h=32, w=32, c=3):
    """A slowly moving colour gradient: [T, H, W, C] uint8, easy on a lossy codec."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        chans = [128 + 100 * np.sin((x + 2 * i) / 9 + k) * np.cos((y - i) / 11) for k in range(c)]
        frames.append(np.stack(chans, -1))
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_uint8_round_trip_is_exact():
    u = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    x = from_uint8(u)
    assert x.shape == (5, 3, 7, 9) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), u)
    assert np.array_equal(to_uint8(x.numpy()), u)
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert np.array_equal(to_uint8(from_uint8(every)), every)


def test_to_uint8_clips_and_keeps_leading_dims():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 7.0]).reshape(1, 1, 1, 1, 5).expand(2, 4, 1, 3, 5)
    u = to_uint8(x)  # [B, T, H, W, C]
    assert u.shape == (2, 4, 3, 5, 1)
    assert u[0, 0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("size", [(32, 32), (33, 31)], ids=["even", "odd"])
def test_mp4_round_trip_within_codec_error(tmp_path, size):
    v = smooth_video(10, *size)
    path = write_video(tmp_path / "a.mp4", v, fps=10)
    r = read_video(path)
    h, w = size
    assert r.shape == (10, h + h % 2, w + w % 2, 3)  # odd sizes padded for yuv420p
    err = np.abs(r[:, :h, :w].astype(int) - v.astype(int)).mean()
    assert err < 4, err
    assert read_video(path, max_frames=4).shape[0] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_avi_is_lossless(tmp_path):
    v = smooth_video(5, 16, 24)
    assert np.array_equal(read_video(write_video(tmp_path / "a.avi", v)), v)


def test_gif_round_trip_with_repeated_frames(tmp_path):
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (40, 3), dtype=np.uint8)  # few colours: GIF keeps them exactly
    v = palette[rng.integers(0, 40, (6, 12, 10))]
    v[2] = v[1]  # Pillow merges identical consecutive frames; the reader must expand them back
    v[3] = v[1]
    r = read_video(write_video(tmp_path / "a.gif", v, fps=20))
    assert r.shape == v.shape
    assert np.array_equal(r, v)
    assert read_video(tmp_path / "a.gif", max_frames=3).shape[0] == 3


def test_grey_frames_become_rgb_in_videos_and_stay_grey_in_npy(tmp_path):
    v = smooth_video(4, 16, 16, c=1)
    assert read_video(write_video(tmp_path / "g.gif", v)).shape == (4, 16, 16, 3)
    assert np.array_equal(read_video(write_video(tmp_path / "g.npy", v)), v)


def test_pt_is_read_with_weights_only(tmp_path):
    v = smooth_video(4, 8, 8)
    torch.save(torch.from_numpy(v), tmp_path / "v.pt")
    assert np.array_equal(read_video(tmp_path / "v.pt"), v)
    assert np.array_equal(read_video(tmp_path / "v.pt", max_frames=2), v[:2])


def test_strip_size(tmp_path):
    v = smooth_video(40, 12, 10)
    img = Image.open(write_strip(tmp_path / "s.png", v, max_frames=16))
    assert img.size == (16 * 10, 12)
    img = Image.open(write_strip(tmp_path / "t.png", v[:3], max_frames=16))
    assert img.size == (3 * 10, 12)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100], ids=["empty", "garbage"])
@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".npy", ".pt"])
def test_corrupt_files_raise_fdm_error_naming_the_file(tmp_path, suffix, content):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(FdmError, match="bad"):
        read_video(path)


def test_truncated_mp4_and_missing_file(tmp_path):
    path = write_video(tmp_path / "t.mp4", smooth_video(10, 16, 16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FdmError, match="t.mp4"):
        read_video(path)
    with pytest.raises(FdmError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")


def test_wrong_dtype_or_shape(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((3, 4, 4, 3), np.float32))
    with pytest.raises(FdmError, match="f.npy.*uint8"):
        read_video(tmp_path / "f.npy")
    np.save(tmp_path / "s.npy", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(FdmError, match="s.npy.*shape"):
        read_video(tmp_path / "s.npy")
    with pytest.raises(FdmError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 4, 4, 3), np.float32))


def test_probe_reads_headers(tmp_path):
    from fdm_engine.video_io import probe_video

    v = smooth_video(7, 10, 12)
    np.save(tmp_path / "v.npy", v)
    torch.save(torch.from_numpy(v), tmp_path / "v.pt")
    write_video(tmp_path / "v.gif", v)
    write_video(tmp_path / "v.mp4", v)
    for name in ("v.npy", "v.pt", "v.gif"):
        assert tuple(probe_video(tmp_path / name)) == (7, 10, 12, 3, True)
    assert probe_video(tmp_path / "v.mp4")[:4] == (7, 10, 12, 3)
    np.save(tmp_path / "f.npy", v.astype(np.float32))
    with pytest.raises(FdmError, match="f.npy.*uint8"):
        probe_video(tmp_path / "f.npy")


def test_pickled_arrays_are_refused_without_numpys_advice_to_load_them_unsafely(tmp_path):
    objects = np.array([object(), object()], dtype=object)
    np.savez(tmp_path / "video_0000.npz", frames=objects)
    np.save(tmp_path / "clip.npy", objects)
    for read, path in ((read_npz_frames, tmp_path / "video_0000.npz"), (read_video, tmp_path / "clip.npy")):
        with pytest.raises(FdmError, match="pickled Python objects, which fdm never loads") as e:
            read(path)
        assert "allow_pickle" not in str(e.value) and str(path) in str(e.value)
    np.savez(tmp_path / "video_0001.npz", frames=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    assert read_npz_frames(tmp_path / "video_0001.npz").shape == (2, 4, 4, 3)
