"""Process-group set-up from torchrun's or Slurm's environment, and the few collectives the engine uses.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. A job launched by Slurm with
one task per GPU (``srun``) has SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID instead; MASTER_ADDR must
then be exported by the job script (the first host of the node list) — see the README's Slurm section.
gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launched: bool = False  # started by torchrun/srun: in a process group even when alone in it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Several processes, or a launcher's single one: DDP and SyncBN, as on N GPUs."""
        return self.world_size > 1 or self.launched


def _env_ranks() -> tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("MASTER_PORT", "29500")
        if "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                "Slurm launched several tasks but MASTER_ADDR is not set: export the first host "
                "of $SLURM_JOB_NODELIST as MASTER_ADDR in the job script"
            )
        return rank, world, int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda, got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is cuda but no CUDA device is available")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init(device_preference: str, cpu_threads: int = 0) -> DistContext:
    """Join the process group if launched by torchrun (even ``--nproc_per_node=1``: the same DDP, SyncBN
    and nccl/gloo path as N processes) or by Slurm with several tasks; return who and where we are.

    ``cpu_threads`` > 0 fixes torch's intra-op threads: CPU floating-point results depend on it.
    """
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    rank, world, local_rank = _env_ranks()
    device = resolve_device(device_preference, local_rank)
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun sets it, a plain process does not
    if launched and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, device, launched)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
