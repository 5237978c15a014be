"""Progress for every long loop: a tqdm bar on a terminal, plain lines in log files.

On a terminal (``stream.isatty()``) ``progress`` is a tqdm bar. Anywhere else (a Snakemake, DVC or Slurm
log) a bar's carriage-return updates pile up into one line of megabytes, so it writes plain lines instead,
like mmsegmentation's and torchvision's loggers: one every ``interval_s`` seconds, one every ``every``
steps when the loop has a natural interval (a training log interval), and one at the end, e.g.::

    evaluate voc val ms_flip: 120/1449 images (8.3%), 3.1 images/s, ETA 0:07:05
    download VOCtrainval_11-May-2012.tar: 1.20GB/2.00GB (60.0%), 11.8MB/s, ETA 0:01:08
    train voc_k64: 400/30000 it (1.3%), 2.5 it/s, ETA 3:17:20, loss: 0.8123, lr: 9.88e-03

``set_postfix(**fields)`` appends ``key: value`` pairs to the following lines (and to the bar).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

DEFAULT_INTERVAL_S = 20.0


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS`` (days as ``D days, H:MM:SS``), the form mmseg's ETA uses."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Progress:
    """Counts steps of one loop and reports them (see the module docstring); use :func:`progress`."""

    def __init__(
        self,
        iterable: Iterable | None,
        *,
        total: float | None,
        desc: str,
        unit: str,
        enabled: bool,
        stream: IO[str],
        interval_s: float | None,
        every: int | None,
        initial: int,
        unit_scale: bool,
        tty: bool | None,
        delay_s: float = 0.0,
    ):
        if every is not None and every < 1:
            raise ValueError(f"progress every={every}: the line interval must be >= 1 step")
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.initial = initial
        self.enabled, self.stream, self.every, self.unit_scale = enabled, stream, every, unit_scale
        self.interval_s = DEFAULT_INTERVAL_S if interval_s is None else interval_s
        self.delay_s = delay_s
        self.postfix: dict[str, Any] = {}
        self.started = self._last_line = time.monotonic()
        self._last_n = initial
        self._closed = False
        is_tty = bool(getattr(stream, "isatty", lambda: False)()) if tty is None else tty
        self.bar = (
            tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                unit_scale=unit_scale,
                file=stream,
                dynamic_ncols=True,
                delay=delay_s,
            )
            if enabled and is_tty
            else None
        )
        self.lines = enabled and not is_tty

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError(f"progress {self.desc!r} was made without an iterable: call update(n) instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more steps (bytes, images, iterations); write a line when one is due."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines:
            now = time.monotonic()
            on_step = self.every is not None and int(self.n) // self.every > int(self.n - n) // self.every
            if now - self.started < self.delay_s:
                return
            if on_step or (self.interval_s > 0 and now - self._last_line >= self.interval_s):
                self._line(now)

    def emit(self) -> None:
        """Write a line now, whatever the cadence (a log row written off the ``every`` interval); on a
        terminal, redraw the bar."""
        if self.bar is not None:
            self.bar.refresh()
        elif self.lines:
            self._line(time.monotonic())

    def set_postfix(self, **fields: Any) -> None:
        """Show ``fields`` (e.g. ``loss=0.81``) after the counts from now on; floats get 4 significant digits."""
        self.postfix = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()}
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)

    def write(self, message: str) -> None:
        """Print ``message`` on its own line without breaking the bar (tqdm.write) or the lines."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar, or write the closing line (counts, rate and elapsed time) once."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.lines and (self.n != self._last_n or self.n == self.initial):
            now = time.monotonic()
            if now - self.started >= self.delay_s or self._last_n != self.initial:
                self._line(now, final=True)

    def _amount(self, value: float) -> str:
        return tqdm.format_sizeof(value, self.unit) if self.unit_scale else f"{value:g}"

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.started
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.total:
            parts = [
                f"{self._amount(self.n)}/{self._amount(self.total)}{'' if self.unit_scale else ' ' + self.unit} "
                f"({100 * self.n / self.total:.1f}%)"
            ]
        else:
            parts = [f"{self._amount(self.n)}{'' if self.unit_scale else ' ' + self.unit}"]
        parts.append(f"{self._amount(rate)}/s" if self.unit_scale else f"{rate:.3g} {self.unit}/s")
        if final or not self.total:
            parts.append(f"elapsed {format_duration(elapsed)}")
        else:
            remaining = (self.total - self.n) / rate if rate > 0 else float("nan")
            parts.append(f"ETA {format_duration(remaining)}" if remaining == remaining else "ETA unknown")
        parts.extend(f"{k}: {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {', '.join(parts)}", file=self.stream, flush=True)
        self._last_line, self._last_n = now, self.n


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    stream: IO[str] | None = None,
    interval_s: float | None = None,
    every: int | None = None,
    initial: int = 0,
    unit_scale: bool = False,
    tty: bool | None = None,
    delay_s: float = 0.0,
) -> Progress:
    """Progress over ``iterable`` (iterate the result) or a loop counted by hand (``update(n)``).

    ``total`` defaults to ``len(iterable)`` when it has one; ``unit_scale`` formats counts as sizes (bytes:
    ``1.20GB``); ``every`` adds a line every that many steps and ``interval_s`` (default 20 s, 0 for none)
    one after that long without a line; ``initial`` is where a resumed loop starts; ``delay_s``: nothing
    at all for a loop that ends sooner (hashing a small file), as tqdm's ``delay``. ``enabled=False``
    reports nothing (other ranks than rank 0, ``--quiet``). ``stream`` defaults to ``sys.stderr``
    (looked up at the call); ``tty`` overrides the terminal check. Raises ValueError for ``every < 1``.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return Progress(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        enabled=enabled,
        stream=sys.stderr if stream is None else stream,
        interval_s=interval_s,
        every=every,
        initial=initial,
        unit_scale=unit_scale,
        tty=tty,
        delay_s=delay_s,
    )
