"""emanet train | evaluate | track sync."""

from __future__ import annotations

import argparse
from pathlib import Path

from emanet.io import atomic_write_json


def resolve_run(args: argparse.Namespace):
    """(params, resolved config, run folder) of ``--experiment`` in ``--profile``."""
    from emanet.config import load_params, resolve

    params = load_params(args.params)
    cfg = resolve(params, args.profile, args.set, args.experiment)
    return params, cfg, Path(args.out or f"results/{cfg.profile}") / "runs" / cfg.experiment


def train(args: argparse.Namespace) -> int:
    from emanet import pipeline
    from emanet.engine.train import init_weights, run_identity
    from emanet.engine.train import train as run_training

    params, cfg, run_dir = resolve_run(args)
    if args.replace_changed:
        _set_aside_if_changed(run_dir, run_identity(cfg, init_weights(cfg, run_dir)))
    tables = pipeline.tables_of(params, cfg.experiment)
    print(run_training(cfg, run_dir, {"tables": ",".join(tables)} if tables else {}))
    return 0


def _set_aside_if_changed(run_dir: Path, identity: dict) -> None:
    """Move a run folder of another configuration, or one started from other weights, to
    ``<run>.replaced-<its hash>[-<its init digest>]`` (nothing is deleted)."""
    from emanet.tracking import read_run_info

    info = read_run_info(run_dir)
    old = {key: info.get(key) for key in identity}
    if not old["config_hash"] or old == identity:
        return
    suffix = old["config_hash"] + (f"-{old['init_sha256'][:12]}" if old.get("init_sha256") else "")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{suffix}")
    copies = 1
    while target.exists():  # the same run set aside before (a parent retrained back and forth)
        copies += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{suffix}.{copies}")
    run_dir.rename(target)
    what = "configuration" if old["config_hash"] != identity["config_hash"] else "initial weights"
    print(f"{run_dir}: {what} changed; the old run is kept in {target}")


def evaluate(args: argparse.Namespace) -> int:
    from emanet import pipeline
    from emanet.engine.evaluate import SCALES_NOTE, protocol_name
    from emanet.engine.evaluate import evaluate as run_evaluation

    params, cfg, run_dir = resolve_run(args)
    if args.for_tables:
        protocols = pipeline.protocols(params, cfg.experiment)
    else:
        stages = [int(v) for v in args.stages.split(",")] if args.stages else [None]
        protocols = [protocol_name(args.multi_scale, args.flip, t) for t in stages]
    scales = [float(v) for v in args.scales.split(",")] if args.scales else None
    results = run_evaluation(cfg, run_dir, protocols, scales, args.split,
                             Path(args.save_predictions) if args.save_predictions else None)
    for name, result in results.items():
        if result["miou"] is None:
            print(f"{cfg.experiment} [{name}] on {result['split']} ({result['images']} images, no public labels): "
                  f"packaged as {result['submission']} for {result['server']}")
            continue
        print(f"{cfg.experiment} [{name}] on {result['split']} ({result['images']} images): "
              f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}")
        if result["scales"] != [1.0]:
            print(f"  scales {result['scales']}, flip {result['flip']}: {SCALES_NOTE}")
    if args.for_tables:
        atomic_write_json(run_dir / "evaluation.json", {n: {k: r[k] for k in ("miou", "submission") if k in r}
                                                        for n, r in results.items()})
    return 0


def track_sync(args: argparse.Namespace) -> int:
    from emanet.tracking import sync_run

    for run_dir in args.run_dir:
        print(f"{run_dir}: MLflow run {sync_run(run_dir, args.tracking_uri)}")
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="a key of params.yaml's experiments")
    p.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    p.add_argument("--profile", help="tiny | paper (default: params.yaml's profile)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set model.ema.num_bases=32 (repeatable)")
    p.add_argument("--out", help="results root (default results/<profile>); the run goes to OUT/runs/<experiment>")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one experiment (resumes from its last checkpoint)",
                       description="Trains an experiment of params.yaml with the official recipe. Start it with "
                                   "torchrun for several processes. Rerunning the same command resumes.")
    add_run_options(p)
    p.add_argument("--replace-changed", action="store_true",
                   help="if the run folder holds another configuration, set it aside and start afresh "
                        "(what the pipelines do when params change)")
    p.set_defaults(handler=train)

    p = sub.add_parser("evaluate", help="mIoU of a trained experiment, single-scale or MS+flip",
                       description="Scores the experiment's model.pt. Single-scale as the official code by default; "
                                   "--multi-scale/--flip for the paper's MS+Flip. Start with torchrun to spread the "
                                   "images over processes (each image is counted once).")
    add_run_options(p)
    p.add_argument("--multi-scale", action="store_true", help="average softmax over --scales")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scales", help="comma-separated, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (default: params eval.scales)")
    p.add_argument("--stages", help="T_eval of the EMA unit, or a comma-separated list (default: as trained)")
    p.add_argument("--for-tables", action="store_true",
                   help="every protocol params.yaml's tables need from this experiment; writes evaluation.json")
    p.add_argument("--split", help="default: params eval.split")
    p.add_argument("--save-predictions", metavar="DIR", help="write each prediction as a VOC-palette PNG")
    p.set_defaults(handler=evaluate)

    track = sub.add_parser("track", help="MLflow utilities").add_subparsers(dest="track_command", required=True)
    p = track.add_parser("sync", help="replay run folders into MLflow (after an outage, or to another server)")
    p.add_argument("run_dir", nargs="+", help="run folders (results/<profile>/runs/<experiment>)")
    p.add_argument("--tracking-uri", help="default: the run's own, else $MLFLOW_TRACKING_URI")
    p.set_defaults(handler=track_sync)
