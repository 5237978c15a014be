"""``emanet tracking-server``: an MLflow server for a lab, on PostgreSQL, health-checked for real.

MLflow's ``/health`` answers before the tracking API is usable (environment.md §3), so readiness is a
real API call (``experiments/search``). The server binds 127.0.0.1 unless told otherwise, stores runs
in the given backend (PostgreSQL for a lab: ``postgresql://user@host:5432/mlflow``; psycopg2-binary is
in the dev extra) and artifacts under ``--artifacts-destination`` (shared storage), proxied by the
server so clients need no access to that storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def mlflow_command(backend_store_uri: str, artifacts: Path, host: str, port: int, workers: int) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    return [str(mlflow), "server", "--host", host, "--port", str(port), "--workers", str(workers),
            "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts)]


def wait_ready(url: str, process: subprocess.Popen | None, timeout: float) -> None:
    """Poll the tracking API until it answers (not /health); raise if the server dies or times out."""
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(api, timeout=30):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{api} did not answer within {timeout:.0f} s")


def start(backend_store_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 2,
          log_file: Path | None = None, timeout: float = 180) -> subprocess.Popen:
    """Start the server in its own process group (stop it with :func:`stop`) and wait until it answers."""
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job workers outliving the server
    log = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(mlflow_command(backend_store_uri, artifacts, host, port, workers), env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(f"http://{host}:{port}", process, timeout)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve(backend_store_uri: str, artifacts: Path, host: str, port: int, workers: int) -> int:
    """Foreground: start, report readiness, and run until interrupted (then stop the whole group)."""
    process = start(backend_store_uri, artifacts, host, port, workers)
    print(f"MLflow tracking server ready: export MLFLOW_TRACKING_URI=http://{host}:{port}", flush=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(process)
