"""emanet train | evaluate | track sync."""

from __future__ import annotations

import argparse
from pathlib import Path

from emanet.commands.common import add_params_file_options, add_set_option
from emanet.io import atomic_write_json


def resolve_run(args: argparse.Namespace):
    """(params, resolved config, run folder) of ``--experiment`` in ``--profile``."""
    from emanet.config import load_params, resolve
    from emanet.runs.folder import run_dir

    params = load_params(args.params)
    cfg = resolve(params, args.profile, args.set, args.experiment)
    return params, cfg, run_dir(args.out or f"results/{cfg.profile}", cfg.experiment)


def train(args: argparse.Namespace) -> int:
    from emanet.bench import timings

    since = timings.started()  # before the imports: torch's is part of what a job costs
    from emanet import plan
    from emanet.config import ConfigError
    from emanet.engine.train import run_identity
    from emanet.engine.train import train as run_training
    from emanet.runs import folder

    params, cfg, run_dir = resolve_run(args)
    if args.replace_changed:
        folder.set_aside_if_changed(run_dir, run_identity(cfg, run_dir))
    imported = folder.read_info(run_dir).get("imported")
    if imported:
        raise ConfigError(
            f"{run_dir} holds weights imported from {imported.get('source')} (`emanet "
            f"import-weights`), not a trained run: pass --replace-changed to set them aside and "
            f"train, or use another --out"
        )
    tables = plan.tables_of(params, cfg.experiment)
    print(run_training(cfg, run_dir, {"tables": ",".join(tables)} if tables else {}))
    timings.record(run_dir, "train", since)  # DVC keeps no timings: `emanet bench pipeline` reads these
    return 0


def import_weights(args: argparse.Namespace) -> int:
    from emanet import plan
    from emanet.data.archives.transfer import file_digests
    from emanet.engine.import_run import import_conflict
    from emanet.engine.import_run import import_weights as run_import
    from emanet.models.import_weights import read_foreign
    from emanet.runs.folder import MODEL, set_aside

    params, cfg, run_dir = resolve_run(args)
    source = Path(args.source)
    read_foreign(source, args.format)  # an unreadable file fails before any run folder is touched
    if args.replace_changed and import_conflict(run_dir, cfg, file_digests(source, ["sha256"])["sha256"]):
        set_aside(run_dir, "other weights imported")
    tables = plan.tables_of(params, cfg.experiment)
    record = run_import(cfg, run_dir, source, args.format, {"tables": ",".join(tables)} if tables else {})
    same = (
        [f"--profile {args.profile}"] * bool(args.profile)
        + [f"--set {item}" for item in args.set]
        + [f"--out {args.out}"] * bool(args.out)
    )
    print(
        f"{cfg.experiment}: {source} imported into {run_dir / MODEL} ({record['layout']}, "
        f"{record['classes']} classes, sha256 {record['sha256'][:12]}…); evaluate it with "
        f"`emanet evaluate {' '.join([f'--experiment {cfg.experiment}', *same])}`"
    )
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from emanet.bench import timings

    since = timings.started()  # before the imports: torch's is part of what a job costs
    from emanet import plan
    from emanet.engine.evaluate import SCALES_NOTE
    from emanet.engine.evaluate import evaluate as run_evaluation

    params, cfg, run_dir = resolve_run(args)
    if args.for_tables:
        protocols = plan.protocols(params, cfg.experiment)
    else:
        from emanet.protocols import Protocol

        stages = [int(v) for v in args.stages.split(",")] if args.stages else [None]
        protocols = [Protocol(args.multi_scale, args.flip, t).name for t in stages]
    scales = [float(v) for v in args.scales.split(",")] if args.scales else None
    results = run_evaluation(
        cfg, run_dir, protocols, scales, args.split, Path(args.save_predictions) if args.save_predictions else None
    )
    for name, result in results.items():
        if result["miou"] is None:
            print(
                f"{cfg.experiment} [{name}] on {result['split']} ({result['images']} images, no public labels): "
                f"packaged as {result['submission']} for {result['server']}"
            )
            continue
        print(
            f"{cfg.experiment} [{name}] on {result['split']} ({result['images']} images): "
            f"mIoU {100 * result['miou']:.2f}  pixel acc {100 * result['pixel_acc']:.2f}"
        )
        if result["scales"] != [1.0]:
            print(f"  scales {result['scales']}, flip {result['flip']}: {SCALES_NOTE}")
    if args.for_tables:
        from emanet.runs.folder import EVALUATION

        atomic_write_json(
            run_dir / EVALUATION,
            {n: {k: r[k] for k in ("miou", "submission") if k in r} for n, r in results.items()},
        )
        timings.record(run_dir, "evaluate", since)
    return 0


