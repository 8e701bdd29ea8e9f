"""Observed-frame selection for adaptive schemes: greedy farthest-point sampling in an embedding space.

Start from the job's anchors (done frames it always observes), then repeatedly add the done frame
whose minimum distance to the frames chosen so far is largest, until `n_observed` are chosen.
Distances are Euclidean (the published LPIPS embedder makes squared distances LPIPS; the argmax is
the same either way).

Unlike the published code, every frame is embedded once (EmbeddingCache, filled as frames
appear) rather than every done frame at every job, and each greedy step is one batched
torch.cdist over all videos and candidates, with a single device->host copy per job at the end.
"""

from __future__ import annotations

import bisect
import heapq
from typing import Callable, Sequence

import torch

from sampling_schemes.job import OpenJob

Embedder = Callable[[torch.Tensor], torch.Tensor]  # frames [N, C, H, W] -> embeddings [N, D]


def pixel_embedder(frames: torch.Tensor) -> torch.Tensor:
    """The default embedding: the flattened frame. [N, C, H, W] -> [N, C*H*W] float32."""
    return frames.flatten(1).float()


class EmbeddingCache:
    """Embeddings of the done frames of B videos, indexed by absolute frame: `table` [B, T, D].

    Rows of frames not yet added are zeros and must not be read; `filled` says which are set.
    """

    def __init__(self, length: int, embedder: Embedder | None = None):
        self.length = length
        self.embedder = embedder or pixel_embedder
        self.table: torch.Tensor | None = None
        self.filled: set[int] = set()

    @torch.no_grad()
    def add_frames(self, indices: Sequence[int], frames: torch.Tensor) -> None:
        """Embed new frames once. frames [B, F, C, H, W], F = len(indices)."""
        B, F = frames.shape[:2]
        emb = self.embedder(frames.flatten(0, 1))  # [B*F, D]
        self.add_embeddings(indices, emb.reshape(B, F, -1))

    def add_embeddings(self, indices: Sequence[int], emb: torch.Tensor) -> None:
        """Store precomputed embeddings. emb [B, F, D], F = len(indices)."""
        if emb.dim() != 3 or emb.shape[1] != len(indices):
            raise ValueError(f"embeddings must be [B, {len(indices)}, D], got {list(emb.shape)}")
        if self.table is None:
            B, _, D = emb.shape
            self.table = emb.new_zeros(B, self.length, D, dtype=torch.float32)  # [B, T, D]
        self.table[:, list(indices)] = emb.float()
        self.filled.update(int(i) for i in indices)


def farthest_points(points: torch.Tensor, forced: Sequence[int], n: int) -> torch.Tensor:
    """Greedy farthest-point selection, batched over videos.

    points [B, N, D]; forced: positions chosen first, in order; returns positions [B, n] (long,
    on points' device). Ties go to the lowest position.
    """
    B, N, _ = points.shape
    rows = torch.arange(B, device=points.device)
    picks = torch.empty(B, n, dtype=torch.long, device=points.device)
    min_dist = torch.full((B, N), float("inf"), device=points.device)  # [B, N]
    forced = list(forced)[:n]
    if forced:
        picks[:, :len(forced)] = torch.tensor(forced, device=points.device)
        min_dist = torch.cdist(points, points[:, forced]).amin(-1)  # [B, N]
        min_dist[:, forced] = -float("inf")
    for k in range(len(forced), n):
        pick = min_dist.argmax(-1)  # [B]
        picks[:, k] = pick
        d = torch.cdist(points, points[rows, pick].unsqueeze(1)).squeeze(-1)  # [B, N]
        min_dist = torch.minimum(min_dist, d)
        min_dist[rows, pick] = -float("inf")
    return picks


def choose_observed(job: OpenJob, done: Sequence[int], embeddings: torch.Tensor) -> list[tuple[int, ...]]:
    """Observed frames for each video: the job's anchors, then farthest points among `done`.

    embeddings [B, T, D] (or [T, D] for one video), rows of every frame in `done` filled.
    Candidates are ordered newest (largest index) first, so ties favour recent frames.
    Returns B sorted tuples of min(job.n_observed, len(done)) frames.
    """
    if embeddings.dim() == 2:
        embeddings = embeddings.unsqueeze(0)
    candidates = sorted(done, reverse=True)
    n = min(job.n_observed, len(candidates))
    if n == 0:
        return [()] * embeddings.shape[0]
    position = {f: k for k, f in enumerate(candidates)}
    forced = [position[a] for a in job.anchors]
    points = embeddings[:, candidates].float()  # [B, N, D]
    picks = farthest_points(points, forced, n).tolist()  # the one host sync per job
    return [tuple(sorted(candidates[p] for p in row)) for row in picks]


def choose_in_time(job: OpenJob, done: Sequence[int], embeddings: torch.Tensor | None = None) -> list[tuple[int, ...]]:
    """choose_observed for one video whose embedding is the frame index itself (the preview), with
    the same picks and ties, in O(n log T) per job rather than O(n T): in one dimension the done
    frame farthest from the chosen ones is the one nearest the middle of some gap between two
    chosen frames (or an end of the video), so a heap of gaps replaces the scan over all frames.

    `done` must be sorted ascending; `embeddings` is ignored.
    """
    n = min(job.n_observed, len(done))
    if n == 0:
        return [()]
    picks = list(dict.fromkeys(job.anchors))[:n] or [done[-1]]  # no anchor: the newest frame, as the scan
    heap: list[tuple[int, int, int | None, int | None]] = []
    ordered = sorted(picks)
    for a, b in zip([None] + ordered, ordered + [None]):
        _push_gap(heap, done, a, b)
    while len(picks) < n:
        _, negative_frame, a, b = heapq.heappop(heap)
        c = -negative_frame
        picks.append(c)
        _push_gap(heap, done, a, c)
        _push_gap(heap, done, c, b)
    return [tuple(sorted(picks))]


def _push_gap(heap: list, done: Sequence[int], a: int | None, b: int | None) -> None:
    """Push the best done frame strictly between chosen frames a < b (None: an end of the video),
    keyed by (-distance to the nearer of a and b, -frame): ties go to the larger frame."""
    lo = 0 if a is None else bisect.bisect_right(done, a)
    hi = len(done) if b is None else bisect.bisect_left(done, b)
    if lo >= hi:
        return
    if a is None:
        options = [done[lo]]
    elif b is None:
        options = [done[hi - 1]]
    else:
        k = bisect.bisect_right(done, (a + b) / 2, lo, hi)
        options = [done[i] for i in (k - 1, k) if lo <= i < hi]
    dist = [min(c - a if a is not None else b - c, b - c if b is not None else c - a) for c in options]
    best = max(range(len(options)), key=lambda i: (dist[i], options[i]))
    heapq.heappush(heap, (-dist[best], -options[best], a, b))
