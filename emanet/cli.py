"""``emanet``: a thin layer of argument parsing over the library; each group lives in emanet.commands."""

from __future__ import annotations

import argparse
import logging
import sys

from emanet.commands import bench, data, report, runs, submission
from emanet.config import ConfigError
from emanet.data.fetch import FetchError
from emanet.data.sources import DataError

GROUPS = (data, runs, submission, bench, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emanet", description="EMANet (ICCV 2019) reproduced end to end: "
                                                                "data, model, training, evaluation, tables.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ConfigError, DataError, FetchError, FileNotFoundError, ValueError) as exc:
        print(f"emanet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
