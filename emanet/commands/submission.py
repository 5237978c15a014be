"""emanet submission score | record: the VOC test set's evaluation-server round trip."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path


def score(args: argparse.Namespace) -> int:
    """Score a package against ground-truth PNGs, reading it exactly as the server would."""
    from emanet.data.files import read_id_list
    from emanet.data.layout import read_meta, split_path
    from emanet.engine import submission
    from emanet.engine.metrics import scores

    meta = read_meta(args.dataset)
    ids = read_id_list(split_path(args.dataset, args.split))
    matrix = submission.score(Path(args.tarball), Path(args.labels), ids, meta["num_classes"], meta["ignore_index"])
    result = scores(matrix.numpy(), meta["classes"])
    for name, iou in result["per_class"].items():
        print(f"{name:>16s} {'n/a' if iou is None else f'{100 * iou:.2f}'}")
    print(f"{args.tarball}: mIoU {100 * result['miou']:.2f} over {len(ids)} images")
    return 0


def record(args: argparse.Namespace) -> int:
    """Store the evaluation server's score of a packaged submission as the run's metrics for ``--protocol``."""
    from emanet.commands.runs import resolve_run
    from emanet.data.archives.transfer import file_digests
    from emanet.engine.evaluate import sync_to_mlflow, write_metrics
    from emanet.runs.folder import submission_path
    from emanet.runs.identity import digest, evaluation_identity

    _, cfg, run_dir = resolve_run(args)
    summary_path = submission_path(run_dir, args.protocol, "json")
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path}: no packaged submission; run `emanet evaluate --experiment "
            f"{cfg.experiment} --for-tables` first"
        )
    summary = json.loads(summary_path.read_text())
    now = digest(evaluation_identity(cfg, [args.protocol]))
    if summary.get("evaluation_identity") != now:
        raise ValueError(
            f"{summary_path}: packaged for evaluation identity {summary.get('evaluation_identity', 'unknown')}, "
            f"the experiment's is {now} now: evaluate again and submit the new package"
        )
    if file_digests(Path(summary["submission"]), ["sha256"])["sha256"] != summary["submission_sha256"]:
        raise ValueError(f"{summary['submission']}: changed since it was packaged; evaluate again")
    if not 0.0 <= args.miou <= 100.0:
        raise ValueError(f"--miou is a percentage, got {args.miou}")
    per_class = _per_class(Path(args.per_class)) if args.per_class else {}
    result = {
        **{
            k: summary[k]
            for k in (
                "protocol",
                "split",
                "images",
                "scales",
                "flip",
                "experiment",
                "evaluation_identity",
                "model_sha256",
                "submission",
                "submission_sha256",
            )
        },
        "miou": args.miou / 100.0,
        "per_class": per_class,
        "scored_by": f"PASCAL VOC evaluation server ({args.url or summary['server']})",
    }
    print(write_metrics(run_dir, result, default=args.protocol == "ss"))
    sync_to_mlflow(run_dir, cfg.tracking.enabled)
    print("rebuild the tables with `emanet report` (or `snakemake --forcerun report`)")
    return 0


def _per_class(path: Path) -> dict[str, float]:
    """class -> IoU (a fraction) from ``class,iou`` rows in percent, as the server's result page lists them.

    UTF-8 (a BOM, as Excel's "CSV UTF-8" writes, is dropped; CRLF or CR line ends); a ``class,...`` header
    row, blank lines, surrounding blanks, empty trailing cells and a ``%`` after the number are tolerated.
    Raises ValueError naming the file (and line) for anything else."""
    from emanet.textfile import read_text_file

    reader = csv.reader(io.StringIO(read_text_file(path), newline=""))
    per_class = {}
    for row in reader:
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells or cells[0].lower() == "class":
            continue
        try:
            name, value = cells
            iou = float(value.removesuffix("%").strip())
            if not 0.0 <= iou <= 100.0:  # also refuses nan and inf
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{path}: expected 'class,iou' rows with IoU in percent (0 to 100); line "
                f"{reader.line_num} is {','.join(row)!r}"
            ) from None
        if name in per_class:
            raise ValueError(f"{path}: class {name!r} is listed twice (line {reader.line_num}); keep one row per class")
        per_class[name] = iou / 100.0
    return per_class


def register(sub: argparse._SubParsersAction) -> None:
    from emanet.commands.runs import add_run_options

    group = sub.add_parser("submission", help="VOC test set: score a package, or record the server's score")
    commands = group.add_subparsers(dest="submission_command", required=True)
    p = commands.add_parser(
        "score",
        help="score a packaged submission against ground-truth PNGs",
        description="Reads the tar.gz as the evaluation server does (results/VOC2012/"
        "Segmentation/comp6_test_cls/<id>.png, every test id once) and scores it.",
    )
    p.add_argument("tarball")
    p.add_argument("--labels", required=True, help="folder of ground-truth PNGs <id>.png")
    p.add_argument(
        "--dataset",
        required=True,
        help="the prepared dataset whose split the package covers (e.g. data/tiny/prepared/voc_test)",
    )
    p.add_argument("--split", default="test")
    p.set_defaults(handler=score)

    p = commands.add_parser(
        "record",
        help="store the evaluation server's mIoU for an experiment's package",
        description="After uploading results/<profile>/runs/<experiment>/submission_<protocol>"
        ".tar.gz to the server, enter its answer; the report then shows it.",
    )
    add_run_options(p)
    p.add_argument("--protocol", default="ms_flip", help="the protocol the package was made with (default ms_flip)")
    p.add_argument("--miou", type=float, required=True, help="the server's mIoU in percent, e.g. 87.7")
    p.add_argument("--per-class", metavar="CSV", help="optional class,iou rows (percent) from the server's page")
    p.add_argument("--url", help="the result's page on the server, kept with the metrics")
    p.set_defaults(handler=record)
