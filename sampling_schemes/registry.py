"""The scheme registry, name resolution ("hierarchy-3" -> the "hierarchy-N" family) and `plan()`."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Iterator

from fdm_common.errors import FdmError
from fdm_common.registry import Registry
from sampling_schemes.adaptive import AdaptiveScheme
from sampling_schemes.autoreg import autoreg, long_range
from sampling_schemes.checks import check_args, plan_problems
from sampling_schemes.hierarchy import hierarchy
from sampling_schemes.arstep import ar_step
from sampling_schemes.fifo import fifo
from sampling_schemes.forcing import df_autoregressive, df_pyramid, df_trapezoid
from sampling_schemes.job import Job, OpenJob
from sampling_schemes.levels import LevelOptions, PerFrameScheme
from sampling_schemes.parallel import hierarchy_parallel
from sampling_schemes.plan import Plan

StaticPlanner = Callable[..., Iterable[Job]]  # (length, n_obs, max_frames, step_size, **params)

# Name -> static planner or AdaptiveScheme. A name containing the component "-N" is a family:
# "hierarchy-3" resolves to "hierarchy-N" with n=3 passed to the planner.
SCHEMES: Registry[StaticPlanner | AdaptiveScheme] = Registry("sampling scheme", group="fdm.sampling_schemes")
SCHEMES.register("autoreg", autoreg)
SCHEMES.register("long-range", long_range)
SCHEMES.register("hierarchy-N", hierarchy)
SCHEMES.register("hierarchy-N-parallel", hierarchy_parallel)
SCHEMES.register("adaptive-autoreg", AdaptiveScheme(autoreg))
SCHEMES.register("adaptive-hierarchy-N", AdaptiveScheme(hierarchy, local=True))
SCHEMES.register("df-pyramid", PerFrameScheme(df_pyramid, ("uncertainty_scale",)))
SCHEMES.register("df-trapezoid", PerFrameScheme(df_trapezoid, ("uncertainty_scale",)))
SCHEMES.register("df-autoregressive", PerFrameScheme(df_autoregressive, ()))
SCHEMES.register("fifo", PerFrameScheme(fifo, ("partitions", "lookahead")))
SCHEMES.register("ar-step", PerFrameScheme(ar_step, ("block_size", "ar_step")))

_NUMBERED = re.compile(r"(.*?)-(\d+)(-.*)?")
_FAMILY = re.compile(r"(^|-)N(?=-|$)")


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A resolved scheme name: the registry entry and the parameters parsed from the name."""

    name: str
    entry: Any
    params: tuple[tuple[str, int], ...] = ()

    @property
    def adaptive(self) -> bool:
        return isinstance(self.entry, AdaptiveScheme)

    @property
    def per_frame(self) -> bool:
        return isinstance(self.entry, PerFrameScheme)

    def jobs(self, length: int, n_obs: int, max_frames: int, step_size: int,
             options: LevelOptions | None = None) -> Iterator[Job]:
        """The static plan's jobs in execution order (`options` reach per-frame schemes only)."""
        if self.per_frame:
            return self.entry(length, n_obs, max_frames, step_size, options)
        return iter(self.entry(length, n_obs, max_frames, step_size, **dict(self.params)))

    def open_jobs(self, length: int, n_obs: int, max_frames: int, step_size: int) -> Iterator[OpenJob]:
        """An adaptive scheme's open jobs (latent frames fixed, observed chosen at run time)."""
        return self.entry.open_jobs(length, n_obs, max_frames, step_size, **dict(self.params))


    def job_source(self, length: int, n_obs: int, max_frames: int, step_size: int | None = None, *,
                   embedder=None, options: LevelOptions | None = None):
        """The scheme's jobs as the executor takes them (sampling_schemes.source)."""
        from sampling_schemes.source import AdaptiveSource, StaticSource

        if not self.adaptive:
            return StaticSource(plan(self.name, length, n_obs, max_frames, step_size, options))
        step_size = check_args(length, n_obs, max_frames, step_size)

        def preview() -> Plan:
            from sampling_schemes.planner import preview_plan

            return preview_plan(self.name, length, n_obs, max_frames, step_size)

        return AdaptiveSource(self.open_jobs(length, n_obs, max_frames, step_size), length, n_obs,
                              embedder=embedder, preview=preview)


def known() -> str:
    return ", ".join(SCHEMES.names()) + " (N >= 2, e.g. hierarchy-3)"


def get_scheme(name: str) -> Scheme:
    """Resolve a scheme name; FdmError naming the known schemes when there is no such scheme."""
    if name in SCHEMES:
        if _FAMILY.search(name):
            example = _FAMILY.sub(r"\g<1>2", name, count=1)
            raise FdmError(f"scheme {name!r} is a family: give N a value, e.g. {example}")
        return Scheme(name, SCHEMES.get(name))
    m = _NUMBERED.fullmatch(name)
    family = m and f"{m[1]}-N{m[3] or ''}"
    if not family or family not in SCHEMES:
        raise FdmError(f"unknown sampling scheme {name!r} (known: {known()})")
    if int(m[2]) < 2:
        raise FdmError(f"scheme {name!r}: N must be >= 2 (got {int(m[2])})")
    return Scheme(name, SCHEMES.get(family), (("n", int(m[2])),))


def unused_option_problems(scheme_name: str, **values) -> list[str]:
    """The per-frame settings (LevelOptions fields: uncertainty_scale, partitions, ...) that
    `values` moves off their defaults although scheme `scheme_name` does not read them, as one line
    naming the schemes that do (or []): flags that would silently change nothing. Plug-in
    per-frame schemes that do not declare their options are not checked."""
    scheme = get_scheme(scheme_name)
    reads = scheme.entry.options if scheme.per_frame else ()
    if reads is None:
        return []
    default = LevelOptions()
    unused = []
    for field, value in values.items():
        if field in reads or value == getattr(default, field):
            continue
        users = [n for n in SCHEMES.names()
                 if isinstance(SCHEMES.get(n), PerFrameScheme) and field in (SCHEMES.get(n).options or ())]
        flag = "--" + field.replace("_", "-") + ("" if isinstance(value, bool) else f" {value:g}")
        unused.append(f"{flag} ({' and '.join(users) or 'no scheme'} only)")
    if not unused:
        return []
    return [f"--scheme {scheme_name} does not use {', '.join(unused)}; leave "
            f"{'it' if len(unused) == 1 else 'them'} out or choose a scheme that does"]


def plan(scheme_name: str, length: int, n_obs: int, max_frames: int, step_size: int | None = None,
         options: LevelOptions | None = None) -> Plan:
    """Plan a static scheme in full: the DAG of its jobs. Bad input -> FdmError naming the flag.
    `options` (steps, uncertainty scale, ...) shape the per-frame schemes; others ignore them."""
    scheme = get_scheme(scheme_name)
    step_size = check_args(length, n_obs, max_frames, step_size)
    if scheme.adaptive:
        raise FdmError(f"{scheme_name} chooses observed frames at run time from the video; drive it "
                       "with AdaptivePlanner (or preview_plan for a preview with time as the embedding)")
    jobs = list(scheme.jobs(length, n_obs, max_frames, step_size, options))
    problems = plan_problems(jobs, length, n_obs, max_frames)
    if problems:  # only a plug-in can get here; ours are property-tested
        raise FdmError(f"scheme {scheme_name!r} made an invalid plan: {problems[0]}")
    return Plan(length, n_obs, jobs)
