"""Grids: the paper grids sign the expected XPs; the smoke grid runs on a real local SLURM (slow).

The SLURM test drives the real CLI end to end: ``dora grid smoke`` schedules four XPs, one XP is preempted
(SIGUSR2, submitit requeues it) and resumes from its checkpoint, one XP fails on purpose and is resubmitted
with ``-r``, then ``scripts.run_eval_probs``, the hiplot server and the static dashboard run on the grid.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROW = re.compile(r"\b(COM|FAI|RUN|PEN|CAN|N/A|REQ|TIM|OUT|NOD|UNK|PRE|COMPLETING)\w*\s+([0-9a-f]{8})\s+(\d*)\s*\|")


def _run(args, env, timeout=600, check=True):
    proc = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, ANSI.sub("", proc.stdout)[-4000:]
    return ANSI.sub("", proc.stdout)


def _rows(output: str) -> dict[str, tuple[str, str]]:
    """{sig: (state, job id)} of the last table printed by ``dora grid``."""
    rows: dict[str, tuple[str, str]] = {}
    for state, sig, sid in ROW.findall(output):
        rows[sig] = (state, sid)
    return rows


@pytest.mark.parametrize("grid, expected", [("nmi.main_table", 48), ("nmi.ablations", 24), ("synthetic", 4),
                                            ("chain", 3)])
def test_grids_sign_distinct_xps_without_a_scheduler(grid, expected, tmp_path):
    env = dict(os.environ, BM2_XP_DIR=str(tmp_path))
    out = _run([str(BIN / "dora"), "grid", grid, "--dry_run", "--init"], env, timeout=120)
    sigs = [sig for _, sig, _ in ROW.findall(out)]
    assert len(sigs) == expected and len(set(sigs)) == expected
    # --init wrote each XP's argv, so `dora info -f SIG` knows them without any scheduler
    info = _run([str(BIN / "dora"), "info", "-f", sigs[-1]], env, timeout=120)
    assert sigs[-1] in info


@pytest.fixture(scope="module")
def grid_env(local_slurm, tmp_path_factory):
    base = tmp_path_factory.mktemp("grid")
    return dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"), BM2_XP_DIR=str(base / "xps"),
                BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1", **local_slurm.env())


def _xp_folder(env, sig) -> Path:
    return Path(env["BM2_XP_DIR"]) / "xps" / sig


def _argv(env, sig) -> list[str]:
    return json.loads((_xp_folder(env, sig) / ".argv.json").read_text())


def _history(env, sig) -> list[dict]:
    try:
        return json.loads((_xp_folder(env, sig) / "history.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


@pytest.mark.slow
def test_smoke_grid_on_slurm(grid_env):
    env = grid_env
    dora = str(BIN / "dora")
    rows: dict[str, tuple[str, str]] = {}
    try:
        rows = _rows(_run([dora, "grid", "smoke", "--no_monitoring"], env))
        assert len(rows) == 5 and all(sid for _, sid in rows.values()), rows
        by_kind = {}
        for sig in rows:
            argv = " ".join(_argv(env, sig))
            kind = {"no_such_study": "fail", "seed=5": "long", "seed=9": "ddp"}
            by_kind[next((v for k, v in kind.items() if k in argv), sig)] = sig
        long_sig, fail_sig, ddp_sig = by_kind["long"], by_kind["fail"], by_kind["ddp"]

        # Preemption: once the long XP has finished an epoch, send SIGUSR2 as SLURM does before preempting.
        deadline = time.time() + 300
        while time.time() < deadline and len(_history(env, long_sig)) < 1:
            time.sleep(0.1)
        done_before = len(_history(env, long_sig))
        assert 1 <= done_before < 12, "the long XP finished before it could be preempted"
        job = rows[long_sig][1]
        subprocess.run(["scancel", "--signal=USR2", job], check=True, env=env)
        # SLURM holds a requeued job for ~2 minutes (EligibleTime); release it so that the test does not wait.
        deadline = time.time() + 60
        while time.time() < deadline:
            reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], env=env, capture_output=True,
                                    text=True).stdout.strip()
            if reason == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, env=env)
                break
            time.sleep(0.2)

        final = _rows(_run([dora, "grid", "smoke", "--interval", "0.02"], env, timeout=900))
        states = {sig: state for sig, (state, _) in final.items()}
        assert states[fail_sig] == "FAI"
        assert all(state == "COM" for sig, state in states.items() if sig != fail_sig), states

        # Every completed XP holds test metrics; the preempted one resumed without losing or repeating an epoch.
        for sig in states:
            if sig != fail_sig:
                assert "top10_segment" in _history(env, sig)[-1]["test"]
        history = _history(env, long_sig)
        assert len(history) == 12
        log = (_xp_folder(env, long_sig) / "train.log").read_text()
        resumed = re.findall(r"resumed from .* after epoch (\d+)", log)
        assert resumed, "the requeued job did not resume from its checkpoint"
        k = int(resumed[-1])
        after = [int(e) for e in re.findall(r" - epoch (\d+) \|", log.split("resumed from")[-1])]
        assert after == list(range(k + 1, 13))

        # The 2-task job trained with DDP: rank 1 joined the process group, only rank 0 reported.
        job = final[ddp_sig][1]
        logs = {task: (_xp_folder(env, ddp_sig) / "submitit" / f"{job}_{task}_log.out").read_text() for task in (0, 1)}
        assert "Distributed init: 1/2" in logs[1] and "Test results of XP" not in logs[1]
        assert "Test results of XP" in logs[0]

        # The failed XP is resubmitted with -r (new job id) and fails again.
        old_sid = final[fail_sig][1]
        retried = _rows(_run([dora, "grid", "smoke", "-r", "--interval", "0.02"], env, timeout=600))
        assert retried[fail_sig][1] != old_sid and retried[fail_sig][0] == "FAI"
        assert "no_such_study" in (_xp_folder(env, fail_sig) / "submitit").joinpath(
            f"{retried[fail_sig][1]}_0_log.out").read_text()

        # Evaluation of the finished grid: the failed XP is reported, the others agree with their test stage.
        proc = subprocess.run([sys.executable, "-m", "scripts.run_eval_probs", "smoke"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert proc.returncode == 1 and f"XP {fail_sig}" in proc.stdout and "dora run -f" in proc.stdout
        for sig in states:
            if sig != fail_sig:
                summary = json.loads((_xp_folder(env, sig) / "eval" / "summary.json").read_text())
                test = _history(env, sig)[-1]["test"]
                for key in ("top1_segment", "top10_segment", "top1_word", "top10_word"):
                    assert summary["metrics"][key] == pytest.approx(test[key], abs=1e-6)

        # hiplot: the served data lists the completed XPs with bm2's metric columns.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "hiplot", "dora.hiplot.load", "--host", "127.0.0.1", "--port",
                                   str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            query = urllib.parse.urlencode({"uri": "smoke explorer=ClipHP"})
            data = None
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/data?{query}", timeout=60) as resp:
                        data = json.loads(resp.read())
                    break
                except OSError:
                    time.sleep(0.3)
            assert data is not None, "the hiplot server did not answer"
            points = data["experiment"]["datapoints"]
            sigs = {p["values"]["sig"] for p in points}
            assert sigs == {sig for sig in states if sig != fail_sig}
            last = [p["values"] for p in points if p["values"]["last"]]
            assert all("test_top10_segment" in v and "valid_loss" in v for v in last)
        finally:
            server.terminate()
            server.wait(timeout=30)

        out = Path(env["BM2_XP_DIR"]) / "dashboard.html"
        _run([sys.executable, "-m", "scripts.dashboard", "smoke", "-o", str(out)], env)
        html = out.read_text()
        assert long_sig in html and "test_top10_segment" in html
    finally:  # a failed check must not leave jobs holding the node for the next tests
        jobs = [sid for _, sid in rows.values() if sid]
        if jobs:
            subprocess.run(["scancel", *jobs], env=env, check=False)


def _chain_sigs(env, rows) -> tuple[str, str, str]:
    """(parent, child, scratch) signatures of the chain grid."""
    by_kind = {}
    for sig in rows:
        argv = " ".join(_argv(env, sig))
        by_kind["child" if "chain.parent" in argv else "scratch" if "recipe" in argv else "parent"] = sig
    return by_kind["parent"], by_kind["child"], by_kind["scratch"]


@pytest.mark.slow
def test_chain_grid_runs_locally_child_after_parent(tmp_path):
    """``dora grid chain --dry_run --init`` then ``dora run -f``: a child before its parent fails naming it."""
    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1")
    dora = str(BIN / "dora")
    rows = _rows(_run([dora, "grid", "chain", "--dry_run", "--init"], env, timeout=120))
    parent, child, _ = _chain_sigs(env, rows)
    early = _run([dora, "run", "-f", child], env, check=False, timeout=600)
    assert f"parent XP {parent}" in early and f"dora run -f {parent}" in early
    _run([dora, "run", "-f", parent], env, timeout=600)
    out = _run([dora, "run", "-f", child], env, timeout=600)
    assert f"started from parent XP {parent}" in out and "Test results of XP" in out
    ckpt = __import__("torch").load(_xp_folder(env, child) / "checkpoint.th", weights_only=True)
    assert ckpt["parent"]["sig"] == parent and ckpt["parent"]["exclude"] == ["head"]
    assert "balanced_accuracy" in _history(env, child)[-1]["test"]


@pytest.mark.slow
def test_chain_grid_on_slurm_child_waits_for_parent(local_slurm, tmp_path):
    # its own XP folder: the smoke grid's XPs include the same parent, already finished (then no wait is needed)
    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1", **local_slurm.env())
    dora = str(BIN / "dora")
    rows: dict[str, tuple[str, str]] = {}
    try:
        rows = _rows(_run([dora, "grid", "chain", "--no_monitoring"], env))
        assert len(rows) == 3 and all(sid for _, sid in rows.values()), rows
        parent, child, scratch = _chain_sigs(env, rows)
        # the child's job was submitted with a dependency on the parent's job
        script = next((_xp_folder(env, child) / "submitit").glob(f"{rows[child][1]}_submission.sh")).read_text()
        assert f"--dependency=afterok:{rows[parent][1]}" in script
        assert "--dependency" not in next((_xp_folder(env, scratch) / "submitit").glob("*_submission.sh")).read_text()
        final = _rows(_run([dora, "grid", "chain", "--interval", "0.02"], env, timeout=900))
        assert {state for state, _ in final.values()} == {"COM"}, final
        log = (_xp_folder(env, child) / "train.log").read_text()
        assert f"started from parent XP {parent}" in log
        # the child started after its parent had finished: its first epoch is logged after the parent's test
        parent_done = (_xp_folder(env, parent) / "checkpoint.th").stat().st_mtime
        child_started = (_xp_folder(env, child) / "split.csv").stat().st_mtime
        assert child_started >= parent_done
        # running the grid again picks up the finished stages: nothing is resubmitted
        again = _rows(_run([dora, "grid", "chain", "--no_monitoring"], env))
        assert {sig: sid for sig, (_, sid) in again.items()} == {sig: sid for sig, (_, sid) in final.items()}
    finally:  # a failed check must not leave jobs holding the node for the next tests
        jobs = [sid for _, sid in rows.values() if sid]
        if jobs:
            subprocess.run(["scancel", *jobs], env=env, check=False)
