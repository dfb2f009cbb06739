"""Data-parallel training on PyTorch's own engine: DDP launched by ``torchrun``.

``torchrun --nproc-per-node N -m resnets train ...`` sets WORLD_SIZE / RANK / LOCAL_RANK;
the trainer then joins the process group (nccl on CUDA, gloo on CPU), wraps the model in
DistributedDataParallel, splits every global batch over the ranks, and lets rank 0 alone
write logs and checkpoints. Multi-node runs use torchrun's rendezvous options unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistEnv:
    """Join the torchrun process group if this process was launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    return env


def all_reduce_(tensor: torch.Tensor, env: DistEnv, op=None) -> torch.Tensor:
    """In-place sum (or ``op``) over ranks; a no-op in a single process."""
    if env.enabled:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
