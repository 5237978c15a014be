"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of cores, processes, images); else argparse's usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def add_params_file_options(p: argparse.ArgumentParser) -> None:
    """``--params`` (default params.yaml) and ``--profile`` (default: the file's own), for commands that always
    read a params file."""
    p.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    p.add_argument("--profile", help="tiny | paper (default: params.yaml's profile)")


def add_set_option(p: argparse.ArgumentParser, example: str) -> None:
    """Repeatable ``--set KEY=VALUE`` overrides of the params file (``example``: one shown in the help)."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a parameter, e.g. --set {example} (repeatable)",
    )


def add_params_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="read paths, mirrors and the manifest from this params.yaml (pipeline mode)")
    p.add_argument("--profile", help="with --params: tiny | paper (default: the file's profile)")


def profile_config(args: argparse.Namespace):
    """The profile's configuration when --params is given (pipeline mode), else None."""
    if not args.params:
        return None
    from emanet.config import load_params, resolve

    return resolve(load_params(args.params), args.profile)


def need(value, flag: str):
    if value is None:
        raise ValueError(f"{flag} is required unless --params gives it")
    return value


def synth_dir(cfg) -> Path:
    """The synthetic archives live beside the profile's manifest."""
    return Path(need(cfg.sources.manifest, "sources.manifest")).parent
