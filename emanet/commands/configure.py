"""emanet configure: the runs' identity files the pipelines' stages depend on (emanet.runs.configure)."""

from __future__ import annotations

import argparse

from emanet.commands.common import add_params_file_options


def configure(args: argparse.Namespace) -> int:
    from emanet.config import check_all, load_params, resolve
    from emanet.runs.configure import configs_dir, configure

    params = load_params(args.params)
    check_all(params)  # every run of every profile, as check-params and the Snakefile do
    done = configure(params, args.profile, args.out)
    where = configs_dir(resolve(params, args.profile).profile, args.out)
    print(
        f"{where}: {len(done['written'])} written, {len(done['unchanged'])} unchanged, "
        f"{len(done['removed'])} removed"
        + "".join(f"\n  {how} {path}" for how in ("written", "removed") for path in done[how])
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "configure",
        help="write each run's training and evaluation identity (results/<profile>/configs/), only if changed",
        description="Checks the params file like check-params, then writes results/<profile>/configs/<run>/"
        "train.json (what determines the run's weights), <run>/evaluate.json (what determines its metrics) "
        "and report.json (the tables and figures), each only when its content changes, and removes those "
        "of runs no longer in the plan. The pipelines' stages depend on these files: Snakemake runs this "
        "step when it reads the Snakefile, DVC as its configure stage.",
    )
    add_params_file_options(p)
    p.add_argument("--out", help="the profile's results folder (default results/<profile>)")
    p.set_defaults(handler=configure)
