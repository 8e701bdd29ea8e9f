"""Reading and writing videos, and the one pixel convention every module shares.

Two layouts exist and nothing else:

    on disk / for viewing   uint8  [T, H, W, C]   C = 1 (grey) or 3 (RGB), values 0..255
    for models              float  [T, C, H, W]   values in [-1, 1]   (leading dims allowed)

`to_uint8` and `from_uint8` convert between them (v = u / 127.5 - 1, u = round((v + 1) * 127.5)
clipped to 0..255), so a uint8 video survives a round trip through model space bit-exactly.

Formats, chosen by suffix:

    .mp4   write: moviepy + libx264, yuv420p, crf 18; read: ffmpeg (imageio-ffmpeg)
    .avi   write: moviepy + png codec (lossless);      read: ffmpeg
    .gif   write/read: Pillow (palette of 256 colours per frame)
    .npy   write/read: numpy, exact
    .pt    read only: a uint8 tensor [T, H, W, C] saved by torch.save (CARLA's format)

Choices worth knowing:
- yuv420p needs even H and W; an odd-sized video is padded by repeating its last row/column, so
  it plays everywhere (yuv444p would keep the size but many players refuse it). `read_video`
  returns the padded size.
- Pillow merges identical consecutive GIF frames into one longer frame. Our GIFs record their
  frame duration in a comment, so `read_video` expands merged frames back; a foreign GIF is read
  frame by frame as stored.
- moviepy's ImageSequenceClip can drop the last frame to float rounding; we hand moviepy a
  VideoClip with a nearest-frame lookup instead, so T frames in means T frames out.
- Every write goes to a temporary file beside the target and is moved into place with
  os.replace, so a reader never sees half a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from fdm_engine.errors import FdmError
from fdm_engine.files import atomic_write  # noqa: F401  (re-exported: writers of datasets use it)

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif")  # what a folder of videos may hold
_GIF_COMMENT = "fdm frame_ms="


# --------------------------------------------------------------------------- pixel convention


def to_uint8(x) -> np.ndarray:
    """Model space to viewing space: float [..., C, H, W] in [-1, 1] -> uint8 [..., H, W, C].

    Values outside [-1, 1] are clipped; rounding is to nearest. Accepts a tensor or an array.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 3:
        raise ValueError(f"to_uint8 expects [..., C, H, W], got shape {x.shape}")
    u = np.add(x, 1.0, dtype=np.float32)  # one scratch array, the same arithmetic in place
    np.multiply(u, 127.5, out=u)
    np.rint(u, out=u)
    np.clip(u, 0, 255, out=u)
    return np.moveaxis(u, -3, -1).astype(np.uint8, order="C")


def from_uint8(u) -> torch.Tensor:
    """Viewing space to model space: uint8 [..., H, W, C] -> float32 tensor [..., C, H, W] in [-1, 1]."""
    if isinstance(u, torch.Tensor):
        if u.dtype != torch.uint8 or u.ndim < 3:
            raise ValueError(f"from_uint8 expects uint8 [..., H, W, C], got {u.dtype} {tuple(u.shape)}")
        return u.movedim(-1, -3).to(torch.float32) / 127.5 - 1.0
    u = np.asarray(u)
    if u.dtype != np.uint8 or u.ndim < 3:
        raise ValueError(f"from_uint8 expects uint8 [..., H, W, C], got {u.dtype} {u.shape}")
    # In numpy, not torch: data loaders call this per clip, and torch's intra-op threads make
    # such small ops ~50x slower when the cores are busy (measured: 300 ms vs 7 ms per batch).
    x = np.ascontiguousarray(np.moveaxis(u, -1, -3), dtype=np.float32)
    x /= 127.5
    x -= 1.0
    return torch.from_numpy(x)


# --------------------------------------------------------------------------- writing


def write_video(path, frames, fps: float = 10) -> Path:
    """Write uint8 frames [T, H, W, C] (C = 1 or 3) to `path` (.mp4, .avi, .gif or .npy).

    Grey frames are expanded to RGB for the video formats (.npy keeps them as they are).
    Returns the path written.
    """
    path = Path(path)
    frames = _check_frames_to_write(path, frames)
    writer = _WRITERS.get(path.suffix.lower())
    if writer is None:
        raise FdmError(f"{path}: cannot write {path.suffix!r} videos (use one of {', '.join(_WRITERS)})")
    if fps <= 0:
        raise FdmError(f"{path}: fps must be > 0 (got {fps})")
    with atomic_write(path) as tmp:
        writer(tmp, frames, fps)
    return path


