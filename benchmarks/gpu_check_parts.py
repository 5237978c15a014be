"""The Python parts of benchmarks/gpu_check.sh (run by it; see its header).

python benchmarks/gpu_check_parts.py environment OUT_JSON PROFILE
    torch/CUDA/cuDNN/NCCL versions, the device, Python, the profile and the git commit (None where git
    is missing or the folder is no repository) into OUT_JSON, and printed.
python benchmarks/gpu_check_parts.py kill-after-checkpoint CHECKPOINT RUN_DIR -- COMMAND...
    start COMMAND in a session of its own, SIGKILL it and every process below it as soon as CHECKPOINT
    exists, and print one JSON object: the checkpoint's iteration, whether the run had already finished
    (model.pt in RUN_DIR: then the kill came too late to test a resume), seconds waited. It waits at most
    $GPU_CHECK_PART_LIMIT_S (the part's time limit, set by gpu_check.sh) minus 10 s (else 400 s), and
    on SIGTERM/SIGINT (gpu_check.sh's `timeout`) or any other way out kills COMMAND's process group and
    every process below COMMAND (torchrun's workers run in sessions of their own), so nothing is left
    training.
python benchmarks/gpu_check_parts.py compare-weights A/model.pt B/model.pt [C/model.pt]
    JSON: whether B's weights equal A's bit for bit, the largest absolute difference, and with C (a
    second uninterrupted run) the same between A and C: the run-to-run noise floor on this device.
python benchmarks/gpu_check_parts.py eval-speed OUT_JSON PROTOCOL -- EMANET_EVALUATE_ARGS...
    resolve the configuration as `emanet evaluate` does and call the public
    emanet.engine.evaluate.evaluate twice (cold: model loading and first kernels included; warm),
    timing each; write {protocol, images, cold_s, warm_s, images_per_s_cold, images_per_s_warm, miou}.
python benchmarks/gpu_check_parts.py log-tail LOG [LINES]
    a log's last LINES (20) lines before torchrun's own failure report, which only says a worker failed.
python benchmarks/gpu_check_parts.py merge WORKDIR OUTDIR PART...
    WORKDIR/status/*.json (exit status, seconds, limit, or why skipped) and WORKDIR/parts/*.json (each
    part's figures) into OUTDIR/gpu_check.json: {part: {"status": ..., "result": ...}}. A failed part's
    status gains "log_tail" (its log's last 20 lines, before torchrun's failure report) and "log"
    (logs/NAME.log: the log copied into OUTDIR); a PART named but without a status gets {"missing": ...},
    so every part is accounted for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


#: Seconds kept free of a part's time limit for torch's import and the kill (kill-after-checkpoint).
LIMIT_MARGIN_S = 10
#: A failed part's log lines copied into gpu_check.json.
LOG_TAIL_LINES = 20


class _Terminated(Exception):
    """SIGTERM or SIGINT arrived (gpu_check.sh's timeout): unwind so the child's processes are killed."""


def _raise_terminated(signum: int, _frame) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group and every process below ``proc`` (listed before any is killed, while
    the tree still hangs together), then reap ``proc``."""
    pids = [proc.pid, *_descendants(proc.pid)]
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # proc leads its own session, so its group is its own
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:  # torchrun starts its workers in sessions of their own: not in proc's group
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def part_limit_s(default: float = 400) -> float:
    """How long kill-after-checkpoint may wait: $GPU_CHECK_PART_LIMIT_S minus LIMIT_MARGIN_S (at least 1 s),
    else ``default``. Raises ValueError naming the variable when it is not a number."""
    value = os.environ.get("GPU_CHECK_PART_LIMIT_S")
    if value is None:
        return default
    try:
        return max(1.0, float(value) - LIMIT_MARGIN_S)
    except ValueError:
        raise ValueError(f"GPU_CHECK_PART_LIMIT_S={value!r}: expected seconds (a number)") from None


def kill_after_checkpoint(checkpoint: Path, run_dir: Path, command: list[str], limit_s: float = 400) -> dict:
    """Run ``command`` until ``checkpoint`` exists (at most ``limit_s`` seconds), then SIGKILL it and all its
    processes; see the module docstring for the JSON. SIGTERM/SIGINT during the wait kill them too, and
    re-raise as exit status 143/130."""
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGINT)}
    proc = None
    try:
        proc = subprocess.Popen(command, start_new_session=True)
        began = time.monotonic()
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() - began < limit_s:
            time.sleep(0.01)
        waited = time.monotonic() - began
        exited_alone = proc.poll() is not None
    except _Terminated as exc:
        print(f"kill-after-checkpoint: {exc}: killing {command[0]} and every process below it", file=sys.stderr)
        raise SystemExit(128 + (signal.SIGTERM if str(exc) == "SIGTERM" else signal.SIGINT)) from None
    finally:
        for sig in previous:  # a second signal must not interrupt the kill
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            _kill_tree(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not checkpoint.exists():
        return {
            "ok": False,
            "error": f"{checkpoint} never appeared within {limit_s:.0f} s (exit status "
            f"{proc.returncode}, {waited:.1f} s)",
        }
    from emanet.engine.checkpoint import load as load_checkpoint

    iteration = load_checkpoint(checkpoint)["iteration"]
    finished = (run_dir / "model.pt").exists()
    return {
        "ok": not finished and not exited_alone,
        "checkpoint_iteration": iteration,
        "finished_before_kill": finished,
        "seconds_to_checkpoint": waited,
        **({"error": "the run finished before the kill: raise GPU_CHECK_RESUME_ITERATIONS"} if finished else {}),
    }


def compare_weights(a: Path, b: Path, c: Path | None) -> dict:
    import torch

    from emanet.models.weights import load_weights_file

    def diff(x: dict, y: dict) -> tuple[bool, float]:
        if x.keys() != y.keys():
            return False, float("inf")
        same = all(torch.equal(x[k], y[k]) for k in x)
        worst = max(
            ((x[k].double() - y[k].double()).abs().max().item() for k in x if x[k].is_floating_point()), default=0.0
        )
        return same, worst

    first, second = (load_weights_file(p, "model.pt") for p in (a, b))
    same, worst = diff(first, second)
    result = {"resumed_bit_identical": same, "resumed_max_abs_diff": worst}
    if c is not None:
        same_c, worst_c = diff(first, load_weights_file(c, "model.pt"))
        result.update(noise_floor_bit_identical=same_c, noise_floor_max_abs_diff=worst_c)
    result["ok"] = same or (
        c is not None
        and not result["noise_floor_bit_identical"]
        and worst <= 10 * max(result["noise_floor_max_abs_diff"], 1e-12)
    )
    return result


def eval_speed(out: Path, protocol: str, args: list[str]) -> dict:
    from emanet.cli import build_parser
    from emanet.commands.runs import resolve_run
    from emanet.engine.evaluate import evaluate

    parsed = build_parser().parse_args(["evaluate", *args])
    _, cfg, run_dir = resolve_run(parsed)
    times, result = [], None
    for _ in range(2):
        began = time.perf_counter()
        result = evaluate(cfg, run_dir, [protocol])[protocol]
        times.append(time.perf_counter() - began)
    images = result["images"]
    report = {
        "protocol": protocol,
        "images": images,
        "scales": result.get("scales"),
        "flip": result.get("flip"),
        "amp": cfg.train.amp,
        "device": cfg.train.device,
        "cold_s": times[0],
        "warm_s": times[1],
        "images_per_s_cold": images / times[0],
        "images_per_s_warm": images / times[1],
        "miou": result.get("miou"),
        "ok": True,
    }
    out.write_text(json.dumps(report, indent=1))
    return report


def environment(out: Path, profile: str) -> dict:
    """The machine's versions and device, the profile and the repository's git commit into ``out`` (JSON)."""
    import platform

    import torch

    cuda = torch.cuda.is_available()
    info = {
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count(),
        "python": platform.python_version(),
        "profile": profile,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "git_commit": _git_commit(Path(__file__).resolve().parents[1]),
    }
    out.write_text(json.dumps(info, indent=1))
    return info


def _git_commit(root: Path) -> str | None:
    """HEAD's commit of ``root``, or None when git is not installed, fails, or ``root`` is no repository."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


#: How torchrun's elastic agent begins its report of a failed worker (a traceback of its own and a summary, after
#: the worker's output): what the worker said, the cause, comes before it.
TORCHRUN_REPORT = "failed (exitcode:"


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a part's log, before torchrun's own failure report when there is one (that
    report only says a worker failed; the worker's error is above it)."""
    rows = text.splitlines()
    cut = next((i for i, row in enumerate(rows) if TORCHRUN_REPORT in row and "elastic" in row), len(rows))
    return rows[:cut][-lines:] + (["[torchrun's failure report follows in the log]"] if cut < len(rows) else [])


def _failed(status: dict) -> bool:
    return "rc" in status and status["rc"] != 0


def merge(workdir: Path, outdir: Path, parts: list[str] = ()) -> dict:
    """{part: {"status": {rc, seconds, limit_s, timed_out} or {skipped}, "result": the part's own JSON}} for
    every part, written atomically to ``outdir/gpu_check.json``; a failed part's log is copied to
    ``outdir/logs`` and its last lines put in its status; a name of ``parts`` without a status is
    marked missing."""
    from emanet.io import atomic_write_text

    merged: dict[str, dict] = {}
    for kind in ("status", "parts"):
        for path in sorted((workdir / kind).glob("*.json")):
            try:
                value = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                value = {"error": f"{path}: not JSON ({exc})"}
            merged.setdefault(path.stem, {})["status" if kind == "status" else "result"] = value
    for name in parts:
        merged.setdefault(name, {}).setdefault("status", {"missing": "gpu_check.sh gave this part no status"})
    for name, entry in merged.items():
        log = workdir / "logs" / f"{name}.log"
        if _failed(entry.get("status", {})) and log.is_file():
            text = log.read_text(errors="replace")
            entry["status"]["log_tail"] = log_tail(text)
            (outdir / "logs").mkdir(parents=True, exist_ok=True)
            (outdir / "logs" / log.name).write_text(text)
            entry["status"]["log"] = f"logs/{log.name}"
    atomic_write_text(outdir / "gpu_check.json", json.dumps(merged, indent=1, sort_keys=True))
    return merged


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "log-tail":  # FILE [LINES]: printed, for gpu_check.sh's console
        lines = log_tail(Path(rest[0]).read_text(errors="replace"), int(rest[1]) if len(rest) > 1 else LOG_TAIL_LINES)
        print("\n".join(lines))
        return 0
    if command == "environment":
        print("environment:", json.dumps(environment(Path(rest[0]), rest[1])))
        return 0
    if command == "kill-after-checkpoint":
        split = rest.index("--")
        result = kill_after_checkpoint(Path(rest[0]), Path(rest[1]), rest[split + 1 :], part_limit_s())
    elif command == "compare-weights":
        result = compare_weights(Path(rest[0]), Path(rest[1]), Path(rest[2]) if len(rest) > 2 else None)
    elif command == "eval-speed":
        split = rest.index("--")
        result = eval_speed(Path(rest[0]), rest[1], rest[split + 1 :])
    elif command == "merge":
        result = merge(Path(rest[0]), Path(rest[1]), rest[2:])
        print(f"{rest[1]}/gpu_check.json: {len(result)} parts")
        return 0
    else:
        print(f"unknown part {command!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
