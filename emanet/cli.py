"""``emanet`` command line: a thin layer of argument parsing over the library's functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from emanet.config import ConfigError
from emanet.data.fetch import FetchError
from emanet.data.sources import DataError
from emanet.io import atomic_write_json

Handler = Callable[[argparse.Namespace], int]


def _bench_complexity(args: argparse.Namespace) -> int:
    from emanet import bench

    result = bench.complexity(args.backbone, args.size, args.output_stride, args.num_bases, args.stages,
                              args.stem)
    if args.output:
        atomic_write_json(args.output, result)
    print(json.dumps(result) if args.json else bench.format_complexity(result))
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    from emanet import bench

    result = bench.latency(args.channels, args.size, args.batch, min_run_time=args.min_run_time)
    print(json.dumps(result) if args.json else bench.format_latency(result))
    return 0


def _download(args: argparse.Namespace) -> int:
    from emanet.data import download

    for path in download.fetch(args.name, args.raw_dir, args.mirror, args.manifest, progress=not args.quiet):
        print(path)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from emanet.data.synthetic import synthesize

    sizes = tuple(int(v) for v in args.image_size.split(","))
    print(synthesize(args.out, args.images_per_split, args.seed, args.dataset or None, sizes))
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from emanet.data.prepare import OFFICIAL_COUNTS, prepare

    if args.no_count_check:
        expected = None
    elif args.manifest:
        expected = json.loads(Path(args.manifest).read_text())["counts"][args.dataset]
    else:
        expected = OFFICIAL_COUNTS[args.dataset]
    print(prepare(args.dataset, args.raw_dir, args.out, expected, args.workers, progress=not args.quiet))
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from emanet.data.prepare import CONVERTERS
    from emanet.data.synthetic import WRITERS

    p = sub.add_parser("synth", help="write small archives in the official formats (tiny profile, tests)",
                       description="Writes, for every archive the paper profile downloads, a small one with the "
                                   "official name, layout and formats, plus manifest.json (name, size, sha256, "
                                   "split counts) for `emanet download --manifest` and `emanet prepare --manifest`.")
    p.add_argument("--out", required=True, help="folder for the archives")
    p.add_argument("--images-per-split", type=int, default=12, help="images per split (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", default="80,128", metavar="MIN,MAX", help="image side range (default 80,128)")
    p.add_argument("--dataset", action="append", choices=list(WRITERS), help="only these (repeatable)")
    p.set_defaults(handler=_synth)

    p = sub.add_parser("prepare", help="convert official archives or trees to the uniform layout",
                       description="Converts DATASET from its downloaded archives (or an extracted official tree, "
                                   "or for voc an existing SegmentationClassAug/) into OUT/DATASET/{images,labels,"
                                   "splits,meta.json}. The official split counts are asserted unless told otherwise.")
    p.add_argument("dataset", choices=sorted(CONVERTERS))
    p.add_argument("--raw-dir", required=True, help="folder with the archives or extracted trees")
    p.add_argument("--out", required=True, help="output root (the dataset goes to OUT/DATASET)")
    checks = p.add_mutually_exclusive_group()
    checks.add_argument("--no-count-check", action="store_true", help="do not assert split counts")
    checks.add_argument("--manifest", metavar="PATH", help="assert the counts of an `emanet synth` manifest instead")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="conversion processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_prepare)


def _add_download(sub: argparse._SubParsersAction) -> None:
    from emanet.data.catalog import DATASETS, WEIGHTS

    p = sub.add_parser("download", help="fetch a dataset's archives or an ImageNet checkpoint, verified",
                       description="Resumable, checksummed download of every file NAME needs. Mirrors are "
                                   "tried first (each a base URL holding the files under their names), then "
                                   "the catalog's URLs. file:// and http(s):// URLs work.")
    p.add_argument("name", choices=[*DATASETS, *WEIGHTS], metavar="NAME",
                   help=f"one of: {', '.join([*DATASETS, *WEIGHTS])}")
    p.add_argument("--raw-dir", required=True, help="folder for the downloaded files")
    p.add_argument("--mirror", action="append", default=[], metavar="URL", help="mirror base URL (repeatable)")
    p.add_argument("--manifest", metavar="PATH",
                   help="JSON manifest (name, size, sha256) whose checksums replace the catalog's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_download)


def _resolve(args: argparse.Namespace):
    from emanet.config import load_params, resolve

    params = load_params(args.params)
    return params, resolve(params, args.profile, args.set, args.experiment)


def _run_dir(args: argparse.Namespace, cfg) -> Path:
    return Path(args.out or f"results/{cfg.profile}") / "runs" / cfg.experiment


def _table_tags(params: dict, experiment: str) -> dict[str, str]:
    tables = sorted(name for name, table in (params.get("tables") or {}).items()
                    if experiment in _table_experiments(table))
    return {"tables": ",".join(tables)} if tables else {}


def _table_experiments(table: dict) -> set[str]:
    return {cell.get("experiment") for row in table.get("rows", []) for cell in row.get("cells", [])} | \
        {row.get("experiment") for row in table.get("rows", [])}


def _train(args: argparse.Namespace) -> int:
    from emanet.engine.train import train

    params, cfg = _resolve(args)
    print(train(cfg, _run_dir(args, cfg), _table_tags(params, cfg.experiment)))
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="a key of params.yaml's experiments")
    p.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    p.add_argument("--profile", help="tiny | paper (default: params.yaml's profile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set model.ema.num_bases=32 (repeatable)")
    p.add_argument("--out", help="results root (default results/<profile>); the run goes to OUT/runs/<experiment>")


def _evaluate(args: argparse.Namespace) -> int:
    from emanet.engine.evaluate import SCALES_NOTE, evaluate

    _, cfg = _resolve(args)
    scales = [float(v) for v in args.scales.split(",")] if args.scales else None
    result = evaluate(cfg, _run_dir(args, cfg), args.multi_scale, args.flip, scales, args.stages, args.split,
                      Path(args.save_predictions) if args.save_predictions else None)
    print(f"{cfg.experiment} [{result['protocol']}] on {result['split']} ({result['images']} images): "
          f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}")
    if args.multi_scale:
        print(f"scales {result['scales']}, flip {result['flip']}: {SCALES_NOTE}")
    return 0


def _track_sync(args: argparse.Namespace) -> int:
    from emanet.tracking import sync_run

    for run_dir in args.run_dir:
        print(f"{run_dir}: MLflow run {sync_run(run_dir, args.tracking_uri)}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="mIoU of a trained experiment, single-scale or MS+flip",
                       description="Scores the experiment's model.pt. Single-scale as the official code by default; "
                                   "--multi-scale/--flip for the paper's MS+Flip. Start with torchrun to spread the "
                                   "images over processes (each image is counted once).")
    _add_run_options(p)
    p.add_argument("--multi-scale", action="store_true", help="average softmax over --scales")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scales", help="comma-separated, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (default: params eval.scales)")
    p.add_argument("--stages", type=int, help="T_eval of the EMA unit (default: as trained)")
    p.add_argument("--split", help="default: params eval.split")
    p.add_argument("--save-predictions", metavar="DIR", help="write each prediction as a VOC-palette PNG")
    p.set_defaults(handler=_evaluate)
    track = sub.add_parser("track", help="MLflow utilities").add_subparsers(dest="track_command", required=True)
    p = track.add_parser("sync", help="replay run folders into MLflow (after an outage, or to another server)")
    p.add_argument("run_dir", nargs="+", help="run folders (results/<profile>/runs/<experiment>)")
    p.add_argument("--tracking-uri", help="default: the run's own, else $MLFLOW_TRACKING_URI")
    p.set_defaults(handler=_track_sync)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one experiment (resumes from its last checkpoint)",
                       description="Trains an experiment of params.yaml with the official recipe. Start it with "
                                   "torchrun for several processes. Rerunning the same command resumes.")
    _add_run_options(p)
    p.set_defaults(handler=_train)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="cost and speed of the backbone and the heads",
                           description="Regenerate Table 1's cost columns, or time the heads here.")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="{complexity,latency}")

    cx = bench_sub.add_parser("complexity", help="params / MACs / activation memory (Table 1)",
                              description="Params, MACs (m*n*p rule) and activation bytes of the backbone and "
                                          "each head's overhead; defaults are Table 1's setting.")
    cx.add_argument("--backbone", default="resnet101", choices=["resnet50", "resnet101", "resnet152"])
    cx.add_argument("--stem", default="deep", choices=["deep", "torchvision"])
    cx.add_argument("--size", type=int, default=513, help="square input size (default 513)")
    cx.add_argument("--output-stride", type=int, default=8, choices=[8, 16])
    cx.add_argument("--num-bases", type=int, default=64, help="K of the EMA unit (default 64)")
    cx.add_argument("--stages", type=int, default=3, help="T of the EMA unit (default 3)")
    cx.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    cx.add_argument("--output", metavar="PATH", help="also write the JSON object to PATH (atomically)")
    cx.set_defaults(handler=_bench_complexity)

    lat = bench_sub.add_parser("latency", help="time each head's forward and forward+backward",
                               description="Times fc0 + block of every head on this machine and prints "
                                           "ratios against the EMA head.")
    lat.add_argument("--channels", type=int, default=512, help="C of the heads (default 512)")
    lat.add_argument("--size", type=int, default=65, help="feature map side (default 65 = 513 at OS 8)")
    lat.add_argument("--batch", type=int, default=2,
                     help="images per call (default 2: ASPP's pooled BN needs 2 to train)")
    lat.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per measurement")
    lat.add_argument("--json", action="store_true")
    lat.set_defaults(handler=_bench_latency)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emanet", description=__doc__.split("\n")[0].strip("`"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_download(sub)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ConfigError, DataError, FetchError, FileNotFoundError, ValueError) as exc:
        print(f"emanet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