def track_sync(args: argparse.Namespace) -> int:
    """Sync each run folder; a refused one is reported (store's message and fix) and the others still go;
    an unreachable store stops at once. Exit status 2 if any folder was not synced."""
    import sys

    from emanet.tracking import StoreRefused, sync_run

    failed = 0
    for run_dir in args.run_dir:
        try:
            print(f"{run_dir}: MLflow run {sync_run(run_dir, args.tracking_uri)}")
        except StoreRefused as exc:
            print(f"emanet: error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def check_params(args: argparse.Namespace) -> int:
    """Every name, run, finetune chain and table of the params file checked, and every run resolved in every
    profile (:func:`emanet.config.check_all`): what DVC needs from a stage of its own, since its ``foreach``
    silently drops a stage whose name it cannot carry (Snakemake checks the same when it reads the Snakefile)."""
    from emanet import plan
    from emanet.config import check_all, load_params

    params = load_params(args.params)
    check_all(params)
    plan.validate(params)
    configs = plan.configs(params, args.profile)
    print(
        f"{args.params}: {len(plan.experiments(params))} experiments, {len(plan.finetunes(params))} "
        f"finetunes, {len(params.get('tables') or {})} tables, {len(plan.datasets(params, args.profile))} "
        f"datasets: names and settings valid for profile {next(iter(configs.values())).profile}"
    )
    return 0


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="a key of params.yaml's experiments")
    add_params_file_options(p)
    add_set_option(p, "model.ema.num_bases=32")
    p.add_argument("--out", help="results root (default results/<profile>); the run goes to OUT/runs/<experiment>")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-params",
        help="check every name and run of a params file (exit 2 naming the key)",
        description="Loads the params file, checks every name (experiments, finetunes, tables, "
        "profiles, datasets) against the one pattern, every finetune chain and table, "
        "and resolves every run in every profile (each setting's type and choices). DVC runs it as a stage "
        "of its own.",
    )
    add_params_file_options(p)
    p.set_defaults(handler=check_params)
    p = sub.add_parser(
        "train",
        help="train one experiment (resumes from its last checkpoint)",
        description="Trains an experiment of params.yaml with the official recipe. Start it with "
        "torchrun for several processes. Rerunning the same command resumes.",
    )
    add_run_options(p)
    p.add_argument(
        "--replace-changed",
        action="store_true",
        help="if the run folder holds a run of another training identity or other initial weights (or "
        "imported weights), set it aside and start afresh; an evaluation-only change keeps it (what the "
        "pipelines do when params change)",
    )
    p.set_defaults(handler=train)

    p = sub.add_parser(
        "evaluate",
        help="mIoU of a trained experiment, single-scale or MS+flip",
        description="Scores the experiment's model.pt. Single-scale as the official code by default; "
        "--multi-scale/--flip for the paper's MS+Flip. Start with torchrun to spread the "
        "images over processes (each image is counted once).",
    )
    add_run_options(p)
    p.add_argument("--multi-scale", action="store_true", help="average softmax over --scales")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped inputs")
    p.add_argument("--scales", help="comma-separated, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (default: params eval.scales)")
    p.add_argument("--stages", help="T_eval of the EMA unit, or a comma-separated list (default: as trained)")
    p.add_argument(
        "--for-tables",
        action="store_true",
        help="every protocol params.yaml's tables need from this experiment; writes evaluation.json",
    )
    p.add_argument("--split", help="default: params eval.split")
    p.add_argument("--save-predictions", metavar="DIR", help="write each prediction as a VOC-palette PNG")
    p.set_defaults(handler=evaluate)

    p = sub.add_parser(
        "import-weights",
        help="a foreign checkpoint (e.g. the released EMANet model) as an experiment's run",
        description="Puts SOURCE in the experiment's run folder as its model.pt (emanet's naming), "
        "with run.json recording the file, its SHA-256 and its layout, so that evaluate, "
        "predict, the report and MLflow treat it like a trained run. Reads the official "
        "EMANet checkpoint ({'net': ..., 'step': ...}), DataParallel/DDP 'module.' "
        "prefixes, nesting under net/state_dict/model, with or without BatchNorm's "
        "num_batches_tracked. The experiment gives the architecture, the classifier "
        "the number of classes; a checkpoint that does not fit is refused with the cause.",
    )
    p.add_argument("source", metavar="SOURCE", help="checkpoint file (read with torch.load(weights_only=True))")
    add_run_options(p)
    p.add_argument(
        "--format",
        choices=("auto", "official", "emanet"),
        default="auto",
        help="key naming: auto (detect, default), official (the authors' code) or emanet",
    )
    p.add_argument(
        "--replace-changed",
        action="store_true",
        help="if the run folder holds a trained run or other imported weights, set it aside first",
    )
    p.set_defaults(handler=import_weights)

    track = sub.add_parser("track", help="MLflow utilities").add_subparsers(dest="track_command", required=True)
    p = track.add_parser("sync", help="replay run folders into MLflow (after an outage, or to another server)")
    p.add_argument("run_dir", nargs="+", help="run folders (results/<profile>/runs/<experiment>)")
    p.add_argument("--tracking-uri", help="default: the run's own, else $MLFLOW_TRACKING_URI")
    p.set_defaults(handler=track_sync)