def write_strip(path, frames, max_frames: int = 16) -> Path:
    """Write a PNG of up to `max_frames` evenly spaced frames side by side: [H, n * W, C].

    frames: uint8 [T, H, W, C]. The first and last frames are always included.
    """
    from PIL import Image

    path = Path(path)
    frames = _check_frames_to_write(path, frames)
    n = max(1, min(int(max_frames), len(frames)))
    idx = np.unique(np.rint(np.linspace(0, len(frames) - 1, n)).astype(int))
    strip = np.concatenate(list(frames[idx]), axis=1)  # [H, n * W, C]
    with atomic_write(path) as tmp:
        Image.fromarray(_rgb(strip[None])[0]).save(tmp, format="PNG")
    return path


def write_image(path, image: np.ndarray) -> Path:
    """Write uint8 [H, W, 3] as a PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def _check_frames_to_write(path: Path, frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3) or len(frames) == 0:
        raise FdmError(f"{path}: frames must be uint8 [T, H, W, C] with C in (1, 3) and T >= 1 "
                       f"(got {frames.dtype} {list(frames.shape)}); convert model output with to_uint8")
    return frames


def _rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, C] -> [T, H, W, 3]."""
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row/column where H or W is odd (yuv420p subsamples chroma by 2)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _moviepy_writer(codec: str, pixel_format: str, params: list[str]) -> Callable:
    def write(tmp: Path, frames: np.ndarray, fps: float) -> None:
        from moviepy import VideoClip  # heavy; only when a video is written

        frames = _rgb(frames)
        if pixel_format == "yuv420p":
            frames = _pad_even(frames)
        n = len(frames)
        # Not ImageSequenceClip: its duration is a float sum of 1/fps, and moviepy writes
        # int(duration * fps) frames, so the last frame can be lost (10 frames at 10 fps -> 9).
        # A half-frame margin and a nearest-frame lookup make the count exactly n.
        clip = VideoClip(lambda t: frames[min(int(round(t * fps)), n - 1)], duration=(n + 0.5) / fps)
        try:
            clip.write_videofile(str(tmp), fps=fps, codec=codec, audio=False, logger=None,
                                 pixel_format=pixel_format, ffmpeg_params=params)
        finally:
            clip.close()

    return write


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    # GIF stores durations in centiseconds; use exactly what the file can hold.
    frame_ms = max(1, round(100 / fps)) * 10
    images = [Image.fromarray(f) for f in _rgb(frames)]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms,
                   loop=0, comment=f"{_GIF_COMMENT}{frame_ms}".encode())


def _write_npy(tmp: Path, frames: np.ndarray, fps: float) -> None:
    with open(tmp, "wb") as f:  # a file object, so numpy does not append another ".npy"
        np.save(f, frames, allow_pickle=False)


_WRITERS: dict[str, Callable[[Path, np.ndarray, float], None]] = {
    ".mp4": _moviepy_writer("libx264", "yuv420p", ["-crf", "18"]),
    ".avi": _moviepy_writer("png", "rgb24", []),
    ".gif": _write_gif,
    ".npy": _write_npy,
}


