"""`emanet bench train`: the engine's training step timed phase by phase; and benchmarks/gpu_check.sh's CPU path."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emanet.bench import training as bench_train
from emanet.config import ConfigError, load_params, resolve
from emanet.engine import train as engine_train
from tests.helpers.runs import ROOT, cli_env, emanet, torchrun

TINY = ["--profile", "tiny", "--iterations", "2", "--warmup", "1", "--set", "train.batch_size=2"]


@pytest.fixture
def restore_backends():
    """bench_train sets process-wide kernel choices (deterministic algorithms, cuDNN): put them back."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.get_num_threads(),
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
    torch.set_num_threads(saved[4])


def _cfg(*sets: str):
    return resolve(load_params(ROOT / "params.yaml"), "tiny", ["train.batch_size=2", *sets], "ema512")


def _check_result(result: dict, batch: int, iterations: int) -> None:
    ms = result["ms_per_iteration"]
    assert set(ms) == {"total", *bench_train.PHASES}
    assert all(ms[p] >= 0 for p in bench_train.PHASES) and ms["forward"] > 0 and ms["backward"] > 0
    assert ms["total"] == pytest.approx(sum(ms[p] for p in bench_train.PHASES))
    assert result["images_per_s"] == pytest.approx(batch * 1e3 / ms["total"])
    assert result["peak_memory_bytes"] > 50 * 2**20 and result["peak_memory_kind"] == "process_peak_rss"
    assert result["loss_finite"] and result["loss_first"] > 0


def test_both_sources_time_the_engine_step(prepared_root, restore_backends, monkeypatch):
    """Synthetic and loader batches through the engine's own train_step, every timed and warm-up call."""
    calls = []
    real = engine_train.train_step
    monkeypatch.setattr(bench_train, "train_step", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    report = bench_train.bench_train(_cfg(f"data.root={prepared_root}"), iterations=2, warmup=1)
    assert [(r["variant"], r["source"]) for r in report["results"]] == [("config", "synthetic"), ("config", "loader")]
    assert report["skipped"] == [] and "ratios" not in report
    assert calls == [torch.Size([2, 3, 65, 65])] * 6  # (1 warm-up + 2 timed) x 2 sources, the configured crop
    for result in report["results"]:
        _check_result(result, 2, 2)
    loader = report["results"][1]["ms_per_iteration"]["data"]
    assert loader > report["results"][0]["ms_per_iteration"]["data"], "the loader decodes and augments"
    setting = report["setting"]
    assert (setting["batch_size"], setting["crop_size"], setting["compile"], setting["processes"]) == (2, 65, False, 1)
    assert setting["backbone"] == "resnet_tiny" and setting["classes"] == 21


def test_compare_gives_ratios_of_interleaved_variants(tmp_path, restore_backends, monkeypatch):
    """--compare: eager, compile and channels_last built from the same weights; ratios to eager."""
    built = []
    real = engine_train.TrainingStep.build.__func__
    monkeypatch.setattr(
        engine_train.TrainingStep,
        "build",
        classmethod(lambda cls, cfg, *a: built.append(cfg.train) or real(cls, cfg, *a)),
    )
    monkeypatch.setattr(torch, "compile", lambda module: module)  # compiling is slow; that it is asked for is the point
    report = bench_train.bench_train(
        _cfg(f"data.root={tmp_path}", "model.dropout=0.0"), iterations=1, warmup=0, sources=["synthetic"], compare=True
    )  # dropout's masks come from the shared RNG
    assert [(t.compile, t.channels_last) for t in built] == [(False, False), (True, False), (False, True)]
    assert [r["variant"] for r in report["results"]] == list(bench_train.COMPARE)
    ratios = report["ratios"]["synthetic"]
    assert ratios["eager"] == 1.0
    assert ratios["compile"] == pytest.approx(
        report["results"][1]["images_per_s"] / report["results"][0]["images_per_s"]
    )
    losses = [r["loss_first"] for r in report["results"]]
    assert losses[0] == losses[1], "the same initial weights and batch give the same first loss"


def test_compile_wraps_the_network_and_cudnn_benchmark_follows_determinism(restore_backends):
    from emanet.engine.dist import DistContext
    from emanet.models import build_model

    cfg = _cfg("train.compile=true")
    step = engine_train.TrainingStep.build(
        cfg, DistContext(0, 1, 0, torch.device("cpu")), build_model(cfg.model, 21), 255
    )
    assert isinstance(step.net, torch._dynamo.eval_frame.OptimizedModule) and step.net._orig_mod is step.model
    engine_train.configure_backends(False, torch.device("cpu"))
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    engine_train.configure_backends(True, torch.device("cpu"))
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled(), "strict on CPU: bit-exact resume"


def test_cli_table_says_why_the_loader_was_skipped(tmp_path):
    proc = emanet(
        [
            "bench",
            "train",
            *TINY,
            "--set",
            f"data.root={tmp_path / 'nowhere'}",
            "--output",
            str(tmp_path / "bench.json"),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.split()[:2] == ["config", "synthetic"] for line in lines), proc.stdout
    assert f"loader: skipped: {tmp_path / 'nowhere'}/voc/meta.json: not found" in proc.stdout
    header = next(line for line in lines if line.startswith("variant"))
    assert header.split()[2:8] == ["images/s", "ms/it", "data", "forward", "backward", "optimizer"]
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["skipped"][0]["source"] == "loader" and len(written["results"]) == 1
    proc = emanet(["bench", "train", *TINY, "--source", "loader", "--set", f"data.root={tmp_path / 'nowhere'}"])
    assert proc.returncode == 2 and "--source loader needs the prepared dataset" in proc.stderr
    assert "meta.json: not found" in proc.stderr


def test_bad_settings_are_refused_naming_them(restore_backends):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        bench_train.bench_train(_cfg("train.amp=bf16"), 1, 0, ["synthetic"])
    with pytest.raises(ConfigError, match="--iterations must be >= 1"):
        bench_train.bench_train(_cfg(), 0, 0, ["synthetic"])


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("train.batch_size", 0, "train.batch_size must be >= 1"),
        ("train.batch_size", -1, "train.batch_size must be >= 1"),
        ("train.crop_size", 0, "train.crop_size must be >= 1"),
        ("train.crop_size", -5, "train.crop_size must be >= 1"),
        ("data.workers", -1, "data.workers must be >= 0"),
        ("train.iterations", 0, "train.iterations must be >= 1"),
        ("train.checkpoint_interval", 0, "train.checkpoint_interval must be >= 1"),
        ("train.log_interval", -2, "train.log_interval must be >= 1"),
    ],
)
def test_validate_settings_names_the_key_and_the_fix(key, value, says):
    """`emanet train` and `emanet bench train` check these before any work (batch 0 was an IndexError, a
    negative data.workers torch's own message)."""
    with pytest.raises(ConfigError, match=f"{says}.*got {value}: set it in params.yaml or with --set {key}=N"):
        engine_train.validate_settings(_cfg(f"{key}={value}"), 1, torch.device("cpu"))
    engine_train.validate_settings(_cfg(), 1, torch.device("cpu"))


