"""Adaptive schemes: farthest-point selection (hand-computed), embedding cache, the run-time planner."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fdm_engine.errors import FdmError
from sampling_schemes import (AdaptivePlanner, EmbeddingCache, OpenJob, choose_observed, get_scheme, plan,
                              plan_problems, preview_plan)

LINE = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 20.0]).view(6, 1)  # frame f sits at LINE[f] on a line


def test_farthest_point_by_hand():
    # anchor 5 (at 20); farthest from {20} is frame 0 (at 0, distance 20); then min distances to
    # {20, 0} are f1: 1, f2: 2, f3: min(10, 10) = 10, f4: min(9, 11) = 9 -> frame 3.
    job = OpenJob(latent=(6,), anchors=(5,), n_observed=3)
    assert choose_observed(job, range(6), LINE) == [(0, 3, 5)]


def test_without_anchors_newest_first_and_ties_to_newest():
    job = OpenJob(latent=(6,), anchors=(), n_observed=2)
    # newest (5) first; then 0 (distance 20) beats all
    assert choose_observed(job, range(6), LINE) == [(0, 5)]
    flat = torch.zeros(6, 1)  # all tied: newest first, then the next newest
    assert choose_observed(job, range(6), flat) == [(4, 5)]


def test_anchors_truncated_and_too_few_candidates():
    assert choose_observed(OpenJob((6,), (5, 1, 2), 2), range(6), LINE) == [(1, 5)]
    assert choose_observed(OpenJob((6,), (5,), 10), [1, 5], LINE) == [(1, 5)]


def test_batched_videos_choose_independently():
    other = torch.tensor([0.0, 30.0, 2.0, 3.0, 4.0, 5.0]).view(6, 1)
    job = OpenJob(latent=(6,), anchors=(5,), n_observed=2)
    both = choose_observed(job, range(6), torch.stack([LINE, other]))  # [2, T, 1]
    assert both == choose_observed(job, range(6), LINE) + choose_observed(job, range(6), other)
    assert both == [(0, 5), (1, 5)]


def test_cache_embeds_each_frame_once():
    calls = []

    def embedder(frames):  # [N, C, H, W] -> [N, D]
        calls.append(frames.shape[0])
        return frames.mean((2, 3))

    B, T = 2, 40
    video = torch.randn(B, T, 3, 4, 4)
    planner = AdaptivePlanner("adaptive-hierarchy-2", T, 6, 8, batch_size=B, embedder=embedder)
    planner.add_frames(range(6), video[:, :6])
    while (jobs := planner.next_jobs()) is not None:
        planner.add_frames(jobs[0].latent, video[:, list(jobs[0].latent)])
    assert sum(calls) == B * T


@pytest.mark.parametrize("scheme, twin", [("adaptive-autoreg", "autoreg"), ("adaptive-hierarchy-3", "hierarchy-3")])
@pytest.mark.parametrize("n_obs", [0, 3, 12])
def test_planner_follows_static_twin(scheme, twin, n_obs):
    T, K, S, B = 80, 10, 4, 3
    video = torch.randn(B, T, 1, 2, 2)
    planner = AdaptivePlanner(scheme, T, n_obs, K, S, batch_size=B)
    if n_obs:
        planner.add_frames(range(n_obs), video[:, :n_obs])
    steps = []
    while (jobs := planner.next_jobs()) is not None:
        assert len(jobs) == B and len({j.latent for j in jobs}) == 1
        steps.append(jobs)
        planner.add_frames(jobs[0].latent, video[:, list(jobs[0].latent)])
    assert planner.finished
    assert [s[0].latent for s in steps] == [j.latent for j in plan(twin, T, n_obs, K, S).jobs]
    for b in range(B):
        jobs = [s[b] for s in steps]
        assert plan_problems(jobs, T, n_obs, K) == []
        assert planner.plan(b).jobs == jobs
    for open_job, s in zip(planner.open_jobs, steps):
        for job in s:
            assert set(open_job.anchors) <= set(job.observed) and len(job.observed) == open_job.n_observed


def test_hierarchy_anchors():
    # job 2 of docs/schemes.md's example generates 37..46: newest done frame 299 (end of job 1), no done frame
    # inside the span, the two nearest before (36, 35) and the nearest after (65)
    scheme = get_scheme("adaptive-hierarchy-2")
    open_jobs = list(scheme.open_jobs(300, 36, 20, 10))
    assert open_jobs[1].latent == tuple(range(37, 47))
    assert open_jobs[1].anchors == (299, 36, 35, 65) and open_jobs[1].n_observed == 10
    assert get_scheme("adaptive-autoreg").open_jobs(300, 36, 20, 10).__next__().anchors == (35,)


def test_planner_requires_new_frames_first():
    planner = AdaptivePlanner("adaptive-autoreg", 30, 4, 6)
    with pytest.raises(RuntimeError, match="add_frames"):
        planner.next_jobs()
    planner.add_frames(range(4), torch.zeros(1, 4, 1, 2, 2))
    planner.next_jobs()
    with pytest.raises(RuntimeError, match="add_frames"):
        planner.next_jobs()


def test_planner_rejects_static_scheme():
    with pytest.raises(FdmError, match="static"):
        AdaptivePlanner("hierarchy-2", 30, 4, 6)


def test_one_cdist_per_greedy_step(monkeypatch):
    calls = []
    real = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda *a, **k: calls.append(1) or real(*a, **k))
    emb = torch.randn(4, 100, 8)  # [B, T, D]
    choose_observed(OpenJob((99,), (98, 97), 12), range(99), emb)
    assert len(calls) == 1 + (12 - 2)


def test_cache_shapes():
    cache = EmbeddingCache(10)
    cache.add_frames([2, 5], torch.ones(3, 2, 1, 2, 2))
    assert cache.table.shape == (3, 10, 4) and cache.filled == {2, 5}
    with pytest.raises(ValueError):
        cache.add_embeddings([1], torch.ones(3, 2, 4))


def test_preview_is_a_valid_plan():
    p = preview_plan("adaptive-hierarchy-2", 300, 36, 20)
    assert len(p.jobs) == 27 and plan_problems(p.jobs, 300, 36, 20) == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["adaptive-autoreg", "adaptive-hierarchy-2", "adaptive-hierarchy-3"]), st.integers(1, 90),
       st.data())
def test_adaptive_invariants(scheme, T, data):
    n_obs = data.draw(st.integers(0, T - 1))
    K = data.draw(st.integers(2, 16))
    S = data.draw(st.integers(1, K - 1))
    emb = torch.randn(2, T, 3)  # [B, T, D]
    planner = AdaptivePlanner(scheme, T, n_obs, K, S, batch_size=2)
    planner.add_embeddings(range(n_obs), emb[:, :n_obs])
    while (jobs := planner.next_jobs()) is not None:
        planner.add_embeddings(jobs[0].latent, emb[:, list(jobs[0].latent)])
    twin = scheme.removeprefix("adaptive-")
    assert [j.latent for j in planner.plan(1).jobs] == [j.latent for j in plan(twin, T, n_obs, K, S).jobs]
    for b in range(2):
        assert plan_problems(planner.plan(b).jobs, T, n_obs, K) == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_choosing_in_time_matches_farthest_points_on_frame_indices(data):
    """The preview's heap-of-gaps chooser picks what the generic farthest-point scan picks with
    the frame index as the embedding, ties included."""
    from sampling_schemes.selection import choose_in_time

    T = data.draw(st.integers(1, 120))
    done = sorted(data.draw(st.sets(st.integers(0, T - 1), min_size=1)))
    anchors = tuple(data.draw(st.lists(st.sampled_from(done), max_size=3, unique=True)))
    n = data.draw(st.integers(0, len(done) + 2))
    job = OpenJob(latent=(T,), anchors=anchors[:n], n_observed=n)
    emb = torch.zeros(T, 1)
    emb[done, 0] = torch.tensor(done, dtype=torch.float32)
    assert choose_in_time(job, done) == choose_observed(job, done, emb)
