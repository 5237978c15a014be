"""emanet status: which runs and whether the report are stale, and why (:mod:`emanet.runs.status`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emanet.commands.common import add_params_file_options


def status(args: argparse.Namespace) -> int:
    """Print the status (a table, or ``--json``); exit 1 with ``--check`` when anything is stale or not made."""
    from emanet.config import load_params, resolve
    from emanet.runs.status import stale_pairs, status, table

    params = load_params(args.params)
    profile = resolve(params, args.profile).profile
    found = status(params, profile, Path(args.out or f"results/{profile}"))
    print(json.dumps(found, indent=2) if args.json else table(found), end="\n" if args.json else "")
    return 1 if args.check and stale_pairs(found) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="list the runs (and the report) whose code, settings, data or parent weights changed since made",
        description="Compares what each run folder recorded when it was trained and evaluated (training and "
        "evaluation identities, initial weights, data checksum, code digests) with what would make it now, "
        "and the report's record with the tables' settings, its code and the runs it read. Reads only; "
        "Snakemake does not see code or settings changes, this does.",
    )
    add_params_file_options(p)
    p.add_argument("--out", help="results root (default results/<profile>)")
    p.add_argument(
        "--json", action="store_true", help="machine-readable: {profile, runs: {run: {state, stale}}, report}"
    )
    p.add_argument("--check", action="store_true", help="exit status 1 when any run or the report is stale or not made")
    p.set_defaults(handler=status)
