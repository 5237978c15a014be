"""``emanet``: a thin layer of argument parsing over the library; each group lives in emanet.commands."""

from __future__ import annotations

import argparse
import logging
import sys

from emanet.commands import bench, configure, data, predict, report, runs, status, submission
from emanet.config import ConfigError, ParamsError
from emanet.data.archives.transfer import FetchError
from emanet.data.files import DataError
from emanet.logfilters import drop_records

GROUPS = (data, configure, runs, status, predict, submission, bench, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emanet",
        description="EMANet (ICCV 2019) reproduced end to end: data, model, training, evaluation, tables.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    drop_cuda_home_notice()
    try:
        return args.handler(args)
    except (ConfigError, DataError, FetchError, FileNotFoundError, ValueError) as exc:
        message = _message(exc)
        if isinstance(exc, ParamsError):
            message = _with_params_file(message, args)
        print(f"emanet: error: {message}", file=sys.stderr)
        return 2


def drop_cuda_home_notice() -> None:
    """Drop torch's "No CUDA runtime is found, using CUDA_HOME=..." warning (once per process), which
    ``torch.utils.cpp_extension`` logs when imported (through ``torch.utils.benchmark``, torch.compile)
    on a machine without a CUDA runtime: nothing in emanet builds C++/CUDA extensions, so it only says
    that a CPU machine is one. Every other record of that logger passes."""
    drop_records("torch.utils.cpp_extension", "No CUDA runtime is found, using CUDA_HOME=")


def _with_params_file(message: str, args: argparse.Namespace) -> str:
    """A params error names where the parameters came from (the params file, and the --set overrides when
    there are some); the resolver's messages (emanet.config) never name it themselves."""
    params = getattr(args, "params", None)
    if not params:
        return message
    sets = getattr(args, "set", None) or []
    source = f"{params} with --set {' '.join(sets)}" if sets else str(params)
    return f"{source}: {message}"


def _message(exc: BaseException) -> str:
    """The error's own message. An error raised in a DataLoader worker reaches the main process as the
    same type whose message is torch's "Caught X in DataLoader worker process N. Original Traceback ..."
    (the worker's whole traceback as text): keep only the original message, which names the file."""
    text = str(exc)
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    kind = type(exc)
    name = (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )
    _, found, original = text.rpartition(f"\n{name}: ")
    return original.rstrip("\n") if found else text


if __name__ == "__main__":
    sys.exit(main())
