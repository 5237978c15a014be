"""`emanet bench train`: the engine's training step timed phase by phase; and benchmarks/gpu_check.sh's CPU path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from emanet import bench_train
from emanet.config import ConfigError, load_params, resolve
from emanet.engine import train as engine_train
from tests.helpers.runs import ROOT, cli_env, emanet, torchrun

TINY = ["--profile", "tiny", "--iterations", "2", "--warmup", "1", "--set", "train.batch_size=2"]


@pytest.fixture
def restore_backends():
    """bench_train sets process-wide kernel choices (deterministic algorithms, cuDNN): put them back."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.get_num_threads())
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
    monkeypatch.setattr(engine_train.TrainingStep, "build",
                        classmethod(lambda cls, cfg, *a: built.append(cfg.train) or real(cls, cfg, *a)))
    monkeypatch.setattr(torch, "compile", lambda module: module)  # compiling is slow; that it is asked for is the point
    report = bench_train.bench_train(_cfg(f"data.root={tmp_path}", "model.dropout=0.0"), iterations=1, warmup=0,
                                     sources=["synthetic"], compare=True)  # dropout's masks come from the shared RNG
    assert [(t.compile, t.channels_last) for t in built] == [(False, False), (True, False), (False, True)]
    assert [r["variant"] for r in report["results"]] == list(bench_train.COMPARE)
    ratios = report["ratios"]["synthetic"]
    assert ratios["eager"] == 1.0
    assert ratios["compile"] == pytest.approx(report["results"][1]["images_per_s"] / report["results"][0]["images_per_s"])
    losses = [r["loss_first"] for r in report["results"]]
    assert losses[0] == losses[1], "the same initial weights and batch give the same first loss"


def test_compile_wraps_the_network_and_cudnn_benchmark_follows_determinism(restore_backends):
    from emanet.engine.dist import DistContext
    from emanet.models import build_model

    cfg = _cfg("train.compile=true")
    step = engine_train.TrainingStep.build(cfg, DistContext(0, 1, 0, torch.device("cpu")),
                                           build_model(cfg.model, 21), 255)
    assert isinstance(step.net, torch._dynamo.eval_frame.OptimizedModule) and step.net._orig_mod is step.model
    engine_train.configure_backends(False, torch.device("cpu"))
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    engine_train.configure_backends(True, torch.device("cpu"))
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled(), "strict on CPU: bit-exact resume"


def test_cli_table_says_why_the_loader_was_skipped(tmp_path):
    proc = emanet(["bench", "train", *TINY, "--set", f"data.root={tmp_path / 'nowhere'}", "--output",
                   str(tmp_path / "bench.json")])
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


@pytest.mark.slow
def test_under_torchrun_with_one_process_it_is_distributed(tmp_path):
    """torchrun --nproc_per_node=1 joins a process group: DDP and the global BatchNorm, as with N processes."""
    proc = subprocess.run([*torchrun(1), "-m", "emanet.cli", "bench", "train", *TINY, "--source", "synthetic",
                           "--json", "--set", f"data.root={tmp_path}"], cwd=ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["setting"]["distributed"] is True and report["setting"]["processes"] == 1
    _check_result(report["results"][0], 2, 2)


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_parts(tmp_path):
    """benchmarks/gpu_check.sh on a CPU at a tiny setting: CUDA parts skipped saying so, the others pass and
    their figures are in gpu_check.json (the resume bit for bit)."""
    env = cli_env({"GPU_CHECK_PROFILE": "tiny", "GPU_CHECK_EVAL_IMAGES": "4", "GPU_CHECK_IMAGE_SIZE": "80,128",
                   "GPU_CHECK_ITERATIONS": "1", "GPU_CHECK_WARMUP": "1", "GPU_CHECK_RESUME_BATCH": "4",
                   "GPU_CHECK_SKIP": "compile", "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(tmp_path / "out")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for part in ("cuda_tests", "bench_bf16", "bench_fp16_channels_last", "eval_ms_flip_bf16"):
        assert f"{part}: skipped: no CUDA" in proc.stdout
    merged = json.loads((tmp_path / "out/gpu_check.json").read_text())
    assert merged["resume"]["result"]["resumed_bit_identical"] is True
    assert merged["resume_kill"]["result"]["checkpoint_iteration"] == 1
    assert merged["eval_ss"]["result"]["images"] == 4 and merged["eval_ms_flip"]["result"]["images_per_s_warm"] > 0
    assert merged["bench_fp32"]["result"]["results"][0]["images_per_s"] > 0
    assert merged["bench_bf16"]["status"] == {"skipped": "no CUDA"}
    assert not os.path.exists(tmp_path / "out/gpu_check.json.tmp")
