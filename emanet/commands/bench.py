"""emanet bench complexity | latency | pipeline | train."""

from __future__ import annotations

import argparse
import json

from emanet.commands import bench_train as train_command
from emanet.commands.common import add_params_file_options, positive_int
from emanet.io import atomic_write_json


def complexity(args: argparse.Namespace) -> int:
    from emanet.bench import complexity as bench

    result = bench.complexity(args.backbone, args.size, args.output_stride, args.num_bases, args.stages, args.stem)
    if args.output:
        atomic_write_json(args.output, result)
    print(json.dumps(result) if args.json else bench.format_complexity(result))
    return 0


def latency(args: argparse.Namespace) -> int:
    from emanet.bench import complexity as bench

    result = bench.latency(args.channels, args.size, args.batch, min_run_time=args.min_run_time)
    print(json.dumps(result) if args.json else bench.format_latency(result))
    return 0


def pipeline(args: argparse.Namespace) -> int:
    import os

    from emanet.bench import timings
    from emanet.config import load_params

    params = load_params(args.params)
    profile = args.profile or params.get("profile")
    summary = timings.pipeline_summary(
        params,
        profile,
        args.results or f"results/{profile}",
        args.cores if args.cores is not None else os.cpu_count() or 1,
        args.source,
    )
    print(json.dumps(summary, indent=2) if args.json else timings.format_summary(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="cost and speed of the backbone and the heads",
        description="Regenerate Table 1's cost columns, or time the heads here.",
    )
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="{complexity,latency,pipeline,train}")
    cx = bench_sub.add_parser(
        "complexity",
        help="params / MACs / activation memory (Table 1)",
        description="Params, MACs (m*n*p rule) and activation bytes of the backbone and "
        "each head's overhead; defaults are Table 1's setting.",
    )
    cx.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101", "resnet152"])
    cx.add_argument("--stem", default="deep", choices=["deep", "torchvision"])
    cx.add_argument("--size", type=int, default=513, help="square input size (default 513)")
    cx.add_argument("--output-stride", type=int, default=8, choices=[8, 16])
    cx.add_argument("--num-bases", type=int, default=64, help="K of the EMA unit (default 64)")
    cx.add_argument("--stages", type=int, default=3, help="T of the EMA unit (default 3)")
    cx.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    cx.add_argument("--output", metavar="PATH", help="also write the JSON object to PATH (atomically)")
    cx.set_defaults(handler=complexity)

    lat = bench_sub.add_parser(
        "latency",
        help="time each head's forward and forward+backward",
        description="Times fc0 + block of every head on this machine and prints ratios against the EMA head.",
    )
    lat.add_argument("--channels", type=int, default=512, help="C of the heads (default 512)")
    lat.add_argument("--size", type=int, default=65, help="feature map side (default 65 = 513 at OS 8)")
    lat.add_argument(
        "--batch", type=int, default=2, help="images per call (default 2: ASPP's pooled BN needs 2 to train)"
    )
    lat.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement")
    lat.add_argument("--json", action="store_true")
    lat.set_defaults(handler=latency)

    pl = bench_sub.add_parser(
        "pipeline",
        help="where the pipeline's time went: stages, slowest jobs, critical path",
        description="Summarises the pipeline's per-job timings: Snakemake's benchmark files "
        "(results/<profile>/benchmarks/) or, for DVC, the run folders' "
        "timings.json (training and evaluation only).",
    )
    add_params_file_options(pl)
    pl.add_argument("--results", help="results folder (default results/<profile>)")
    pl.add_argument(
        "--source",
        default="auto",
        choices=["auto", "snakemake", "runs"],
        help="benchmark files, run folders, or auto: the benchmark files when there are any",
    )
    pl.add_argument(
        "--cores", type=positive_int, help="cores the pipeline ran on, for the lower bound (default: this host's)"
    )
    pl.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    pl.set_defaults(handler=pipeline)
    train_command.register(bench_sub)
