"""Videos a browser plays from disk: H.264 in mp4, yuv420p, even width and height, index up front.

fdm's writer (fdm_engine/video_io.py) already makes such files (libx264, yuv420p, padded to even
sizes), so those are remuxed without re-encoding (`-c copy`, only moving the index to the front so
playback starts before the whole file is read). Anything else (a gif, an npz, an mp4 of another
codec or pixel format) is encoded with the ffmpeg binary that imageio-ffmpeg ships.

Every file is probed first with `ffmpeg -c copy -f null`: it reads each packet without decoding, so
it is cheap, gives the exact frame count, and fails on a truncated or corrupt file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fdm_engine.errors import FdmError

BROWSER_CODEC, BROWSER_PIX_FMT = "h264", "yuv420p"
_STREAM = re.compile(r"Stream #0:\d+[^:]*: Video: (\w+)[^,]*, (\w+)[^,]*,.*?(\d+)x(\d+)")
_FPS = re.compile(r"([\d.]+) fps")
_FRAMES = re.compile(r"frame=\s*(\d+)")


class VideoInfo(NamedTuple):
    frames: int
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: str

    @property
    def browser_ready(self) -> bool:
        return (self.codec == BROWSER_CODEC and self.pix_fmt == BROWSER_PIX_FMT
                and self.width % 2 == 0 and self.height % 2 == 0)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(args: list[str], what: Path, stdin: bytes | None = None) -> str:
    """Run ffmpeg; its log (stderr) on success, FdmError naming `what` on failure."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args], input=stdin,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
        raise FdmError(f"{what}: cannot read video ({lines[-1][:200] if lines else 'ffmpeg failed'})")
    return log


def probe(path: Path) -> VideoInfo:
    """Frame count, fps, size, codec and pixel format of the first video stream of `path`."""
    path = Path(path)
    if not path.is_file():
        raise FdmError(f"{path}: no such file")
    log = _ffmpeg(["-v", "info", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"], path)
    head = log.split("Output #0")[0]
    stream = _STREAM.search(head)
    frames = _FRAMES.findall(log)
    if stream is None or not frames or int(frames[-1]) == 0:
        raise FdmError(f"{path}: cannot read video (no video frames found)")
    fps = _FPS.search(head[stream.start():])
    return VideoInfo(int(frames[-1]), float(fps[1]) if fps else 0.0, int(stream[3]), int(stream[4]),
                     stream[1], stream[2])


def browser_copy(src: Path, dst: Path) -> VideoInfo:
    """`src` (a video file ffmpeg reads) -> `dst`, an mp4 browsers play; returns dst's info."""
    info = probe(src)
    if info.browser_ready and src.suffix.lower() == ".mp4":
        _ffmpeg(["-y", "-i", str(src), "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", str(dst)], src)
    else:
        fps = info.fps if info.fps > 0 else 10.0
        _ffmpeg(["-y", "-i", str(src), "-map", "0:v:0", "-an", *_x264(fps), str(dst)], src)
    out = probe(dst)
    if out.frames != info.frames:
        raise FdmError(f"{src}: re-encoding gave {out.frames} frames instead of {info.frames}")
    return out


def encode_frames(frames: np.ndarray, fps: float, dst: Path) -> VideoInfo:
    """uint8 frames [T, H, W, C] (C = 1 or 3) -> an mp4 browsers play at `fps`."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] not in (1, 3) or len(frames) == 0:
        raise FdmError(f"{dst}: frames must be uint8 [T, H, W, C] with C in (1, 3), got "
                       f"{frames.dtype} {list(frames.shape)}")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:  # repeat the last row/column, as video_io does, rather than pad with black
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    _ffmpeg(["-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-",
             *_x264(fps), str(dst)], dst, stdin=np.ascontiguousarray(frames).tobytes())
    return probe(dst)


def _x264(fps: float) -> list[str]:
    # pad: yuv420p halves the chroma resolution, so odd sizes get one repeated row/column (as
    # video_io does); -r keeps the frame rate exact; +faststart puts the index before the data.
    return ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", BROWSER_PIX_FMT,
            "-crf", "18", "-preset", "veryfast", "-r", f"{fps:g}", "-movflags", "+faststart"]
