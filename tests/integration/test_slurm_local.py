"""The local single-node SLURM of ``scripts/slurm_local.py``: config generation (fast) and real jobs (slow)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.slurm_local import LocalSlurm, detect_node

ROOT = Path(__file__).resolve().parents[2]


def test_config_generation(tmp_path: Path) -> None:
    """slurm.conf names the node with two fake GPUs; gres.conf gives each a device file; no root needed."""
    slurm = LocalSlurm(tmp_path)
    texts = slurm.config_texts("node7", cpus=4, mem_mb=1234)
    conf = texts["slurm.conf"]
    assert "SlurmctldHost=node7(127.0.0.1)" in conf
    assert "NodeName=node7 NodeAddr=127.0.0.1 CPUs=4 RealMemory=1234 Gres=gpu:2" in conf
    assert "AccountingStorageType=accounting_storage/slurmdbd" in conf and "GresTypes=gpu" in conf
    assert f"StateSaveLocation={tmp_path.absolute() / 'spool' / 'ctld'}" in conf
    assert texts["gres.conf"].splitlines() == ["NodeName=node7 Name=gpu File=/dev/null",
                                               "NodeName=node7 Name=gpu File=/dev/zero"]
    assert "StorageType=accounting_storage/mysql" in texts["slurmdbd.conf"]
    assert slurm.env() == {"SLURM_CONF": str(tmp_path.absolute() / "etc" / "slurm.conf")}
    host, cpus, mem_mb = detect_node()
    assert host and "." not in host and cpus >= 1 and mem_mb > 0
    assert f"NodeName={host} " in slurm.config_texts(*detect_node())["slurm.conf"]


def _sbatch(out: Path, *args: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", f"--output={out}", *args], capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip().split(";")[0]


def _wait_state(job: str, timeout: float = 60.0) -> str:
    """Poll ``sacct`` (what Dora reads) until the job reaches a final state."""
    deadline, state = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        proc = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "State"], capture_output=True, text=True)
        state = proc.stdout.strip()
        if state and state.split()[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {state!r} after {timeout} s")


class TestLocalSlurm:
    """Real daemons, real jobs."""

    pytestmark = pytest.mark.slow

    def test_start_twice_is_noop(self, local_slurm: LocalSlurm) -> None:
        pids = {d: local_slurm.pid(d) for d in local_slurm.pid_files}
        again = LocalSlurm(local_slurm.root)
        assert again.start() == local_slurm.env()
        assert again.started == []
        assert {d: again.pid(d) for d in again.pid_files} == pids
        assert again.is_running()

    def test_status_cli(self, local_slurm: LocalSlurm) -> None:
        proc = subprocess.run([sys.executable, "-m", "scripts.slurm_local", "status", "--state-dir",
                               str(local_slurm.root)], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "idle" in proc.stdout or "mix" in proc.stdout or "alloc" in proc.stdout

    def test_plain_job_completes(self, local_slurm: LocalSlurm, tmp_path: Path) -> None:
        out = tmp_path / "hello.out"
        job = _sbatch(out, "--wrap", "echo hello")
        assert _wait_state(job) == "COMPLETED"
        assert out.read_text().strip() == "hello"

    @pytest.mark.parametrize("resources", [["--gres=gpu:2", "--ntasks=2"],
                                           ["--gpus-per-node=2", "--ntasks-per-node=2"]])  # the latter: submitit
    def test_two_gpus_start_two_tasks(self, local_slurm: LocalSlurm, tmp_path: Path, resources: list[str]) -> None:
        out = tmp_path / "tasks.out"
        job = _sbatch(out, *resources, "--wrap", "srun bash -c 'echo task $SLURM_PROCID gpus $CUDA_VISIBLE_DEVICES'")
        assert _wait_state(job) == "COMPLETED"
        assert sorted(out.read_text().splitlines()) == ["task 0 gpus 0,1", "task 1 gpus 0,1"]
