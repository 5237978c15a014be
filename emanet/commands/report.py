"""emanet report."""

from __future__ import annotations

import argparse
from pathlib import Path

from emanet.commands.common import add_params_file_options


def report(args: argparse.Namespace) -> int:
    from emanet.config import load_params
    from emanet.report import build_report

    params = load_params(args.params)
    profile = args.profile or params["profile"]
    if args.from_mlflow:
        return _from_mlflow(args, params, profile)
    print(build_report(params, profile, Path(args.results or f"results/{profile}")))
    return 0


def _from_mlflow(args: argparse.Namespace, params: dict, profile: str) -> int:
    """Print tables rebuilt from mlflow.search_runs alone (metric columns; costs live in the bench file)."""
    from emanet import plan
    from emanet.config import resolve
    from emanet.report.settings import annotated_tables
    from emanet.report.tables import to_markdown
    from emanet.tracking import default_uri, metrics_from_mlflow

    cfg = resolve(params, profile)
    datasets = args.dataset or sorted({c.data.dataset for c in plan.configs(params, profile).values()})
    names = [cfg.tracking.experiment.format(profile=profile, dataset=d) for d in datasets]
    runs = metrics_from_mlflow(args.from_mlflow if args.from_mlflow != "-" else default_uri(), names)
    results = Path(args.results or f"results/{profile}")
    tables = annotated_tables(params, profile, results, mlflow_runs=runs)
    for table in tables:
        if not args.table or table.name in args.table:
            print(to_markdown(table))
    return 0


def tracking_server(args: argparse.Namespace) -> int:
    from emanet.tracking.server import serve

    return serve(args.backend_store_uri, Path(args.artifacts_destination), args.host, args.port, args.workers)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tracking-server",
        help="run an MLflow server for a lab (PostgreSQL backend)",
        description="Starts `mlflow server` with the given backend store (e.g. "
        "postgresql://mlflow@dbhost:5432/mlflow) and artifact root on shared storage, "
        "waits until the tracking API answers, prints the MLFLOW_TRACKING_URI to use, "
        "and runs until interrupted.",
    )
    p.add_argument("--backend-store-uri", required=True, help="e.g. postgresql://user@host:5432/mlflow")
    p.add_argument("--artifacts-destination", required=True, help="artifact root (shared storage)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for a lab network)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(handler=tracking_server)

    p = sub.add_parser(
        "report",
        help="every table and figure, ours beside the paper's",
        description="Writes RESULTS/report/: each table as Markdown and LaTeX, report.html with all "
        "tables and figures, report.json with every number and where it came from.",
    )
    add_params_file_options(p)
    p.add_argument("--results", help="results root (default results/<profile>)")
    p.add_argument(
        "--from-mlflow",
        metavar="URI",
        help="print tables whose metric cells come from MLflow alone ('-' for the default tracking URI)",
    )
    p.add_argument(
        "--dataset",
        action="append",
        help="with --from-mlflow: only this dataset's MLflow experiment "
        "(repeatable; default: every dataset the runs train on)",
    )
    p.add_argument("--table", action="append", help="with --from-mlflow: only these tables (repeatable)")
    p.set_defaults(handler=report)
