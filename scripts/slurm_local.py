"""Start (idempotently), check and stop a real single-node SLURM with accounting, for tests and demos.

    python -m scripts.slurm_local start|status|stop|install [--state-dir DIR]

Daemons: munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, one node with two fake GPUs (``/dev/null`` and
``/dev/zero``) so that ``gpus=2`` starts two tasks on CPU.  Configs, spool, logs, pid files, the munge key and
the MariaDB datadir all live in the state dir (``$BM2_SLURM_DIR`` or ``/tmp/bm2-slurm``).  Clients (sbatch,
sacct, ...) find the cluster through ``SLURM_CONF``, which ``start`` prints and :meth:`LocalSlurm.start` returns.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # start order
CLUSTER = "ci"
DB_NAME, DB_USER, DB_PASS = "slurm_acct_db", "slurm", "bm2-local-slurm"
# MariaDB on 3307 so that a system MariaDB on 3306 does not get in the way; SLURM keeps its usual ports.
PORTS = {"mariadbd": 3307, "slurmdbd": 6819, "slurmctld": 6817, "slurmd": 6818}
READY_STATES = ("idle", "mixed", "allocated", "completing")


class SlurmLocalError(RuntimeError):
    """A daemon could not be installed, started or stopped; the message names it and shows its log."""


def default_state_dir() -> Path:
    """``$BM2_SLURM_DIR`` or ``/tmp/bm2-slurm``."""
    return Path(os.environ.get("BM2_SLURM_DIR") or "/tmp/bm2-slurm")


def detect_node() -> tuple[str, int, int]:
    """(short host name, CPU count, 80% of the RAM in MB) of this machine."""
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return socket.gethostname().split(".")[0], os.cpu_count() or 1, int(mem_kb / 1024 * 0.8)


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 30,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` capturing text output; never raises on a non-zero exit."""
    try:
        return subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def _port_open(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process; reaps it when it is our own exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def missing_packages() -> list[str]:
    """The Debian packages of :data:`PACKAGES` that are not installed."""
    return [p for p in PACKAGES
            if "install ok installed" not in _run(["dpkg-query", "-W", "-f=${Status}", p]).stdout]


def install_packages() -> None:
    """apt-get install the missing packages (root only), keeping their services from starting."""
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmLocalError(f"packages {' '.join(missing)} are missing and installing them needs root: "
                              f"sudo apt-get install -y --no-install-recommends {' '.join(missing)}")
    policy = Path("/usr/sbin/policy-rc.d")  # temporary, so that package scripts start no system daemons
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
            proc = _run(cmd, env=env, timeout=900)
            if proc.returncode:
                raise SlurmLocalError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    finally:
        if own_policy:
            policy.unlink()


class LocalSlurm:
    """A single-node SLURM cluster with accounting whose whole state lives in ``state_dir``."""

    def __init__(self, state_dir: str | Path | None = None, timeout: float = 60.0) -> None:
        """``timeout``: seconds each daemon gets to become ready (and to stop after SIGTERM, at most 20)."""
        self.root = Path(state_dir or default_state_dir()).absolute()
        self.timeout = timeout
        self.started: list[str] = []  # daemons started by the last call to start()
        self._resumed = False
        r = self.root
        self.etc, self.log_dir, self.run_dir, self.munge_dir, self.db_dir = (
            r / "etc", r / "log", r / "run", r / "munge", r / "mysql")
        self.slurm_conf = self.etc / "slurm.conf"
        self.munge_socket = self.munge_dir / "munge.socket.2"
        self.db_socket = self.db_dir / "mysqld.sock"
        self.pid_files = {"munged": self.munge_dir / "munged.pid", "mariadbd": self.db_dir / "mariadbd.pid",
                          **{d: self.run_dir / f"{d}.pid" for d in DAEMONS[2:]}}
        self.logs = {"munged": self.munge_dir / "munged.log", "mariadbd": self.db_dir / "mariadbd.log",
                     **{d: self.log_dir / f"{d}.log" for d in DAEMONS[2:]}}

    def config_texts(self, host: str, cpus: int, mem_mb: int) -> dict[str, str]:
        """The text of slurm.conf, gres.conf and slurmdbd.conf for a node ``host``."""
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        slurm = f"""# generated by scripts/slurm_local.py
ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={PORTS['slurmctld']}
SlurmdPort={PORTS['slurmd']}
{auth}CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={PORTS['slurmdbd']}
AccountingStoragePass={self.munge_socket}
JobCompType=jobcomp/none
MinJobAge=300
KillWait=5
InactiveLimit=0
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
StateSaveLocation={self.root / 'spool' / 'ctld'}
SlurmdSpoolDir={self.root / 'spool' / 'd'}
SlurmctldPidFile={self.pid_files['slurmctld']}
SlurmdPidFile={self.pid_files['slurmd']}
SlurmctldLogFile={self.logs['slurmctld']}
SlurmdLogFile={self.logs['slurmd']}
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""
        gres = f"NodeName={host} Name=gpu File=/dev/null\nNodeName={host} Name=gpu File=/dev/zero\n"
        dbd = f"""# generated by scripts/slurm_local.py
{auth}DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort={PORTS['slurmdbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={PORTS['mariadbd']}
StorageLoc={DB_NAME}
StorageUser={DB_USER}
StoragePass={DB_PASS}
LogFile={self.logs['slurmdbd']}
PidFile={self.pid_files['slurmdbd']}
"""
        return {"slurm.conf": slurm, "gres.conf": gres, "slurmdbd.conf": dbd}

    def write_configs(self) -> None:
        """Create the state dir layout and (re)write the configs for this machine."""
        for d in (self.etc, self.log_dir, self.run_dir, self.root / "spool" / "ctld", self.root / "spool" / "d"):
            d.mkdir(parents=True, exist_ok=True)
        for d, user in ((self.munge_dir, "munge"), (self.db_dir, "mysql")):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
            shutil.chown(d, user, user)
        for name, text in self.config_texts(*detect_node()).items():
            path = self.etc / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
            path.chmod(0o600 if name == "slurmdbd.conf" else 0o644)

    def env(self) -> dict[str, str]:
        """The variables that clients (sbatch, sacct, submitit, Dora) need: ``SLURM_CONF``."""
        return {"SLURM_CONF": str(self.slurm_conf)}

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    def pid(self, daemon: str) -> int | None:
        """The pid of ``daemon`` from its pid file when that process is alive and is that daemon."""
        try:
            pid = int(self.pid_files[daemon].read_text().split()[0])
            alive = _alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == daemon
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive else None

    def node_state(self) -> str:
        """The node state as ``sinfo`` reports it ('' when sinfo fails)."""
        proc = _run(["sinfo", "-h", "-N", "-o", "%T"], env=self._client_env(), timeout=10)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def _probe(self, daemon: str) -> bool:
        """Real readiness probe of one daemon (slurmd: the node is idle, mixed or allocated)."""
        if daemon == "munged":
            cred = _run(["munge", "-S", str(self.munge_socket), "-n"], timeout=5)
            return cred.returncode == 0 and _run(["unmunge", "-S", str(self.munge_socket)], input=cred.stdout,
                                                 timeout=5).returncode == 0
        if daemon == "mariadbd":
            return _run(["mariadb-admin", "--no-defaults", f"--socket={self.db_socket}", "-uroot",
                         "--connect-timeout=2", "ping"], timeout=5).returncode == 0
        if daemon == "slurmd":
            return self.node_state() in READY_STATES
        return _port_open(PORTS[daemon])

    def _node_ready(self) -> bool:
        """slurmd readiness; resumes (once per start) a node left drained or down by an earlier run."""
        state = self.node_state()
        if state.startswith(("drain", "down")) and not state.endswith("*") and not self._resumed:
            self._resumed = True
            _run(["scontrol", "update", f"NodeName={detect_node()[0]}", "State=RESUME"], env=self._client_env())
        return state in READY_STATES

    def is_running(self) -> bool:
        """Whether every daemon of this state dir is alive and ready and the node can take jobs."""
        return all(self.pid(d) and self._probe(d) for d in DAEMONS)

    def status(self) -> tuple[bool, str]:
        """(all up and node ready, a human-readable report including ``sinfo``)."""
        lines, ok = [f"state dir: {self.root}"], True
        for d in DAEMONS:
            pid, ready = self.pid(d), self._probe(d)
            ok &= bool(pid and ready)
            lines.append(f"{d:10s} {'running pid ' + str(pid) if pid else 'stopped':20s} "
                         f"{'ready' if ready else 'not ready'}")
        sinfo = _run(["sinfo"], env=self._client_env(), timeout=10)
        lines.append((sinfo.stdout + sinfo.stderr).rstrip())
        return ok, "\n".join(lines)

    def tail(self, daemon: str, n: int = 25) -> str:
        """The last ``n`` lines of ``daemon``'s log."""
        try:
            return "\n".join(self.logs[daemon].read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _fail(self, daemon: str, what: str) -> SlurmLocalError:
        if daemon == "slurmd":
            sinfo = _run(["sinfo", "-N", "-o", "%N %T %E"], env=self._client_env(), timeout=10)
            what += f"\n--- sinfo ---\n{sinfo.stdout}{sinfo.stderr}--- slurmctld ---\n{self.tail('slurmctld', 5)}"
        return SlurmLocalError(f"{daemon}: {what}\n--- tail of {self.logs[daemon]} ---\n{self.tail(daemon)}")

    def _launch(self, daemon: str) -> None:
        """Start one daemon detached from this process (it writes its own pid file)."""
        env = self._client_env()
        if daemon == "munged":
            key = self.munge_dir / "munge.key"
            if not key.exists():
                key.write_bytes(os.urandom(1024))
                shutil.chown(key, "munge", "munge")
                key.chmod(0o400)
            cmd = ["munged", f"--key-file={key}", f"--socket={self.munge_socket}",
                   f"--pid-file={self.pid_files['munged']}", f"--log-file={self.logs['munged']}",
                   f"--seed-file={self.munge_dir / 'munged.seed'}"]
            proc = subprocess.run(cmd, user="munge", group="munge", capture_output=True, text=True, timeout=30)
        elif daemon == "mariadbd":
            data = self.db_dir / "data"
            if not (data / "mysql").is_dir():
                init = _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
                             "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120)
                if init.returncode:
                    raise self._fail(daemon, f"mariadb-install-db failed:\n{init.stdout}{init.stderr}")
            cmd = ["setsid", "-f", "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.db_socket}",
                   f"--pid-file={self.pid_files['mariadbd']}", f"--log-error={self.logs['mariadbd']}",
                   "--bind-address=127.0.0.1", f"--port={PORTS['mariadbd']}", "--user=mysql",
                   "--skip-name-resolve", "--innodb-buffer-pool-size=1G", "--innodb-log-file-size=64M",
                   "--innodb-lock-wait-timeout=900"]  # values slurmdbd recommends; errors go to --log-error
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  text=True, timeout=30)
        else:
            cmd = [daemon] if daemon == "slurmdbd" else [daemon, "-f", str(self.slurm_conf)]
            proc = _run(cmd, env=env)
        if proc.returncode:
            raise self._fail(daemon, f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")

    def _wait(self, daemon: str, ready: Callable[[], bool], launched: bool) -> None:
        """Poll ``ready`` until it holds; fail with the log tail on timeout or when the daemon died."""
        deadline, t0 = time.monotonic() + self.timeout, time.monotonic()
        while not ready():
            died = launched and time.monotonic() - t0 > 3 and self.pid(daemon) is None
            if died or time.monotonic() > deadline:
                raise self._fail(daemon, "died after starting" if died else f"not ready after {self.timeout:.0f} s")
            time.sleep(0.2)

    def _after(self, daemon: str) -> None:
        """Setup that needs ``daemon`` ready: the accounting database and user, the cluster record."""
        if daemon == "mariadbd":
            users = [f"'{DB_USER}'@'{h}'" for h in ("127.0.0.1", "localhost")]
            sql = f"CREATE DATABASE IF NOT EXISTS {DB_NAME};" + "".join(
                f"CREATE USER IF NOT EXISTS {u} IDENTIFIED BY '{DB_PASS}';GRANT ALL ON {DB_NAME}.* TO {u};"
                for u in users)
            proc = _run(["mariadb", "--no-defaults", f"--socket={self.db_socket}", "-uroot", "-e", sql])
            if proc.returncode:
                raise self._fail(daemon, f"creating the accounting database failed: {proc.stderr}")
        elif daemon == "slurmdbd":  # the cluster must exist in accounting before slurmctld starts
            def has_cluster() -> bool:
                listed = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], env=self._client_env())
                if listed.returncode == 0 and CLUSTER not in listed.stdout.split():
                    _run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=self._client_env())
                return listed.returncode == 0 and CLUSTER in listed.stdout.split()
            self._wait(daemon, has_cluster, launched=False)

    def start(self) -> dict[str, str]:
        """Install what is missing and start every daemon not already running; returns the clients' env vars.

        Idempotent: a daemon whose pid file points to a live process is left alone.  ``self.started`` lists
        the daemons this call started.
        """
        self.started, self._resumed = [], False
        if os.geteuid() != 0:
            raise SlurmLocalError("starting the local SLURM needs root (daemons run as root, munge and mysql)")
        install_packages()
        self.write_configs()
        for daemon in DAEMONS:
            launched = self.pid(daemon) is None
            if launched:
                port = PORTS.get(daemon)
                if port and _port_open(port):
                    raise SlurmLocalError(f"{daemon}: port {port} is already in use by a process that this "
                                          f"state dir ({self.root}) did not start; stop it first")
                self._launch(daemon)
                self.started.append(daemon)
            self._wait(daemon, self._node_ready if daemon == "slurmd" else functools.partial(self._probe, daemon),
                       launched)
            self._after(daemon)
        return self.env()

    def stop(self, only: list[str] | None = None, timeout: float = 20.0) -> list[str]:
        """Stop the daemons of this state dir (or just ``only``) by pid file: TERM, wait, KILL.

        Idempotent; returns the daemons it stopped.
        """
        stopped = []
        for daemon in reversed(DAEMONS):
            pid = self.pid(daemon) if only is None or daemon in only else None
            if pid is None:
                continue
            deadline = time.monotonic() + timeout
            for sig, until in ((signal.SIGTERM, deadline), (signal.SIGKILL, deadline + 5)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                except PermissionError as exc:
                    raise SlurmLocalError(f"{daemon}: no permission to stop pid {pid} (run as root)") from exc
                while _alive(pid) and time.monotonic() < until:
                    time.sleep(0.1)
                if not _alive(pid):
                    break
            else:
                raise SlurmLocalError(f"{daemon}: pid {pid} survived SIGKILL")
            self.pid_files[daemon].unlink(missing_ok=True)
            stopped.append(daemon)
        return stopped

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, str]]:
        """Start what is missing, yield the clients' env vars, and at exit stop only what this call started."""
        try:
            env = self.start()
        except BaseException:
            self.stop(only=self.started)
            raise
        started = list(self.started)
        try:
            yield env
        finally:
            self.stop(only=started)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "status", "stop", "install"])
    parser.add_argument("--state-dir", type=Path, default=None, help="default: $BM2_SLURM_DIR or /tmp/bm2-slurm")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each daemon gets to become ready")
    args = parser.parse_args(argv)
    slurm = LocalSlurm(args.state_dir, timeout=args.timeout)
    try:
        if args.command == "install":
            install_packages()
        elif args.command == "start":
            t0 = time.monotonic()
            env = slurm.start()
            print(f"started {', '.join(slurm.started) or 'nothing (all running)'} in {time.monotonic() - t0:.1f} s",
                  file=sys.stderr)
            for key, value in env.items():
                print(f"export {key}={value}")
        elif args.command == "stop":
            print(f"stopped {', '.join(slurm.stop()) or 'nothing'}", file=sys.stderr)
        else:
            ok, report = slurm.status()
            print(report)
            return 0 if ok else 1
    except SlurmLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
