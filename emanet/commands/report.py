"""emanet report."""

from __future__ import annotations

import argparse
from pathlib import Path


def report(args: argparse.Namespace) -> int:
    from emanet.config import load_params
    from emanet.report import build_report

    params = load_params(args.params)
    profile = args.profile or params["profile"]
    print(build_report(params, profile, Path(args.results or f"results/{profile}")))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="every table and figure, ours beside the paper's",
                       description="Writes RESULTS/report/: each table as Markdown and LaTeX, report.html with all "
                                   "tables and figures, report.json with every number and where it came from.")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--profile", help="tiny | paper (default: params.yaml's profile)")
    p.add_argument("--results", help="results root (default results/<profile>)")
    p.set_defaults(handler=report)
