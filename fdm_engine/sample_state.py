"""A sampling run's state on disk: per-video journals plus a small manifest (docs/sampling.md).

    OUT/state_rank{r}.pt                      the manifest: JSON, replaced atomically after every round
    OUT/state_rank{r}.parts/video_NNNN.journal   one append-only journal per video in flight

A round appends the jobs it finished to their videos' journals (one record per job: its frames,
and for a per-frame job the sampler state of the frames it left part-way, with a CRC32), then replaces the manifest, which names the committed length of every open
journal, the finished videos and the counters. So a round writes what it made and a few hundred
bytes more, never the videos again. A kill in the middle of a round leaves bytes past the committed
lengths (dropped on resume) and the previous manifest: only the round in progress is lost. A
video's journal is removed once its outputs are written, so the state's size stays bounded by the
videos in flight.

Reading is strict: a manifest that is not ours (empty, truncated, another format, a pickle) or a
journal shorter than its committed length or failing a checksum is refused with one line saying how
to start over. Nothing here unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import torch

from fdm_engine.errors import FdmError
from fdm_engine.files import atomic_write
from fdm_engine.samplers.history import FrameState

KIND = "fdm sampling state"
# A kill loses nothing committed: the data is in the OS's hands once written. fsync is only for a
# power cut, and costs up to 0.1 s on a busy disk, so commits fsync at most this often.
FSYNC_EVERY_S = 10.0
VERSION = 1
_RECORD = struct.Struct("<4sIQI")  # magic, header bytes, payload bytes, crc32(header + payload)
_MAGIC = b"FDMJ"


class BadState(FdmError):
    pass


# -- records -----------------------------------------------------------------------------
def record_head(header: dict, payload=b"") -> bytes:
    """A record's bytes before its payload (payload: bytes or any buffer, e.g. a tensor's memory)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = memoryview(payload).cast("B")
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _RECORD.pack(_MAGIC, len(head), payload.nbytes, crc) + head


def read_records(path: Path, limit: int):
    """Yield (header, payload) of the records in path[:limit]; BadState if they are not all whole."""
    with open(path, "rb") as f:
        data = f.read(limit)
    if len(data) < limit:
        raise BadState(f"{path} is truncated ({len(data)} of {limit} committed bytes)")
    pos = 0
    while pos < limit:
        if limit - pos < _RECORD.size:
            raise BadState(f"{path} is damaged (a record cut at byte {pos})")
        magic, n_head, n_payload, crc = _RECORD.unpack_from(data, pos)
        start, end = pos + _RECORD.size, pos + _RECORD.size + n_head + n_payload
        if magic != _MAGIC or end > limit:
            raise BadState(f"{path} is damaged (no whole record at byte {pos})")
        head, payload = data[start:start + n_head], data[start + n_head:end]
        if zlib.crc32(payload, zlib.crc32(head)) != crc:
            raise BadState(f"{path} is damaged (checksum of the record at byte {pos})")
        yield json.loads(head), payload
        pos = end


