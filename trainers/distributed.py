"""DDP helpers: the process group from torchrun's environment, reductions, rank-0 gating.

Under `torchrun --nproc_per_node N`, every rank runs the same loop on its own shard of each
batch; gradients are averaged by DistributedDataParallel, so parameters stay identical. Rank 0
alone writes checkpoints, metrics and samples. Backend: nccl on CUDA, gloo otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist

from fdm_engine.errors import FdmError


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # whether this process initialised the group (and so destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> DistEnv:
    """The DistEnv of this process; initialises the process group when torchrun started >1 ranks."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend)
        owns = True
    if dist.get_world_size() != world:
        raise FdmError(f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} ranks")
    return DistEnv(rank, world, local, owns)


def default_device(requested: str | None, env: DistEnv) -> torch.device:
    """--device, else cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise FdmError(f"--device {requested!r} is not a device (e.g. cpu, cuda, cuda:1)") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise FdmError(f"--device {requested}: CUDA is not available here")
            if device.index is None:
                device = torch.device("cuda", env.local_rank)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def wrap_model(model: torch.nn.Module, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """DDP-wrapped model for several ranks (rank 0's weights broadcast to all); the model itself
    otherwise."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def mean_over_ranks(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The mean of a scalar tensor over ranks (itself on one rank)."""
    if not env.distributed:
        return value
    value = value.detach().clone().float()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
