"""Run under ``torchrun``: each rank feeds its share of one global batch through an EMA unit.

Writes the bases after one training step, per rank, to ``OUT/bases_rank<R>.pt``. The test compares
them with one process that sees the whole batch.
"""

import os
import sys

import torch
import torch.distributed as dist

from emanet.models.ema import EMAUnit
from tests.helpers.models import bn_momentum, ema_config


def global_batch() -> torch.Tensor:
    return torch.relu(torch.randn(8, 16, 6, 6, generator=torch.Generator().manual_seed(1)))


def make_unit() -> EMAUnit:
    torch.manual_seed(0)
    return EMAUnit(16, ema_config(num_bases=8), bn_momentum()).train()


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    unit = make_unit()
    shard = global_batch().chunk(world)[rank]
    for _ in range(3):  # three iterations, so drift between ranks would compound
        unit(shard)
    torch.save(unit.bases, os.path.join(out_dir, f"bases_rank{rank}.pt"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
