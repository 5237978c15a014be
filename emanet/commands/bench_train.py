"""emanet bench train: the training step's speed and memory (:mod:`emanet.bench.training`)."""

from __future__ import annotations

import argparse
import json
import os

from emanet.commands.common import add_params_file_options, add_set_option
from emanet.io import atomic_write_json


def train(args: argparse.Namespace) -> int:
    from emanet.bench import training as bench_train
    from emanet.config import load_params, resolve

    cfg = resolve(load_params(args.params), args.profile, args.set, args.experiment)
    report = bench_train.bench_train(
        cfg, args.iterations, args.warmup, bench_train.resolve_sources(args.source), args.compare
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank has the (reduced) figures: one prints
        if args.output:
            atomic_write_json(args.output, report)
        print(json.dumps(report) if args.json else bench_train.format_report(report))
    return 0


def register(bench_sub: argparse._SubParsersAction) -> None:
    """``train`` under ``emanet bench``."""
    tr = bench_sub.add_parser(
        "train",
        help="time the training step (images/s, data/forward/backward/optimizer ms, peak memory)",
        description="Times the engine's own training iteration (DDP under torchrun, AMP, channels_last, compile, "
        "SGD, loss) at the configured batch and crop, on a fixed synthetic batch and through the real "
        "loader (skipped, saying why, when the dataset is not prepared). Weights are random: "
        "model.pretrained is not read.",
    )
    tr.add_argument("--experiment", default="ema512", help="a key of params.yaml's experiments (default ema512)")
    add_params_file_options(tr)
    add_set_option(tr, "train.amp=bf16")
    tr.add_argument("--iterations", type=int, default=10, help="timed iterations per variant and source (default 10)")
    tr.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed iterations first (default 3; compile and cudnn.benchmark tune in these)",
    )
    tr.add_argument(
        "--source",
        choices=("synthetic", "loader", "both"),
        default="both",
        help="batches from a fixed synthetic batch, the real loader, or both (default)",
    )
    tr.add_argument(
        "--compare",
        action="store_true",
        help="time eager, train.compile=true and train.channels_last=true in one run, interleaved, "
        "and print their images/s ratios to eager",
    )
    tr.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    tr.add_argument("--output", metavar="PATH", help="also write the JSON object to PATH (atomically; rank 0)")
    tr.set_defaults(handler=train)
