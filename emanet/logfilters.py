"""Dropping one known record of a library's logger (a notice or a traceback emanet reports better itself)."""

from __future__ import annotations

import logging


class DropPrefix(logging.Filter):
    """Drops the records whose message (``record.msg``, before its arguments are filled in) starts with
    ``prefix``; every other record passes."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def drop_records(logger: str, prefix: str) -> None:
    """Install :class:`DropPrefix` (``prefix``) on the logger named ``logger``, once per process: a second
    call with the same logger and prefix adds nothing."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, DropPrefix) and f.prefix == prefix for f in target.filters):
        target.addFilter(DropPrefix(prefix))