# -- the state of one rank's run -----------------------------------------------------------
@dataclasses.dataclass
class Manifest:
    config: dict
    counters: dict = dataclasses.field(default_factory=dict)
    finished_videos: list[int] = dataclasses.field(default_factory=list)
    journals: dict[str, int] = dataclasses.field(default_factory=dict)  # video -> committed bytes
    first_jobs: list | None = None  # the jobs of the run's first video (for plan.json)

    def to_json(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # shallow: no deep copies
        body = {"kind": KIND, "version": VERSION, **fields}
        text = json.dumps(body, sort_keys=True)
        # = json.dumps({"crc32": ..., "state": body}, sort_keys=True), without serialising body twice
        return f'{{"crc32": {zlib.crc32(text.encode())}, "state": {text}}}'

    @classmethod
    def parse(cls, path: Path, text: bytes) -> "Manifest":
        what = "empty" if not text else "not an fdm sampling state"
        try:
            outer = json.loads(text)
            body = outer["state"]
            ok = zlib.crc32(json.dumps(body, sort_keys=True).encode()) == outer["crc32"]
        except (ValueError, KeyError, TypeError):
            ok, body = False, None
        if ok and (body.get("kind") != KIND or body.get("version") != VERSION):
            ok, what = False, f"a sampling state of another version ({body.get('version')})"
        if not ok:
            raise BadState(f"{path} is {what}")
        return cls(**{k: body[k] for k in ("config", "counters", "finished_videos", "journals", "first_jobs")})


class RunState:
    """The on-disk state of one rank: the manifest, the open journals, and how to replay them."""

    def __init__(self, out: Path, rank: int, manifest: Manifest, fsync_every_s: float = FSYNC_EVERY_S):
        self.out = Path(out)
        self.path = self.out / f"state_rank{rank}.pt"
        self.parts = self.out / f"state_rank{rank}.parts"
        self.manifest = manifest
        self.fsync_every_s = fsync_every_s
        self._synced = -float("inf")
        self._files: dict[int, object] = {}
        self.bytes_written = 0  # journals and manifest, for the benchmarks
        self.created = False  # by this process (fresh), not loaded to resume
        self.rounds_committed = 0  # by this process

    @classmethod
    def fresh(cls, out: Path, rank: int, config: dict) -> "RunState":
        state = cls(out, rank, Manifest(config))
        state.created = True
        shutil.rmtree(state.parts, ignore_errors=True)
        state.parts.mkdir(parents=True)
        state.commit()
        return state

    @classmethod
    def load(cls, out: Path, rank: int) -> "RunState":
        path = Path(out) / f"state_rank{rank}.pt"
        state = cls(out, rank, Manifest.parse(path, path.read_bytes()))
        for video, size in state.manifest.journals.items():
            journal = state.journal_path(int(video))
            if not journal.exists():
                raise BadState(f"{journal} is missing ({path} counts {size} bytes in it)")
            for _ in read_records(journal, size):  # every committed record whole and checksummed
                pass
        state.parts.mkdir(exist_ok=True)
        return state

    def journal_path(self, video: int) -> Path:
        return self.parts / f"video_{video:04d}.journal"

    # -- replay -------------------------------------------------------------------------
    def made(self, video: int, frame_shape: tuple) -> dict[int, tuple[dict, torch.Tensor, dict]]:
        """The committed jobs of a video: order -> (record header, frames [n, C, H, W], the sampler
        state of the frames it left part-way: frame -> FrameState, docs/perframe.md)."""
        size = self.manifest.journals.get(str(video))
        if size is None:
            return {}
        path = self.journal_path(video)
        out = {}
        for header, payload in read_records(path, size):
            n = len(header["latent"])
            nbytes = n * _numel(frame_shape) * 4
            carry = header.get("carry")
            if len(payload) < nbytes or (carry is None and len(payload) != nbytes):
                raise BadState(f"{path} holds frames of another shape than this run's {tuple(frame_shape)}")
            frames = torch.frombuffer(bytearray(payload[:nbytes]), dtype=torch.float32) if nbytes else torch.empty(0)
            states, pos = {}, nbytes
            try:
                for f in (carry or {}).get("frames", ()):
                    states[f], used = FrameState.from_payload(carry["spec"], memoryview(payload)[pos:])
                    pos += used
            except (RuntimeError, ValueError, TypeError, AttributeError) as e:
                raise BadState(f"{path} holds a sampler state this version cannot read ({e})") from None
            if pos != len(payload):
                raise BadState(f"{path} holds frames of another shape than this run's {tuple(frame_shape)}")
            out[header["order"]] = (header, frames.view(n, *frame_shape), states)
        return out

    # -- writing ------------------------------------------------------------------------
    def append(self, video: int, order: int, job, frames: torch.Tensor,
               carried: dict | None = None) -> None:
        """Add a finished job to the video's journal (committed by the next `commit`); `carried`:
        frame -> FrameState of the frames it left part-way (a per-frame job's, after its frames)."""
        f = self._files.get(video)
        if f is None:
            f = self._files[video] = open(self.journal_path(video), "ab")
            f.truncate(self.manifest.journals.get(str(video), 0))  # drop an uncommitted tail
            f.seek(0, os.SEEK_END)
        # The frames' memory goes to the file as it is: no copy to bytes on the way.
        payload = memoryview(frames.detach().float().contiguous().numpy()).cast("B")
        header = {"order": order, "observed": list(job.observed), "latent": list(job.latent)}
        if carried:
            # every slot's state has the same names and shapes (one sampler): one spec for all
            states = [carried[frame] for frame in sorted(carried)]
            header["carry"] = {"frames": sorted(carried), "spec": states[0].spec()}
            payload = memoryview(b"".join([payload, *(p for st in states for p in st.payload())]))
        head = record_head(header, payload)
        f.write(head)
        f.write(payload)
        self.bytes_written += len(head) + payload.nbytes

    def commit(self, counters: dict | None = None) -> None:
        """Make every appended record part of the state (journals first, then the manifest; both
        fsynced when the last fsync is FSYNC_EVERY_S old)."""
        sync = time.monotonic() - self._synced >= self.fsync_every_s
        for video, f in self._files.items():
            f.flush()
            if sync:
                os.fsync(f.fileno())
            self.manifest.journals[str(video)] = f.tell()
        if counters is not None:  # a round's commit
            self.manifest.counters = counters
            self.rounds_committed += 1
        text = self.manifest.to_json()
        with atomic_write(self.path, fsync=sync) as tmp:
            tmp.write_text(text)
        if sync:
            self._synced = time.monotonic()
        self.bytes_written += len(text)

    def finish_videos(self, videos: dict[int, list | None]) -> None:
        """These videos' outputs are written (video -> its jobs, for the run's first video, else
        None): forget their journals, in one commit."""
        if not videos:
            return
        for video, jobs in videos.items():
            f = self._files.pop(video, None)
            if f is not None:
                f.close()
            self.manifest.journals.pop(str(video), None)
            self.manifest.finished_videos.append(video)
            if self.manifest.first_jobs is None and jobs is not None:
                self.manifest.first_jobs = jobs
        self.commit()
        for video in videos:
            self.journal_path(video).unlink(missing_ok=True)

    def remove(self) -> None:
        """The run is complete: the state goes."""
        self.close()
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.parts, ignore_errors=True)

    def discard_if_unstarted(self) -> bool:
        """A run started here that stops before its first round is committed has nothing to resume:
        its state goes (True), so that it does not block the corrected command. A resumed run's
        state, or one with committed rounds, stays (False)."""
        if self.created and not self.rounds_committed:
            self.remove()
            return True
        self.close()
        return False

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