# --------------------------------------------------------------------------- reading


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """Read a video as uint8 [T, H, W, C] (.mp4/.avi/.gif decode to C = 3; .npy/.pt as stored).

    max_frames: read only the first frames (decoding stops early for .mp4/.avi; .npy and .pt
    are memory-mapped, so a short window of a long video costs little).
    Raises FdmError naming the file when it is missing, unreadable, or not uint8 [T, H, W, C].
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise FdmError(f"{path}: cannot read {path.suffix!r} videos (use one of {', '.join(_READERS)})")
    if not path.is_file():
        raise FdmError(f"{path}: no such file")
    try:
        frames = reader(path, max_frames)
    except FdmError:
        raise
    except Exception as e:  # decoders raise anything from OSError to EOFError on bad bytes
        raise FdmError(f"{path}: cannot read video ({_one_line(e)})") from e
    return check_video(path, frames)


def check_video(path, frames) -> np.ndarray:
    """Return frames as a uint8 array [T, H, W, C], or raise FdmError naming `path`."""
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    if not isinstance(frames, np.ndarray):
        raise FdmError(f"{path}: expected a uint8 array [T, H, W, C], got {type(frames).__name__}")
    _check_layout(path, str(frames.dtype), frames.shape)
    return frames


def _check_layout(path, dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if dtype != "uint8":
        raise FdmError(f"{path}: expected uint8 pixels, got {dtype}")
    if len(shape) != 4 or shape[-1] not in (1, 3) or min(shape) == 0:
        raise FdmError(f"{path}: expected shape [T, H, W, C] with C in (1, 3), got {list(shape)}")
    return shape


class VideoMeta(NamedTuple):
    """What `probe_video` learns without decoding every frame."""

    num_frames: int  # exact when `exact`, else ffmpeg's estimate from duration * fps
    height: int
    width: int
    channels: int
    exact: bool


def probe_video(path) -> VideoMeta:
    """Frame count and frame size of a video, cheaply: .npy/.pt read only their headers (memory
    mapping), .mp4/.avi ask ffmpeg (an estimate), .gif is decoded. FdmError names a bad file."""
    path = Path(path)
    if path.suffix.lower() not in _READERS:
        raise FdmError(f"{path}: cannot read {path.suffix!r} videos (use one of {', '.join(_READERS)})")
    if not path.is_file():
        raise FdmError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".mp4", ".avi"):
            return _probe_ffmpeg(path)
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        elif path.suffix.lower() == ".pt":
            arr = _load_pt(path)
        else:
            arr = _read_gif(path, None)
    except FdmError:
        raise
    except Exception as e:
        raise FdmError(f"{path}: cannot read video ({_one_line(e)})") from e
    dtype = str(arr.dtype).removeprefix("torch.")  # numpy and torch name dtypes alike
    t, h, w, c = _check_layout(path, dtype, tuple(arr.shape))
    return VideoMeta(t, h, w, c, exact=True)


def _probe_ffmpeg(path: Path) -> VideoMeta:
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(gen)
    finally:
        gen.close()
    w, h = meta["size"]
    n = int(round(meta.get("fps", 0) * meta.get("duration", 0)))
    return VideoMeta(n, h, w, 3, exact=False)


def _read_ffmpeg(path: Path, max_frames: int | None) -> np.ndarray:
    import imageio_ffmpeg

    out = ["-frames:v", str(int(max_frames))] if max_frames else None
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=out)
    try:
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    finally:
        gen.close()
    if not frames:
        raise FdmError(f"{path}: no frames could be decoded")
    return np.stack(frames)


def _read_gif(path: Path, max_frames: int | None) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        comment = im.info.get("comment", b"").decode("latin-1")
        frame_ms = int(comment[len(_GIF_COMMENT):]) if comment.startswith(_GIF_COMMENT) else None
        frames = []
        for f in ImageSequence.Iterator(im):
            # Our writer's merged frames carry k * frame_ms; expand them back to k frames.
            repeat = max(1, round(f.info.get("duration", 0) / frame_ms)) if frame_ms else 1
            frames += [np.asarray(f.convert("RGB"))] * repeat
            if max_frames and len(frames) >= max_frames:
                break
    return np.stack(frames[:max_frames] if max_frames else frames)


def _read_npy(path: Path, max_frames: int | None) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.array(arr[:max_frames] if max_frames else arr)


def _read_pt(path: Path, max_frames: int | None) -> np.ndarray:
    t = _load_pt(path)
    return np.array((t[:max_frames] if max_frames else t).numpy())  # copy out of the memory map


def _load_pt(path: Path) -> torch.Tensor:
    # weights_only: a tensor file must never run code. mmap: read only the frames we slice.
    try:
        t = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # files from torch < 1.6 (not zip) cannot be memory-mapped
            raise
        t = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(t, torch.Tensor):
        raise FdmError(f"{path}: expected a uint8 tensor [T, H, W, C], got {type(t).__name__}")
    return t


_READERS: dict[str, Callable[[Path, int | None], np.ndarray]] = {
    ".mp4": _read_ffmpeg,
    ".avi": _read_ffmpeg,
    ".gif": _read_gif,
    ".npy": _read_npy,
    ".pt": _read_pt,
}


def read_npz_frames(path) -> np.ndarray:
    """The `frames` array of a sample's .npz (what `fdm sample` writes), checked uint8 [T, H, W, C]."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            frames = z["frames"]
    except Exception as e:
        raise FdmError(f"{path}: cannot read samples ({_one_line(e)})") from e
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise FdmError(f"{path}: `frames` must be uint8 [T, H, W, C] (got {frames.dtype} {list(frames.shape)})")
    return frames


def _one_line(e: BaseException) -> str:
    if "pickle" in str(e).lower() or "python objects" in str(e).lower():  # numpy's advice: load it unsafely
        return "it holds pickled Python objects, which fdm never loads; save the frames as a uint8 array"
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]
