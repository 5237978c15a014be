"""``emanet tracking-server``: an MLflow server for a lab, on PostgreSQL, health-checked for real.

MLflow's ``/health`` answers before the tracking API is usable (docs/faq.md#mlflow-server-readiness), so readiness is a
real API call (``experiments/search``). The server binds 127.0.0.1 unless told otherwise, stores runs
in the given backend (PostgreSQL for a lab: ``postgresql://user@host:5432/mlflow``; psycopg2-binary is
in the dev extra) and artifacts under ``--artifacts-destination`` (shared storage), proxied by the
server so clients need no access to that storage. A server that stops before it answers (a backend
whose schema is out of date, a port in use, ...) is a :class:`ServerStartError` quoting its output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path


class ServerStartError(ValueError):
    """``mlflow server`` stopped (or never answered) before its API was usable; the message quotes its
    last output and the fix where one is known. A ValueError, so the CLI exits with status 2."""


def mlflow_command(backend_store_uri: str, artifacts: Path, host: str, port: int, workers: int) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    return [
        str(mlflow),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
    ]


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


def _pump(process: subprocess.Popen, log_file: Path | None, lines: int = 60) -> tuple[deque, threading.Thread]:
    """Drain the server's output for its whole life (to ``log_file`` if given), keeping its last lines."""
    tail: deque[str] = deque(maxlen=lines)
    sink = open(log_file, "ab") if log_file else None

    def run() -> None:
        try:
            for line in iter(process.stdout.readline, b""):
                tail.append(line.decode(errors="replace").rstrip())
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            process.stdout.close()
            if sink:
                sink.close()

    thread = threading.Thread(target=run, name="mlflow-server-output", daemon=True)
    thread.start()
    return tail, thread


def _why(what: str, tail: deque, backend_store_uri: str, log_file: Path | None) -> str:
    """What stopped the server: its last error line (the whole tail if none), and the fix where known."""
    lines = [line for line in tail if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    said = (errors[-1].strip() if errors else " | ".join(lines[-5:]) or "no output").rstrip(".")
    message = f"mlflow server {what} (backend store {backend_store_uri}): {said}"
    if any("mlflow db upgrade" in line for line in lines):
        message += (
            f". The backend's schema is not the one this MLflow uses: back the database up, then run "
            f"`mlflow db upgrade {backend_store_uri}` (if a newer MLflow wrote it, upgrade mlflow here instead)"
        )
    return message + (f"; its whole output is in {log_file}" if log_file else "")


def start(
    backend_store_uri: str,
    artifacts: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 2,
    log_file: Path | None = None,
    timeout: float = 180,
) -> subprocess.Popen:
    """Start the server in its own process group (stop it with :func:`stop`) and wait until it answers.

    Raises:
        ServerStartError: the server exited, or did not answer within ``timeout`` seconds; the message
            quotes its output (e.g. an out-of-date backend schema, with the ``mlflow db upgrade`` to run).
    """
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job workers outliving the server
    process = subprocess.Popen(
        mlflow_command(backend_store_uri, artifacts, host, port, workers),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    tail, reader = _pump(process, log_file)
    try:
        wait_ready(f"http://{host}:{port}", process, timeout)
    except (RuntimeError, TimeoutError) as exc:
        stop(process)
        reader.join(10)  # the output up to the exit
        what = (
            f"exited with status {process.returncode}"
            if isinstance(exc, RuntimeError)
            else f"did not answer within {timeout:.0f} s"
        )
        raise ServerStartError(_why(what, tail, backend_store_uri, log_file)) from None
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
