"""Plans: the DAG of jobs a scheme produces (docs/schemes.md, "The DAG").

A node per job (node id = `order`, its position in sequential execution order), with attributes
`job` (the Job), `level` and `order`. An edge u -> v, with attribute `frames`, when job v uses
frames that job u left (observes them, or for per-frame jobs carries them on from u's level), and
when v moves a frame that u read at its old level (u must run first). Given frames add no edges.

Jobs whose inputs are all ready can run together in one batched network call: those are the
DAG's topological generations, `Plan.rounds()`. A sequential scheme's DAG is a chain.
"""

from __future__ import annotations

import json
from typing import Iterable

import networkx as nx

from sampling_schemes.job import Job


class Plan:
    """A DAG of jobs over a T-frame video whose frames 0..n_obs-1 are given."""

    def __init__(self, length: int, n_obs: int, jobs: Iterable[Job] = ()):
        self.graph = nx.DiGraph(length=length, n_obs=n_obs)
        self._maker: dict[int, int] = {}  # frame -> order of the job that last changed it
        self._readers: dict[int, list[int]] = {}  # frame -> jobs that read it since it last changed
        for job in jobs:
            self.append(job)

    @property
    def length(self) -> int:
        return self.graph.graph["length"]

    @property
    def n_obs(self) -> int:
        return self.graph.graph["n_obs"]

    def append(self, job: Job) -> int:
        """Add a job after the existing ones (how adaptive plans grow); returns its order."""
        order = self.graph.number_of_nodes()
        self.graph.add_node(order, job=job, level=job.level, order=order)
        needs: dict[int, list[int]] = {}
        moved = job.moved()
        for f in job.frames:
            if f in self._maker:
                needs.setdefault(self._maker[f], []).append(f)
        for f in moved:
            for reader in self._readers.pop(f, ()):
                needs.setdefault(reader, []).append(f)
        for u, frames in needs.items():
            self.graph.add_edge(u, order, frames=tuple(sorted(set(frames))))
        for f in set(job.latent) - set(moved):
            self._readers.setdefault(f, []).append(order)
        for f in moved:
            self._maker[f] = order
        return order

    @property
    def per_frame(self) -> bool:
        return any(job.per_frame for job in self.jobs)

    def nfe(self, steps: int) -> int:
        """Network evaluations of single jobs; an FDM job costs the sampler's `steps`."""
        return sum(steps if job.calls is None else job.calls for job in self.jobs)

    def calls(self, steps: int) -> int:
        """Batched network calls when each round is one batch: per round, its longest job."""
        return sum(max(steps if j.calls is None else j.calls for j in r) for r in self.rounds())

    @property
    def jobs(self) -> list[Job]:
        """Jobs in sequential execution order."""
        return [self.graph.nodes[k]["job"] for k in range(self.graph.number_of_nodes())]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def rounds(self) -> list[list[Job]]:
        """Topological generations: round r holds the jobs whose inputs are all made by rounds < r."""
        return [[self.graph.nodes[k]["job"] for k in sorted(gen)] for gen in nx.topological_generations(self.graph)]

    @property
    def depth(self) -> int:
        """Number of rounds: network calls needed when each round is one batched call."""
        return len(self.rounds())

    @property
    def widest(self) -> int:
        """Number of jobs in the largest round."""
        return max((len(r) for r in self.rounds()), default=0)

    def to_dict(self) -> dict:
        return {"jobs": [job.to_dict() for job in self.jobs]}

    def to_json(self) -> str:
        """`{"jobs": [{"observed": [...], "latent": [...]}, ...]}` in execution order (per-frame jobs
        add "schedule" and "grid")."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, length: int | None = None, n_obs: int | None = None) -> "Plan":
        """Inverse of to_json. T defaults to 1 + the largest index; n_obs to T - #generated."""
        jobs = [Job.make(j["observed"], j["latent"], j.get("level", 0)) if "schedule" not in j else
                Job(tuple(j["observed"]), tuple(j["latent"]), j.get("level", 0),
                    tuple(tuple(r) for r in j["schedule"]), j["grid"]) for j in json.loads(text)["jobs"]]
        if length is None:
            length = 1 + max((f for j in jobs for f in j.frames), default=-1)
        if n_obs is None:
            n_obs = length - len({f for j in jobs for f in j.latent})
        return cls(length, n_obs, jobs)
