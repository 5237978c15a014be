"""Real servers for the integration tests, started and stopped by the tests themselves.

A throwaway PostgreSQL cluster (initdb as the postgres user, loopback, its own socket folder) and a
single-node Slurm (munged, slurmctld, slurmd on 127.0.0.1 with a generated slurm.conf passed through
SLURM_CONF). Both need root and Debian's packages; without them the tests are skipped with the reason.
`.ci/run` installs the packages, so nothing is skipped in CI. Recipes: docs/faq.md#test-services.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.mlflow_server import free_port


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    pg = _pg_bin()
    if pg is None or os.geteuid() != 0:
        pytest.skip("PostgreSQL server binaries not installed or not root (apt-get install postgresql; .ci/run does)")
    return pg


def require_slurm() -> None:
    missing = [
        b
        for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")
        if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()
    ]
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"Slurm not installed or not root (missing {missing}); "
            "apt-get install slurmctld slurmd slurm-client munge (.ci/run does)"
        )


class Postgres:
    """``with Postgres(tmp) as pg: pg.uri`` is a trust-auth cluster with an empty ``mlflow`` database."""

    def __init__(self, workdir: Path):
        # pytest's tmp folders are private to root: the cluster lives where the postgres user can reach it
        self.bin, self.port = require_postgres(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="emanet-pg-", dir="/tmp"))
        self.dir = self.root / "pg"
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/mlflow"

    def _as_postgres(self, command: str) -> None:
        subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True, timeout=120)

    def __enter__(self) -> Postgres:
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(f"{self.bin}/initdb -D {self.dir} -A trust -U postgres")
        self._as_postgres(
            f"{self.bin}/pg_ctl -D {self.dir} -l {self.dir.parent}/pg.log "
            f"-o '-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir.parent}' -w start"
        )
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", "create database mlflow"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._as_postgres(f"{self.bin}/pg_ctl -D {self.dir} -m fast -w stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


MARKER = "# written by emanet's tests; removed when they stop\n"
SLURM_CONF = (
    MARKER
    + """ClusterName=emanet-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}/state
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
)


class Slurm:
    """``with Slurm(tmp) as slurm:`` a one-node cluster on 127.0.0.1; ``slurm.env`` for the clients.

    The configuration goes to /etc/slurm/slurm.conf, where every Slurm command looks (srun inside a job
    does not see SLURM_CONF), and is removed afterwards; a machine with its own Slurm configuration is
    left alone and the test is skipped.
    """

    def __init__(self, workdir: Path):
        require_slurm()
        self.state = workdir / "slurm"
        self.conf = Path("/etc/slurm/slurm.conf")
        if self.conf.exists() and not self.conf.read_text().startswith(MARKER):
            pytest.skip(f"{self.conf} is a real Slurm configuration: not replacing it for a test")
        self.env = dict(os.environ)
        self.started_munge = False

    def _write_conf(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        mem_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        self.conf.write_text(
            SLURM_CONF.format(
                host=socket.gethostname().split(".")[0],
                state=self.state,
                cpus=os.cpu_count(),
                mem=int(mem_kb / 1024 * 0.85),
                ctld_port=free_port(),
                d_port=free_port(),
            )
        )

    def _munge(self) -> None:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "755", "/run/munge"], check=True)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True)
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], check=True, timeout=30)
        self.started_munge = True

    def __enter__(self) -> Slurm:
        self._write_conf()
        self._munge()
        subprocess.run(["/usr/sbin/slurmctld"], env=self.env, check=True, timeout=60)
        subprocess.run(["/usr/sbin/slurmd"], env=self.env, check=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["timeout", "5", "sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True
            ).stdout
            if "idle" in out:
                return self
            time.sleep(0.5)
        logs = "".join(p.read_text()[-1500:] for p in (self.state / "log").glob("*.log"))
        self.__exit__()
        raise RuntimeError(f"Slurm did not come up:\n{logs}")

    def __exit__(self, *exc) -> None:
        for name in ("slurmd", "slurmctld"):
            pid_file = self.state / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        self.conf.unlink(missing_ok=True)
        if self.started_munge and Path("/run/munge/munged.pid").exists():
            try:
                os.kill(int(Path("/run/munge/munged.pid").read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(1)
