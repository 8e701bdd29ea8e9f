"""Plans: the DAG of jobs a scheme produces (docs/schemes.md, "The DAG").

A node per job (node id = `order`, its position in sequential execution order), with attributes
`job` (the Job), `level` and `order`. An edge u -> v, with attribute `frames`, when job v observes
frames that job u generated. Given frames have no generating job and so add no edges.

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
        self._maker: dict[int, int] = {}  # frame -> order of the job that generated it
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
        for f in job.observed:
            if f in self._maker:
                needs.setdefault(self._maker[f], []).append(f)
        for u, frames in needs.items():
            self.graph.add_edge(u, order, frames=tuple(frames))
        for f in job.latent:
            self._maker[f] = order
        return order

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
        """`{"jobs": [{"observed": [...], "latent": [...]}, ...]}` in execution order."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, length: int | None = None, n_obs: int | None = None) -> "Plan":
        """Inverse of to_json. T defaults to 1 + the largest index; n_obs to T - #generated."""
        jobs = [Job.make(j["observed"], j["latent"], j.get("level", 0)) for j in json.loads(text)["jobs"]]
        if length is None:
            length = 1 + max((f for j in jobs for f in j.frames), default=-1)
        if n_obs is None:
            n_obs = length - sum(len(j.latent) for j in jobs)
        return cls(length, n_obs, jobs)
