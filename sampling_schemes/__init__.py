"""Sampling schemes: planners that turn (scheme, T, n_obs, K, S) into a DAG of denoising jobs.

A job (`Job(observed, latent, level)`, sorted tuples of absolute frame indices) generates its
latent frames conditioned on its observed ones; |observed| + |latent| <= K, every observed frame
is done before the job, every frame in [n_obs, T) is generated exactly once. Frames 0..n_obs-1 are
given; with n_obs = 0 the first job observes nothing and generates K frames (docs/schemes.md).

Static schemes, planned ahead in full:

    from sampling_schemes import plan
    p = plan("hierarchy-2", length=300, n_obs=36, max_frames=20)     # step_size defaults to K//2
    p.jobs       # [Job, ...] in sequential execution order
    p.rounds()   # [[Job, ...], ...]: jobs whose inputs are ready run together (DAG generations)
    p.depth, p.widest, p.graph (networkx.DiGraph), p.to_json()

Names: "autoreg", "long-range", "hierarchy-N", "hierarchy-N-parallel" (any N >= 2, e.g.
"hierarchy-3"), and the adaptive "adaptive-autoreg", "adaptive-hierarchy-N". `get_scheme(name)`
resolves a name; unknown names raise FdmError listing the known ones.

Adaptive schemes fix each job's latent frames ahead (those of their static twin) and choose its
observed frames per video at run time, by greedy farthest-point selection over embeddings of the
done frames. The executor drives them through `AdaptivePlanner` (see sampling_schemes.planner):

    planner = AdaptivePlanner(name, length, n_obs, max_frames, step_size=None, *, batch_size=1,
                              embedder=None, choose=choose_observed)
    planner.add_frames(indices, frames)      # frames [B, F, C, H, W]: given, then each job's output
    planner.next_jobs() -> list[Job] | None  # B jobs (same latent, per-video observed); None at end
    planner.plan(video=0) -> Plan            # the DAG so far
    planner.finished, planner.done, planner.open_jobs  # list[OpenJob]: latent + anchors + count

`embedder` maps frames [N, C, H, W] -> [N, D] (default: flattened pixels); each frame is embedded
once. `choose(open_job, done, embeddings [B, T, D]) -> list of B observed tuples` can be swapped.

Adding a scheme (no edit to this package): write a planner

    def my_scheme(length, n_obs, max_frames, step_size, n=None) -> Iterator[Job]: ...

(`n` only for a family whose name has an "-N" component, e.g. "mine-N" serves "mine-4") and either
call `SCHEMES.register("my-scheme", my_scheme)` or declare an entry point in your package:

    [project.entry-points."fdm.sampling_schemes"]
    my-scheme = "my_pkg.schemes:my_scheme"

The executor takes both kinds through one protocol, `job_source(name, length, n_obs, max_frames)`
(see sampling_schemes.source): per video, the jobs that are ready and a call to finish each.

`plan()` checks every plan against the invariants above, so a broken plug-in fails with a clear
message rather than a corrupt video. An `AdaptiveScheme(twin, local)` entry adds an adaptive one.
"""

from sampling_schemes.adaptive import AdaptiveScheme
from sampling_schemes.checks import check_args, plan_problems
from sampling_schemes.job import Job, OpenJob
from sampling_schemes.plan import Plan
from sampling_schemes.registry import SCHEMES, Scheme, get_scheme, plan
from sampling_schemes.source import job_source

# The adaptive run-time half needs torch; import it on first use so planning stays light.
_LAZY = {
    "AdaptivePlanner": "sampling_schemes.planner", "preview_plan": "sampling_schemes.planner",
    "choose_observed": "sampling_schemes.selection", "farthest_points": "sampling_schemes.selection",
    "pixel_embedder": "sampling_schemes.selection", "EmbeddingCache": "sampling_schemes.selection",
}


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sampling_schemes' has no attribute {name!r}")


__all__ = [
    "Job", "OpenJob", "Plan", "plan", "job_source", "SCHEMES", "Scheme", "get_scheme", "AdaptiveScheme", "check_args",
    "plan_problems", *_LAZY,
]
