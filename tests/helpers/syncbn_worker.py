"""Run under torchrun: GlobalBatchNorm2d on each rank's half must match BatchNorm2d on the whole batch."""

import sys

import torch
import torch.distributed as dist

from emanet.engine.syncbn import GlobalBatchNorm2d


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    w = torch.randn(4, 3, 5, 5)
    ours, ref = GlobalBatchNorm2d(3), torch.nn.BatchNorm2d(3)
    shard = x.chunk(2)[rank].clone().requires_grad_(True)
    y = ours(shard)
    (y * w.chunk(2)[rank]).sum().backward()
    full = x.clone().requires_grad_(True)
    y_ref = ref(full)
    (y_ref * w).sum().backward()
    weight_grad = ours.weight.grad.clone()
    dist.all_reduce(weight_grad)  # DDP would average; the sum over ranks is the full-batch gradient
    pairs = {
        "output": (y, y_ref.chunk(2)[rank]),
        "input_grad": (shard.grad, full.grad.chunk(2)[rank]),
        "weight_grad": (weight_grad, ref.weight.grad),
        "running_var": (ours.running_var, ref.running_var),
        "running_mean": (ours.running_mean, ref.running_mean),
    }
    # largest difference in units of the reference's largest magnitude: float32 rounding of sums taken in
    # another order is a few ulps of that scale (~1e-7), whatever the values' scale
    errors = {name: ((a - b).abs().max() / b.abs().max()).item() for name, (a, b) in pairs.items()}
    torch.save(errors, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