def test_cli_refuses_batch_zero_without_a_traceback(tmp_path):
    proc = emanet(["bench", "train", *TINY, "--set", "train.batch_size=0", "--set", f"data.root={tmp_path}"])
    assert proc.returncode == 2 and "train.batch_size must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- benchmarks/gpu_check.sh and its Python parts ------------------------------------------------------------------


def _parts():
    spec = importlib.util.spec_from_file_location("gpu_check_parts", ROOT / "benchmarks/gpu_check_parts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: A command that starts a grandchild in a session of its own (as torchrun starts its workers), writes the
#: grandchild's pid to argv[1], and sleeps.
_SPAWNER = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(g.pid))\n"
    "__import__('os').replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(120)\n"
)


def _gone(pid: int, within_s: float = 10) -> bool:
    """Whether ``pid`` is dead (absent, or a zombie waiting for a reaper) within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _wait_for(path: Path, within_s: float = 60) -> int:
    deadline = time.monotonic() + within_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_after_checkpoint_gives_up_at_its_limit_and_kills_every_process(tmp_path):
    """No checkpoint within the limit: the part says so, and no process of the command is left running."""
    parts = _parts()
    pid_file = tmp_path / "grandchild.pid"
    began = time.monotonic()
    result = parts.kill_after_checkpoint(
        tmp_path / "never.pt", tmp_path, [sys.executable, "-c", _SPAWNER, str(pid_file)], limit_s=3
    )
    assert time.monotonic() - began < 30
    assert result["ok"] is False and "never appeared within 3 s" in result["error"]
    assert _gone(_wait_for(pid_file, 1)), "the grandchild in its own session survived"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_after_checkpoint_on_sigterm_kills_every_process(tmp_path):
    """gpu_check.sh's `timeout` sends SIGTERM: the part kills the command's processes before it exits."""
    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks/gpu_check_parts.py"),
            "kill-after-checkpoint",
            str(tmp_path / "never.pt"),
            str(tmp_path),
            "--",
            sys.executable,
            "-c",
            _SPAWNER,
            str(pid_file),
        ],
        cwd=tmp_path,
        env=dict(os.environ, GPU_CHECK_PART_LIMIT_S="200"),
        stderr=subprocess.PIPE,
        text=True,
    )
    grandchild = _wait_for(pid_file)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "SIGTERM: killing" in err
    assert _gone(grandchild), "the grandchild in its own session survived the SIGTERM"


def test_part_limit_comes_from_gpu_check_less_a_margin(monkeypatch):
    parts = _parts()
    monkeypatch.delenv("GPU_CHECK_PART_LIMIT_S", raising=False)
    assert parts.part_limit_s() == 400
    monkeypatch.setenv("GPU_CHECK_PART_LIMIT_S", "150")
    assert parts.part_limit_s() == 150 - parts.LIMIT_MARGIN_S
    monkeypatch.setenv("GPU_CHECK_PART_LIMIT_S", "soon")
    with pytest.raises(ValueError, match="GPU_CHECK_PART_LIMIT_S='soon'"):
        parts.part_limit_s()


def test_merge_puts_a_failed_parts_reason_in_the_json_and_accounts_for_every_part(tmp_path):
    parts = _parts()
    work, out = tmp_path / "work", tmp_path / "out"
    for sub in ("status", "parts", "logs"):
        (work / sub).mkdir(parents=True)
    out.mkdir()
    (work / "status/ok.json").write_text('{"rc": 0, "seconds": 1}')
    (work / "logs/ok.log").write_text("fine\n")
    (work / "parts/ok.json").write_text('{"figure": 3}')
    (work / "status/bad.json").write_text('{"rc": 1, "seconds": 2}')
    worker = [f"line {i}" for i in range(30)] + ["emanet: error: train.batch_size must be >= 1"]
    torchrun_report = [
        "E1130 12:00:00.0 1 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 2) local_rank: 0",
        "Traceback (most recent call last):",
        "ChildFailedError",
    ]
    (work / "logs/bad.log").write_text("\n".join(worker + torchrun_report) + "\n")
    (work / "status/skipped.json").write_text('{"skipped": "no CUDA"}')
    merged = parts.merge(work, out, ["ok", "bad", "skipped", "never"])
    assert merged["ok"] == {"status": {"rc": 0, "seconds": 1}, "result": {"figure": 3}}
    bad = merged["bad"]["status"]
    assert bad["log_tail"] == worker[-20:] + ["[torchrun's failure report follows in the log]"]
    assert bad["log"] == "logs/bad.log" and (out / "logs/bad.log").read_text().endswith("ChildFailedError\n")
    assert merged["never"]["status"] == {"missing": "gpu_check.sh gave this part no status"}
    assert json.loads((out / "gpu_check.json").read_text()) == merged
    assert sorted(p.name for p in out.rglob("*")) == ["bad.log", "gpu_check.json", "logs"], "only failed logs"
    assert parts.log_tail("a\nb\nc", 2) == ["b", "c"]


def test_environment_without_git_records_no_commit(tmp_path, monkeypatch):
    parts = _parts()

    def no_git(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "git")

    monkeypatch.setattr(parts.subprocess, "run", no_git)
    info = parts.environment(tmp_path / "environment.json", "tiny")
    assert info["git_commit"] is None and info["profile"] == "tiny" and info["torch"] == torch.__version__
    assert json.loads((tmp_path / "environment.json").read_text()) == info

    def slow_git(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 30)

    monkeypatch.setattr(parts.subprocess, "run", slow_git)
    assert parts._git_commit(ROOT) is None


def _gpu_check(cwd: Path, out: str, **knobs: str) -> subprocess.CompletedProcess:
    env = cli_env(
        {
            "GPU_CHECK_PROFILE": "tiny",
            "GPU_CHECK_EVAL_IMAGES": "4",
            "GPU_CHECK_IMAGE_SIZE": "80,128",
            "GPU_CHECK_ITERATIONS": "1",
            "GPU_CHECK_WARMUP": "1",
            "GPU_CHECK_RESUME_BATCH": "4",
            "PYTHON": sys.executable,
            "CUDA_VISIBLE_DEVICES": "",
            "TMPDIR": str(cwd / "tmp"),
            **knobs,
        }
    )
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), out],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


ALL_PARTS = {
    "data_synth",
    "data_prepare",
    "cuda_tests",
    "resume_straight",
    "resume_straight2",
    "resume_kill",
    "resume_rerun",
    "resume",
    "eval_ss",
    "eval_ms_flip",
    "eval_ms_flip_bf16",
    "bench_fp32",
    "bench_bf16",
    "bench_fp16_channels_last",
    "bench_fp32_compile",
    "bench_bf16_compile",
    "bench_fp16_channels_last_compile",
}


def test_gpu_check_relative_outdir_small_and_every_part_accounted_for(tmp_path):
    """A relative OUTDIR is the caller's folder's, never the repository's; OUTDIR holds only gpu_check.json (the
    dataset lived in a temporary work folder, removed); skipping the training names it in the eval parts."""
    proc = _gpu_check(tmp_path, "out", GPU_CHECK_SKIP="cuda_tests resume bench")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert not (ROOT / "out").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["gpu_check.json"]
    assert list((tmp_path / "tmp").iterdir()) == [], "the temporary work folder is removed"
    merged = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert set(merged) == ALL_PARTS | {"environment"}
    assert merged["data_prepare"]["status"]["rc"] == 0
    assert merged["resume_straight"]["status"] == {"skipped": "GPU_CHECK_SKIP"}
    assert merged["resume_kill"]["status"] == {"skipped": "GPU_CHECK_SKIP"}
    for part in ("eval_ss", "eval_ms_flip"):
        assert merged[part]["status"] == {"skipped": "no trained model: resume_straight was skipped (GPU_CHECK_SKIP)"}
    assert merged["eval_ms_flip_bf16"]["status"] == {"skipped": "no CUDA"}


@pytest.mark.slow
def test_gpu_check_a_failed_training_says_why_and_blocks_what_needs_it(tmp_path):
    proc = _gpu_check(
        tmp_path,
        "out",
        GPU_CHECK_SKIP="cuda_tests eval_ms_flip bench",
        GPU_CHECK_RESUME_BATCH="0",
        GPU_CHECK_WORK="work",
    )
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    merged = json.loads((tmp_path / "out/gpu_check.json").read_text())
    failed = merged["resume_straight"]["status"]
    assert failed["rc"] != 0 and failed["log"] == "logs/resume_straight.log"
    assert any("train.batch_size must be >= 1" in line for line in failed["log_tail"])
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["gpu_check.json", "logs", "resume_straight.log"]
    for part in ("resume_straight2", "resume_kill", "resume_rerun", "resume"):
        assert merged[part]["status"] == {"skipped": "not run: resume_straight failed"}
    assert merged["eval_ss"]["status"] == {"skipped": "no trained model: resume_straight failed"}
    assert (tmp_path / "work/data/prepared/voc/meta.json").is_file(), "GPU_CHECK_WORK is kept, relative to the caller"


@pytest.mark.slow
def test_under_torchrun_with_one_process_it_is_distributed(tmp_path):
    """torchrun --nproc_per_node=1 joins a process group: DDP and the global BatchNorm, as with N processes."""
    proc = subprocess.run(
        [
            *torchrun(1),
            "-m",
            "emanet.cli",
            "bench",
            "train",
            *TINY,
            "--source",
            "synthetic",
            "--json",
            "--set",
            f"data.root={tmp_path}",
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["setting"]["distributed"] is True and report["setting"]["processes"] == 1
    _check_result(report["results"][0], 2, 2)


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_parts(tmp_path):
    """benchmarks/gpu_check.sh on a CPU at a tiny setting: CUDA parts skipped saying so, the others pass and
    their figures are in gpu_check.json (the resume bit for bit)."""
    env = cli_env(
        {
            "GPU_CHECK_PROFILE": "tiny",
            "GPU_CHECK_EVAL_IMAGES": "4",
            "GPU_CHECK_IMAGE_SIZE": "80,128",
            "GPU_CHECK_ITERATIONS": "1",
            "GPU_CHECK_WARMUP": "1",
            "GPU_CHECK_RESUME_BATCH": "4",
            "GPU_CHECK_SKIP": "compile",
            "PYTHON": sys.executable,
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for part in ("cuda_tests", "bench_bf16", "bench_fp16_channels_last", "eval_ms_flip_bf16"):
        assert f"{part}: skipped: no CUDA" in proc.stdout
    merged = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert merged["resume"]["result"]["resumed_bit_identical"] is True
    assert merged["resume_kill"]["result"]["checkpoint_iteration"] == 1
    assert merged["eval_ss"]["result"]["images"] == 4 and merged["eval_ms_flip"]["result"]["images_per_s_warm"] > 0
    assert merged["bench_fp32"]["result"]["results"][0]["images_per_s"] > 0
    assert merged["bench_bf16"]["status"] == {"skipped": "no CUDA"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.json"], "no part failed: no logs"
