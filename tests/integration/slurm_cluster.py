"""A real single-host SLURM cluster for tests: Debian's `munged`, `slurmctld` and `slurmd`
started from a generated slurm.conf, everything (key, sockets, state, logs) in one folder.

Clients find it through `$SLURM_CONF` (see `SlurmCluster.env`); the daemons are this process's
children and are stopped, by PID, when the cluster is closed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
SBIN = ("/usr/sbin", "/sbin", "/usr/bin")


def which(name: str) -> str | None:
    """Daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if which(name) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_memory_mb() -> int:
    """What slurmd itself reports (`slurmd -C`), so the node is never drained as too small."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("RealMemory="):
            return int(word.split("=", 1)[1])
    raise RuntimeError(f"slurmd -C reported no RealMemory: {out!r}")


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int) -> str:
    """One node, one partition `debug`, no cgroups, no accounting; every path under `root`."""
    ctld, slurmd = free_port(), free_port()
    return f"""\
ClusterName=ltxtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=30
KillWait=5
InactiveLimit=0
MinJobAge=2
MailProg=/bin/true
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""


@dataclass
class SlurmCluster:
    root: Path
    node: str
    cpus: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a client (sbatch, squeue, submitit) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf), **extra}

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [which(args[0]) or args[0], *args[1:]],
            env=kw.pop("env", None) or self.env(),
            capture_output=True,
            text=True,
            timeout=kw.pop("timeout", 60),
            **kw,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.stdout}{done.stderr}\n{self.logs()}")
        return done

    def queue(self) -> list[str]:
        """Job ids still known to slurmctld (pending, running or completing)."""
        out = self.run("squeue", "--noheader", "--format=%i %T").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def state(self, job: str) -> str:
        """A job's state while slurmctld remembers it ('' once forgotten: MinJobAge)."""
        out = self.run("squeue", "--noheader", "--format=%T", "--jobs", job, check=False)
        return out.stdout.strip()

    def wait_empty(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while self.queue():
            if time.time() > deadline:
                raise AssertionError(f"squeue not empty after {timeout}s:\n{self.logs()}")
            time.sleep(0.5)

    def wait_idle_node(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while True:
            out = self.run("sinfo", "--noheader", "--format=%T", check=False).stdout.strip()
            if out == "idle":
                return
            if time.time() > deadline:
                raise AssertionError(f"node not idle ({out!r}) after {timeout}s:\n{self.logs()}")
            time.sleep(0.3)

    def ctld_log(self) -> str:
        return (self.root / "slurmctld.log").read_text(errors="replace")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.is_file():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def start(self) -> None:
        (self.root / "munge").mkdir(mode=0o700)
        for sub in ("ctld", "spool"):
            (self.root / sub).mkdir()
        memory = node_memory_mb()
        self.conf.write_text(slurm_conf(self.root, self.node, self.cpus, memory))
        key = self.root / "munge" / "munge.key"
        subprocess.run([which("mungekey"), "--create", "--keyfile", str(key)], check=True)
        key.chmod(0o400)
        m = self.root / "munge"
        self._spawn(
            "munged",
            "--foreground",
            "--force",  # the temp folder's parents are world-writable (/tmp)
            f"--key-file={key}",
            f"--socket={m}/munge.socket",
            f"--pid-file={m}/munged.pid",
            f"--log-file={self.root}/munged.log",
            f"--seed-file={m}/munged.seed",
            "--num-threads=2",
        )
        self._wait_for(m / "munge.socket", "munged")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait_for_ping()
        self._spawn("slurmd", "-D", "-N", self.node, "-f", str(self.conf))
        self.wait_idle_node()

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.stdout", "wb")  # noqa: SIM115 (kept for the daemon's life)
        self.procs.append(
            subprocess.Popen(
                [which(name), *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not reach the daemons first
            )
        )
        log.close()

    def _wait_for(self, path: Path, what: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while not path.exists():
            self._check_alive()
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not start in {timeout}s:\n{self.logs()}")
            time.sleep(0.1)

    def _wait_for_ping(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while "is UP" not in self.run("scontrol", "ping", check=False).stdout:
            self._check_alive()
            if time.time() > deadline:
                raise RuntimeError(f"slurmctld did not answer in {timeout}s:\n{self.logs()}")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited ({p.returncode}):\n{self.logs()}")

    def stop(self) -> None:
        """Cancel what is left and let slurmd end it (its job steps outlive slurmd itself), then
        stop slurmd, slurmctld and munged, in that order, by PID."""
        if self.procs and all(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", "--user", "root", check=False)
            with suppress(AssertionError):  # stopped anyway; the log says what was left
                self.wait_empty(timeout=30)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=15)
        self.procs.clear()


@contextmanager
def slurm_cluster(root: Path, cpus: int = 2) -> Iterator[SlurmCluster]:
    """A running cluster of one node (`cpus` CPUs, this machine's memory) in `root`."""
    cluster = SlurmCluster(root, socket.gethostname().split(".")[0], cpus)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
