"""emanet.progress: plain lines (no carriage returns) when the output is not a terminal, a bar when it is."""

from __future__ import annotations

import io

import pytest

from emanet import progress as progress_module
from emanet.progress import format_duration, progress


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_lines_every_interval_with_rate_eta_and_postfix(clock):
    out = io.StringIO()
    bar = progress(total=1449, desc="evaluate voc val ms_flip", unit="images", stream=out, interval_s=20)
    for i in range(1449):
        clock.now += 0.5  # 2 images/s
        bar.update(1)
        if i == 100:
            bar.set_postfix(miou=0.71234)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    # a line every 20 s of a 724.5 s loop, and the closing line
    assert len(lines) == 36 + 1
    assert lines[0] == "evaluate voc val ms_flip: 40/1449 images (2.8%), 2 images/s, ETA 0:11:44"
    assert lines[10].endswith("miou: 0.7123")
    assert lines[-1] == "evaluate voc val ms_flip: 1449/1449 images (100.0%), 2 images/s, elapsed 0:12:04, miou: 0.7123"


def test_every_step_interval_and_resumed_start(clock):
    out = io.StringIO()
    with progress(total=100, desc="train tiny", stream=out, every=25, interval_s=0, initial=50) as bar:
        for _ in range(50):
            clock.now += 1.0
            bar.update(1)
    lines = out.getvalue().splitlines()
    # steps 75 and 100 only; the rate counts the steps of this process (50 in 50 s), not the resumed ones
    assert lines == [
        "train tiny: 75/100 it (75.0%), 1 it/s, ETA 0:00:25",
        "train tiny: 100/100 it (100.0%), 1 it/s, ETA 0:00:00",
    ]


def test_bytes_are_sized_and_iteration_counts(clock):
    out = io.StringIO()
    chunks = [b"x" * 1_000_000] * 3

    def timed():
        for chunk in chunks:
            clock.now += 1.0
            yield chunk

    bar = progress(total=3_000_000, desc="download a.tar", unit="B", unit_scale=True, stream=out, interval_s=1.5)
    for chunk in timed():
        bar.update(len(chunk))
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "download a.tar: 2.00MB/3.00MB (66.7%), 1.00MB/s, ETA 0:00:01",
        "download a.tar: 3.00MB/3.00MB (100.0%), 1.00MB/s, elapsed 0:00:03",
    ]
    seen = list(progress(["a", "b"], desc="x", stream=out, interval_s=0))
    assert seen == ["a", "b"]
    assert out.getvalue().splitlines()[-1].startswith("x: 2/2 it (100.0%)")


def test_unknown_total_and_disabled(clock):
    out = io.StringIO()
    bar = progress(desc="hash a.tar", unit="B", unit_scale=True, stream=out, interval_s=0)
    clock.now += 2
    bar.update(4096)
    bar.close()
    assert out.getvalue() == "hash a.tar: 4.10kB, 2.05kB/s, elapsed 0:00:02\n"
    quiet = io.StringIO()
    with progress(total=10, desc="q", stream=quiet, enabled=False, interval_s=0, every=1) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_terminal_gets_a_tqdm_bar():
    out = io.StringIO()
    with progress(total=3, desc="bar", stream=out, tty=True) as bar:
        bar.update(3)
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()


def test_bad_every_and_missing_iterable():
    with pytest.raises(ValueError, match="every=0"):
        progress(total=3, desc="x", every=0)
    with pytest.raises(TypeError, match="update"):
        list(progress(total=3, desc="x", stream=io.StringIO()))


def test_format_duration():
    assert format_duration(425.9) == "0:07:05"
    assert format_duration(-3) == "0:00:00"


def test_delay_keeps_short_loops_silent(clock):
    out = io.StringIO()
    with progress(total=10, desc="sha256 small", stream=out, delay_s=2, interval_s=0.5) as bar:
        clock.now += 1
        bar.update(10)
    assert out.getvalue() == ""
    with progress(total=10, desc="sha256 big", stream=out, delay_s=2, interval_s=0.5) as bar:
        for _ in range(10):
            clock.now += 1
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sha256 big: 2/10 it") and lines[-1].startswith("sha256 big: 10/10 it (100.0%)")


def test_emit_writes_a_line_off_the_interval(clock):
    out = io.StringIO()
    bar = progress(total=10, desc="train x", stream=out, every=4, interval_s=0)
    for step in range(1, 11):
        clock.now += 1
        if step == 6:
            bar.set_postfix(val_miou="0.5000")
        bar.update(1)
        if step in (6, 10):
            bar.emit()
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["4/10", "6/10", "8/10", "10/10"]
    assert lines[1].endswith("val_miou: 0.5000")
