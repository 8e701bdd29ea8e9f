"""Static sampling schemes: docs/schemes.md's reference cases, fixed flaws, registry, DAG, and properties."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from fdm_engine.errors import FdmError
from sampling_schemes import SCHEMES, Job, Plan, get_scheme, plan

STATIC = ["autoreg", "long-range", "hierarchy-2", "hierarchy-3", "hierarchy-4", "hierarchy-2-parallel",
          "hierarchy-3-parallel"]


def as_lists(p: Plan) -> list[tuple[list[int], list[int]]]:
    return [(list(j.observed), list(j.latent)) for j in p.jobs]


# --- reference cases (docs/schemes.md) ------------------------------------------------------------

def test_hierarchy2_spec_example():
    p = plan("hierarchy-2", length=300, n_obs=36, max_frames=20, step_size=10)
    assert len(p.jobs) == 27
    # int(linspace(0, 35.999, 10)) and int(linspace(36, 299.999, 10)), worked by hand
    assert p.jobs[0].observed == (0, 3, 7, 11, 15, 19, 23, 27, 31, 35)
    assert p.jobs[0].latent == (36, 65, 94, 123, 153, 182, 211, 241, 270, 299)
    assert p.jobs[1].latent == tuple(range(37, 47))
    assert p.jobs[1].observed == (32, 33, 34, 35, 36, 65, 94, 123, 153, 182)
    assert [j.level for j in p.jobs] == [1] + [2] * 26


@pytest.mark.parametrize("scheme", ["autoreg", "long-range", "hierarchy-2"])
@pytest.mark.parametrize("length, jobs", [(300, 27), (500, 47), (1000, 97)])
def test_stage_counts(scheme, length, jobs):
    assert len(plan(scheme, length, 36, 20, 10).jobs) == jobs


def test_step_size_defaults_to_half_k():
    assert plan("autoreg", 100, 10, 20).jobs == plan("autoreg", 100, 10, 20, 10).jobs


def test_autoreg_small_by_hand():
    p = plan("autoreg", length=12, n_obs=3, max_frames=4, step_size=2)
    assert as_lists(p) == [([1, 2], [3, 4]), ([3, 4], [5, 6]), ([5, 6], [7, 8]), ([7, 8], [9, 10]),
                           ([9, 10], [11])]


def test_long_range_small_by_hand():
    # K-S = 4: the 2 newest done frames, then given frames from the newest down (skipping repeats)
    p = plan("long-range", length=10, n_obs=4, max_frames=6, step_size=2)
    assert as_lists(p) == [([0, 1, 2, 3], [4, 5]), ([2, 3, 4, 5], [6, 7]), ([2, 3, 6, 7], [8, 9])]


def test_unconditional_start():
    a = plan("autoreg", length=50, n_obs=0, max_frames=8, step_size=4)
    assert a.jobs[0] == Job((), tuple(range(8)))
    assert a.jobs[1].observed == (4, 5, 6, 7)
    h = plan("hierarchy-2", length=50, n_obs=0, max_frames=8, step_size=4)
    # int(linspace(0, 49, 8)) = 0, 7, 14, 21, 28, 35, 42, 49; level 1 is then skipped
    assert h.jobs[0] == Job((), (0, 7, 14, 21, 28, 35, 42, 49), level=1)
    assert h.jobs[1].level == 2


@pytest.mark.parametrize("scheme, level", [("autoreg", 0), ("hierarchy-2", 1), ("hierarchy-2-parallel", 1)])
def test_unconditional_video_shorter_than_k(scheme, level):
    assert plan(scheme, length=5, n_obs=0, max_frames=8).jobs == [Job((), (0, 1, 2, 3, 4), level)]


# --- published flaws, fixed -----------------------------------------------------------------------

def test_hierarchy_few_given_frames_no_duplicate_observed():
    # published: int(linspace(0, 2.999, 10)) repeats 0, 1 and 2
    first = plan("hierarchy-2", length=60, n_obs=3, max_frames=20, step_size=10).jobs[0]
    assert first.observed == (0, 1, 2)


@pytest.mark.parametrize("K, S", [(4, 1), (3, 2), (2, 1)])
def test_hierarchy_tiny_step_sizes(K, S):
    # S = 1 divided by zero in the published stride; S = 2 with K = 3 re-plans with S - 1 = 1
    p = plan("hierarchy-3", length=40, n_obs=5, max_frames=K, step_size=S)
    assert sorted(f for j in p.jobs for f in j.latent) == list(range(5, 40))


def test_long_range_one_observed_slot():
    # published: sorted(done)[-0:] observed every done frame when (K-S)//2 == 0
    p = plan("long-range", length=30, n_obs=10, max_frames=5, step_size=4)
    assert all(len(j.observed) == 1 for j in p.jobs)


# --- the parallel hierarchy -----------------------------------------------------------------------

def test_parallel_depth_target():
    sequential = plan("hierarchy-2", 300, 36, 20, 10)
    parallel = plan("hierarchy-2-parallel", 300, 36, 20, 10)
    assert sequential.depth == 27
    assert parallel.depth <= sequential.depth / 5
    assert max(len(j.observed) + len(j.latent) for j in parallel.jobs) <= 20


@pytest.mark.parametrize("length", [300, 1000])
def test_parallel_levels_are_rounds(length):
    p = plan("hierarchy-2-parallel", length, 36, 20, 10)
    assert p.depth <= max(j.level for j in p.jobs) <= 4
    assert [j.level for j in p.jobs] == sorted(j.level for j in p.jobs)


# --- registry and errors --------------------------------------------------------------------------

@pytest.mark.parametrize("name, family, n", [("hierarchy-3", "hierarchy-N", 3), ("hierarchy-12", "hierarchy-N", 12),
                                             ("hierarchy-5-parallel", "hierarchy-N-parallel", 5),
                                             ("adaptive-hierarchy-4", "adaptive-hierarchy-N", 4)])
def test_family_names_resolve(name, family, n):
    scheme = get_scheme(name)
    assert scheme.entry is SCHEMES.get(family) and dict(scheme.params) == {"n": n}


def test_registry_group():
    assert SCHEMES.group == "fdm.sampling_schemes"
    assert {"autoreg", "long-range", "hierarchy-N", "hierarchy-N-parallel"} <= set(SCHEMES.names())


@pytest.mark.parametrize("name, words", [("nope", ["nope", "autoreg", "hierarchy-N"]), ("hierarchy-1", ["N must be >= 2"]),
                                         ("hierarchy-N", ["hierarchy-2"]), ("adaptive-autoreg", ["AdaptivePlanner"])])
def test_bad_scheme_names(name, words):
    with pytest.raises(FdmError) as e:
        plan(name, 100, 10, 20)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


@pytest.mark.parametrize("args, flag", [((10, 10, 20, None), "--n-obs"), ((10, -1, 20, None), "--n-obs"),
                                        ((10, 2, 1, None), "--max-frames"), ((10, 2, 20, 0), "--step-size"),
                                        ((10, 2, 20, 20), "--step-size"), ((0, 0, 20, None), "--length")])
def test_bad_arguments(args, flag):
    with pytest.raises(FdmError, match=flag):
        plan("autoreg", *args)


def test_plugin_scheme(monkeypatch):
    def every_frame(length, n_obs, max_frames, step_size):
        for f in range(n_obs, length):
            yield Job.make([f - 1] if f else [], [f])

    def broken(length, n_obs, max_frames, step_size):
        yield Job.make([length - 1], [n_obs])

    monkeypatch.setitem(SCHEMES._items, "one-by-one", every_frame)
    monkeypatch.setitem(SCHEMES._items, "broken", broken)
    assert len(plan("one-by-one", 10, 2, 4).jobs) == 8
    with pytest.raises(FdmError, match="invalid plan"):
        plan("broken", 10, 2, 4)


# --- the DAG --------------------------------------------------------------------------------------

def test_dag_by_hand():
    a, b, c = Job((0, 1), (2, 3)), Job((0,), (4,)), Job((3, 4), (5,))
    p = Plan(6, 2, [a, b, c])
    assert p.rounds() == [[a, b], [c]] and p.depth == 2 and p.widest == 2
    assert dict(p.graph.edges) == {(0, 2): {"frames": (3,)}, (1, 2): {"frames": (4,)}}
    assert p.graph.nodes[2] == {"job": c, "level": 0, "order": 2}


def test_json_round_trip():
    p = plan("hierarchy-3", 200, 20, 16, 6)
    q = Plan.from_json(p.to_json())
    assert (q.length, q.n_obs) == (200, 20)
    assert as_lists(q) == as_lists(p)


# --- properties over random setups ----------------------------------------------------------------

@st.composite
def setups(draw):
    length = draw(st.integers(1, 160))
    max_frames = draw(st.integers(2, 24))
    return (draw(st.sampled_from(STATIC)), length, draw(st.integers(0, length - 1)), max_frames,
            draw(st.integers(1, max_frames - 1)))


@settings(max_examples=400, deadline=None)
@given(setups())
def test_plan_invariants(setup):
    scheme, T, n_obs, K, S = setup
    p = plan(scheme, T, n_obs, K, S)
    generated = Counter(f for j in p.jobs for f in j.latent)
    assert set(generated) | set(range(n_obs)) == set(range(T))
    assert all(c == 1 for c in generated.values()) and not set(generated) & set(range(n_obs))
    done = set(range(n_obs))
    for job in p.jobs:
        assert job.latent and len(job.observed) + len(job.latent) <= K
        assert list(job.observed) == sorted(set(job.observed)) and list(job.latent) == sorted(set(job.latent))
        assert set(job.observed) <= done
        done |= set(job.latent)
    assert p.to_json() == plan(scheme, T, n_obs, K, S).to_json()


@settings(max_examples=150, deadline=None)
@given(setups())
def test_dag_matches_jobs(setup):
    p = plan(*setup)
    maker = {f: k for k, j in enumerate(p.jobs) for f in j.latent}
    expected = {(maker[f], v) for v, j in enumerate(p.jobs) for f in j.observed if f in maker}
    assert set(p.graph.edges) == expected
    round_of = {id(j): r for r, jobs in enumerate(p.rounds()) for j in jobs}
    assert sum(len(r) for r in p.rounds()) == len(p.jobs)
    assert all(round_of[id(p.jobs[u])] < round_of[id(p.jobs[v])] for u, v in p.graph.edges)


@settings(max_examples=150, deadline=None)
@given(setups(), st.integers(2, 5))
def test_parallel_levels_observe_only_lower_levels(setup, n):
    _, T, n_obs, K, S = setup
    p = plan(f"hierarchy-{n}-parallel", T, n_obs, K, S)
    level_of = {f: 0 for f in range(n_obs)} | {f: j.level for j in p.jobs for f in j.latent}
    assert all(level_of[f] < j.level for j in p.jobs for f in j.observed)


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 90), st.data())
def test_hierarchy_level_bisection_matches_stepping_level_by_level(T, data):
    """next_level jumps to the first level whose walk lands on an undone frame; stepping one
    level at a time (the definition) gives the same plan, for any N up to 10**9."""
    import sampling_schemes.hierarchy as hierarchy

    n_obs = data.draw(st.integers(0, T - 1))
    K = data.draw(st.integers(2, 12))
    S = data.draw(st.integers(1, K - 1))
    N = data.draw(st.sampled_from([2, 3, 5, 40, 10**9]))

    def one_at_a_time(setup, level, done, step_size):
        level += 1
        while not done.any_undone_from(done.first_undone() - 1 + setup.stride(level, step_size)):
            level += 1
        return level

    fast = plan(f"hierarchy-{N}", T, n_obs, K, S).jobs
    original = hierarchy.next_level
    hierarchy.next_level = one_at_a_time
    try:
        if N < 10**9:  # stepping to level 10**9 one by one is what used to hang
            assert plan(f"hierarchy-{N}", T, n_obs, K, S).jobs == fast
    finally:
        hierarchy.next_level = original
