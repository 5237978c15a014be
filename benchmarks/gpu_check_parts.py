"""The Python parts of benchmarks/gpu_check.sh (run by it; see its header).

    python benchmarks/gpu_check_parts.py kill-after-checkpoint CHECKPOINT RUN_DIR -- COMMAND...
        start COMMAND, SIGKILL it and every process below it as soon as CHECKPOINT exists, and print
        one JSON object: the checkpoint's iteration, whether the run had already finished (model.pt in
        RUN_DIR: then the kill came too late to test a resume), seconds waited.
    python benchmarks/gpu_check_parts.py compare-weights A/model.pt B/model.pt [C/model.pt]
        JSON: whether B's weights equal A's bit for bit, the largest absolute difference, and with C (a
        second uninterrupted run) the same between A and C: the run-to-run noise floor on this device.
    python benchmarks/gpu_check_parts.py eval-speed OUT_JSON PROTOCOL -- EMANET_EVALUATE_ARGS...
        resolve the configuration as `emanet evaluate` does and call the public
        emanet.engine.evaluate.evaluate twice (cold: model loading and first kernels included; warm),
        timing each; write {protocol, images, cold_s, warm_s, images_per_s_cold, images_per_s_warm, miou}.
    python benchmarks/gpu_check_parts.py merge OUTDIR
        OUTDIR/status/*.json (exit status, seconds, log, or why skipped) and OUTDIR/parts/*.json (each part's
        figures) into OUTDIR/gpu_check.json: {part: {"status": ..., "result": ...}}.
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


def kill_after_checkpoint(checkpoint: Path, run_dir: Path, command: list[str], limit_s: float = 400) -> dict:
    proc = subprocess.Popen(command, start_new_session=True)
    began = time.monotonic()
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() - began < limit_s:
        time.sleep(0.01)
    waited = time.monotonic() - began
    exited_alone = proc.poll() is not None
    for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun starts its workers in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if not checkpoint.exists():
        return {"ok": False, "error": f"{checkpoint} never appeared (exit status {proc.returncode}, {waited:.1f} s)"}
    import torch

    iteration = torch.load(checkpoint, map_location="cpu", weights_only=False)["iteration"]
    finished = (run_dir / "model.pt").exists()
    return {"ok": not finished and not exited_alone, "checkpoint_iteration": iteration, "finished_before_kill": finished,
            "seconds_to_checkpoint": waited,
            **({"error": "the run finished before the kill: raise GPU_CHECK_RESUME_ITERATIONS"} if finished else {})}


def compare_weights(a: Path, b: Path, c: Path | None) -> dict:
    import torch

    def diff(x: dict, y: dict) -> tuple[bool, float]:
        if x.keys() != y.keys():
            return False, float("inf")
        same = all(torch.equal(x[k], y[k]) for k in x)
        worst = max(((x[k].double() - y[k].double()).abs().max().item() for k in x if x[k].is_floating_point()),
                    default=0.0)
        return same, worst

    first, second = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    same, worst = diff(first, second)
    result = {"resumed_bit_identical": same, "resumed_max_abs_diff": worst}
    if c is not None:
        same_c, worst_c = diff(first, torch.load(c, map_location="cpu", weights_only=True))
        result.update(noise_floor_bit_identical=same_c, noise_floor_max_abs_diff=worst_c)
    result["ok"] = same or (c is not None and not result["noise_floor_bit_identical"]
                            and worst <= 10 * max(result["noise_floor_max_abs_diff"], 1e-12))
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
    report = {"protocol": protocol, "images": images, "scales": result.get("scales"), "flip": result.get("flip"),
              "amp": cfg.train.amp, "device": cfg.train.device, "cold_s": times[0], "warm_s": times[1],
              "images_per_s_cold": images / times[0], "images_per_s_warm": images / times[1],
              "miou": result.get("miou"), "ok": True}
    out.write_text(json.dumps(report, indent=1))
    return report


def merge(outdir: Path) -> dict:
    """{part: {"status": {rc, seconds, log} or {skipped}, "result": the part's own JSON}} for every part."""
    merged: dict[str, dict] = {}
    for kind in ("status", "parts"):
        for path in sorted((outdir / kind).glob("*.json")):
            try:
                value = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                value = {"error": f"{path}: not JSON ({exc})"}
            merged.setdefault(path.stem, {})["status" if kind == "status" else "result"] = value
    tmp = outdir / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
    tmp.replace(outdir / "gpu_check.json")
    return merged


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "kill-after-checkpoint":
        split = rest.index("--")
        result = kill_after_checkpoint(Path(rest[0]), Path(rest[1]), rest[split + 1:])
    elif command == "compare-weights":
        result = compare_weights(Path(rest[0]), Path(rest[1]), Path(rest[2]) if len(rest) > 2 else None)
    elif command == "eval-speed":
        split = rest.index("--")
        result = eval_speed(Path(rest[0]), rest[1], rest[split + 1:])
    elif command == "merge":
        result = merge(Path(rest[0]))
        print(f"{rest[0]}/gpu_check.json: {len(result)} parts")
        return 0
    else:
        print(f"unknown part {command!r}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
