"""Tests for bm2.download against a local HTTP server (tests/http_fixture.py): resume, verification,
atomicity, concurrent jobs, OSF listings, archives (once, no path traversal), credentials for MOUS."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest

from bm2 import download as dl
from bm2.download import (ArchiveError, ChecksumError, CredentialsError, DownloadError, UnsafeArchiveError,
                          archive_marker, download_file, download_study, extract_archive)

from .http_fixture import FakeServer

ROOT = Path(__file__).resolve().parent.parent
OPTS = {"retries": 2, "timeout": 10.0, "backoff": 0.0, "workers": 2, "progress": False}


def payload(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (so that an offset error changes the digest)."""
    out, block, i = bytearray(), hashlib.sha256(str(seed).encode()).digest(), 0
    while len(out) < n:
        out += hashlib.sha256(block + i.to_bytes(8, "little")).digest()
        i += 1
    return bytes(out[:n])


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """A started FakeServer (127.0.0.1, free port), stopped after the test; proxies bypassed."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeServer().start()
    yield fake
    fake.stop()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- one file

def test_download_verified_and_not_repeated(server: FakeServer, tmp_path: Path) -> None:
    data = payload(200_000)
    server.files["/f.bin"] = data
    dest = tmp_path / "sub" / "f.bin"
    out = download_file(server.url("/f.bin"), dest, len(data), md5(data), progress=False, backoff=0)
    assert out == dest and dest.read_bytes() == data
    assert not (tmp_path / "sub" / "f.bin.part").exists()
    download_file(server.url("/f.bin"), dest, len(data), md5(data), progress=False)
    assert len(server.requests_for("/f.bin")) == 1  # complete file: no second request


def test_interrupted_transfer_resumes_with_range(server: FakeServer, tmp_path: Path) -> None:
    data = payload(1_000_000, seed=1)
    server.files["/big.bin"] = data
    server.faults["/big.bin"] = ["drop:300000"]  # the first answer stops after 300 kB
    dest = tmp_path / "big.bin"
    download_file(server.url("/big.bin"), dest, len(data), md5(data), progress=False, backoff=0)
    assert dest.read_bytes() == data
    first, second = server.requests_for("/big.bin")
    assert "Range" not in first["headers"] and first["sent"] == 300_000
    offset = int(second["headers"]["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= 300_000
    assert second["status"] == 206 and second["sent"] == len(data) - offset  # only the rest was sent


def test_partial_file_kept_and_resumed_by_next_run(server: FakeServer, tmp_path: Path) -> None:
    data = payload(400_000, seed=2)
    server.files["/r.bin"] = data
    server.faults["/r.bin"] = ["drop:100000"]
    dest = tmp_path / "r.bin"
    with pytest.raises(DownloadError, match="giving up after 1 attempts.*resumed"):
        download_file(server.url("/r.bin"), dest, len(data), md5(data), progress=False, retries=0)
    part = tmp_path / "r.bin.part"
    kept = part.stat().st_size
    assert not dest.exists() and 0 < kept <= 100_000
    download_file(server.url("/r.bin"), dest, len(data), md5(data), progress=False, retries=0)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests_for("/r.bin")[-1]["headers"]["Range"] == f"bytes={kept}-"


def test_corrupted_file_detected_and_fetched_again(server: FakeServer, tmp_path: Path) -> None:
    data = payload(150_000, seed=3)
    server.files["/c.bin"] = data
    server.faults["/c.bin"] = ["corrupt"]  # same size, wrong bytes: only the md5 can tell
    dest = tmp_path / "c.bin"
    download_file(server.url("/c.bin"), dest, len(data), md5(data), progress=False, backoff=0)
    assert dest.read_bytes() == data
    requests = server.requests_for("/c.bin")
    assert [r.get("fault") for r in requests] == ["corrupt", ""]
    assert "Range" not in requests[1]["headers"]  # the bad partial file was deleted, not resumed


def test_corrupted_twice_raises_with_url_expected_and_got(server: FakeServer, tmp_path: Path) -> None:
    data = payload(50_000, seed=4)
    server.files["/bad.bin"] = data
    server.faults["/bad.bin"] = ["corrupt", "corrupt"]
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError) as info:
        download_file(server.url("/bad.bin"), dest, len(data), md5(data), progress=False, backoff=0)
    message = str(info.value)
    assert server.url("/bad.bin") in message and hashlib.md5(data).hexdigest() in message and "got" in message
    assert not dest.exists() and not (tmp_path / "bad.bin.part").exists()
    assert len(server.requests_for("/bad.bin")) == 2


def test_wrong_size_raises(server: FakeServer, tmp_path: Path) -> None:
    server.files["/s.bin"] = payload(1000)
    with pytest.raises(ChecksumError, match="expected 999 bytes, got 1000"):
        download_file(server.url("/s.bin"), tmp_path / "s.bin", 999, progress=False, backoff=0)
    assert not (tmp_path / "s.bin").exists()


def test_server_ignoring_range_restarts_cleanly(server: FakeServer, tmp_path: Path) -> None:
    data = payload(120_000, seed=5)
    server.files["/n.bin"] = data
    server.ignore_range = True
    dest = tmp_path / "n.bin"
    (tmp_path / "n.bin.part").write_bytes(b"left over from an older attempt")
    download_file(server.url("/n.bin"), dest, len(data), md5(data), progress=False, backoff=0)
    assert dest.read_bytes() == data
    (request,) = server.requests_for("/n.bin")
    assert request["headers"]["Range"] == "bytes=31-" and request["status"] == 200


def test_complete_part_file_finished_through_416(server: FakeServer, tmp_path: Path) -> None:
    data = payload(10_000, seed=6)
    server.files["/p.bin"] = data
    (tmp_path / "p.bin.part").write_bytes(data)  # killed after the transfer, before the rename
    download_file(server.url("/p.bin"), tmp_path / "p.bin", checksum=md5(data), progress=False)
    assert (tmp_path / "p.bin").read_bytes() == data
    assert [r["status"] for r in server.requests_for("/p.bin")] == [416]


def test_transient_errors_retried_and_permanent_ones_not(server: FakeServer, tmp_path: Path) -> None:
    data = payload(5000)
    server.files["/t.bin"] = data
    server.faults["/t.bin"] = ["status:503", "status:500"]
    download_file(server.url("/t.bin"), tmp_path / "t.bin", len(data), progress=False, backoff=0)
    assert (tmp_path / "t.bin").read_bytes() == data
    assert [r["status"] for r in server.requests_for("/t.bin")] == [503, 500, 200]
    with pytest.raises(DownloadError, match=r"/missing.bin: HTTP 404.*`download:` config"):
        download_file(server.url("/missing.bin"), tmp_path / "m.bin", progress=False, backoff=0)
    assert len(server.requests_for("/missing.bin")) == 1


CHILD = """
import json, sys, time
from bm2.download import download_file
url, dest, size, checksum = sys.argv[1:5]
start = time.time()
download_file(url, dest, expected_size=int(size), checksum=checksum, progress=False, retries=0, timeout=30)
print(json.dumps({"start": start, "end": time.time()}))
"""


def test_two_processes_at_once_download_once(server: FakeServer, tmp_path: Path) -> None:
    data = payload(1 << 20, seed=7)
    server.files["/shared.bin"] = data
    server.throttle["/shared.bin"] = 0.025  # 64 chunks: ~1.6 s, so that both jobs start during the transfer
    dest = tmp_path / "shared.bin"
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "BM2_NO_PROGRESS": "1"}
    args = [sys.executable, "-c", CHILD, server.url("/shared.bin"), str(dest), str(len(data)), md5(data)]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert dest.read_bytes() == data and not (tmp_path / "shared.bin.part").exists()
    (request,) = server.requests_for("/shared.bin")  # the second job waited, then found the file complete
    assert request["sent"] == len(data)
    assert all(o["start"] < request["end"] for o in outputs), "both jobs must have started during the transfer"


# --------------------------------------------------------------------------------------------- archives

def test_zip_extracted_once_with_marker(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"top/x.txt": b"x", "y.txt": b"y"}))
    dest = tmp_path / "out"
    assert extract_archive(archive, dest) == dest
    assert (dest / "top" / "x.txt").read_bytes() == b"x" and (dest / "y.txt").read_bytes() == b"y"
    marker = archive_marker(archive, dest)
    assert json.loads(marker.read_text())["members"] == 2
    assert not list(dest.glob(".tmp-extract-*"))
    (dest / "y.txt").unlink()
    extract_archive(archive, dest)  # marker present: nothing is extracted again
    assert not (dest / "y.txt").exists()


def test_tar_gz_extracted_next_to_existing_content(tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(tar_bytes({"proc/S01.mat": b"s1", "audio/a.wav": b"w"}, links={"proc/latest": "S01.mat"}))
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / ".tmp-extract-b.tar.gz-1-dead").mkdir()  # left by a killed extraction
    extract_archive(archive, tmp_path)
    assert (tmp_path / "proc" / "S01.mat").read_bytes() == b"s1" and (tmp_path / "audio" / "a.wav").exists()
    assert (tmp_path / "proc" / "latest").read_bytes() == b"s1" and (tmp_path / "keep.txt").read_text() == "mine"
    assert archive_marker(archive, tmp_path).exists() and not list(tmp_path.glob(".tmp-extract-*"))


@pytest.mark.parametrize("member", ["../evil.txt", "ok/../../evil.txt", "/abs/evil.txt", "C:/evil.txt",
                                    "..\\evil.txt"])
def test_zip_path_traversal_rejected(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes({"fine.txt": b"ok", member: b"evil"}))
    dest = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match="outside the extraction folder"):
        extract_archive(archive, dest)
    assert not (dest / "fine.txt").exists() and not archive_marker(archive, dest).exists()
    assert not list(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("members, links", [({"../evil.txt": b"e"}, {}), ({"a.txt": b"a"}, {"l": "../../etc"}),
                                            ({"a.txt": b"a"}, {"l": "/etc/passwd"})])
def test_tar_path_traversal_rejected(tmp_path: Path, members: dict, links: dict) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes(members, links))
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "a.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_damaged_archive_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    archive.write_bytes(b"this is not an archive")
    with pytest.raises(ArchiveError, match="neither a zip nor a tar archive; delete it"):
        extract_archive(archive, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- studies

MEG_MASC = {
    "ag3kj": {"participants.tsv": b"participant_id\nsub-01\n", "README": b"readme",
              "sub-01/ses-0/meg/sub-01_ses-0_task-0_meg.con": payload(70_000, 10),
              "sub-01/ses-0/meg/sub-01_ses-0_task-0_events.tsv": b"onset\tduration\ttrial_type\n"},
    "h2tzn": {"sub-02/ses-0/meg/sub-02_ses-0_task-1_meg.con": payload(50_000, 11), "README": b"readme"},
    "u5327": {"stimuli/audio/lw1_0.wav": payload(30_000, 12)},
}


def osf_options(server: FakeServer) -> dict:
    return {**OPTS, "gwilliams2022": {"api": server.url("/v2"), "projects": list(MEG_MASC)}}


def test_osf_study_downloaded_with_structure_and_content(server: FakeServer, tmp_path: Path) -> None:
    for project, files in MEG_MASC.items():
        server.add_osf_project(project, files, page_size=2, sha256=project == "u5327")
    server.faults["/osf/ag3kj/sub-01/ses-0/meg/sub-01_ses-0_task-0_meg.con"] = ["drop:20000"]
    root = tmp_path / "gwilliams2022"
    assert download_study("gwilliams2022", root, osf_options(server)) == root
    expected = {rel: body for files in MEG_MASC.values() for rel, body in files.items()}
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
           if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith(".bm2")}
    assert got == expected
    assert any("page=2" in r["query"] for r in server.log)  # pagination followed
    first_pages = [r["query"] for r in server.log if r["path"].startswith("/v2/") and "page=" not in r["query"]]
    assert first_pages and all(unquote(q) == "page[size]=100" for q in first_pages)  # large pages asked for
    assert (root / ".bm2-download.json").exists()
    n_requests = len(server.log)
    download_study("gwilliams2022", root, osf_options(server))  # complete: no network at all
    assert len(server.log) == n_requests
    download_study("gwilliams2022", root, osf_options(server), force=True)  # forced: listings only, no file
    assert not [r for r in server.log[n_requests:] if r["path"].startswith("/osf/")]


def test_osf_files_changed_upstream_are_fetched_again(server: FakeServer, tmp_path: Path) -> None:
    server.add_osf_project("ag3kj", {"a.txt": b"old"})
    opts = {**OPTS, "gwilliams2022": {"api": server.url("/v2"), "projects": ["ag3kj"]}}
    download_study("gwilliams2022", tmp_path, opts)
    server.add_osf_project("ag3kj", {"a.txt": b"newer"})
    download_study("gwilliams2022", tmp_path, opts, force=True)
    assert (tmp_path / "a.txt").read_bytes() == b"newer"


def test_osf_remote_path_escaping_root_is_refused(server: FakeServer, tmp_path: Path) -> None:
    server.json["/v2/nodes/bad/files/osfstorage/"] = {"data": [{"attributes": {"kind": "file", "name": "..",
                                                                               "size": 1},
                                                                "links": {"download": server.url("/x")}}],
                                                      "links": {"next": None}}
    opts = {**OPTS, "gwilliams2022": {"api": server.url("/v2"), "projects": ["bad"]}}
    with pytest.raises(DownloadError, match="refusing remote path"):
        download_study("gwilliams2022", tmp_path / "g", opts)


def test_archive_study_extracted_once(server: FakeServer, tmp_path: Path) -> None:
    inner = zip_bytes({"Natural Speech/EEG/Subject1/Subject1_Run1.mat": b"eeg",
                       "Natural Speech/Stimuli/Text/Run1.mat": b"text"})
    outer = zip_bytes({"Natural Speech.zip": inner, "N400.zip": zip_bytes({"n.txt": b"n"})})
    server.files["/dryad/download"] = outer
    opts = {**OPTS, "broderick2019": {"urls": [{"url": server.url("/dryad/download"), "name": "dryad.zip"}],
                                      "nested": ["**/Natural Speech.zip"], "token_env": "BM2_TEST_TOKEN"}}
    root = tmp_path / "broderick2019"
    download_study("broderick2019", root, opts)
    assert (root / "Natural Speech" / "EEG" / "Subject1" / "Subject1_Run1.mat").read_bytes() == b"eeg"
    assert (root / "dryad.zip").exists() and (root / "N400.zip").exists() and not (root / "N400").exists()
    assert archive_marker(root / "dryad.zip", root).exists()
    assert archive_marker(root / "Natural Speech.zip", root).exists()
    (root / "Natural Speech" / "EEG" / "Subject1" / "Subject1_Run1.mat").write_bytes(b"touched")
    download_study("broderick2019", root, opts, force=True)  # archives known extracted: nothing redone
    assert (root / "Natural Speech" / "EEG" / "Subject1" / "Subject1_Run1.mat").read_bytes() == b"touched"
    assert len(server.requests_for("/dryad/download")) == 1


def test_archive_study_without_keeping_archives(server: FakeServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/a.tar.gz"] = tar_bytes({"data/x.txt": b"x"})
    monkeypatch.setenv("BM2_TEST_TOKEN", "tok")
    opts = {**OPTS, "keep_archives": False,
            "broderick2019": {"urls": [{"url": server.url("/a.tar.gz"), "name": "a.tar.gz"}], "nested": [],
                              "token_env": "BM2_TEST_TOKEN"}}
    download_study("broderick2019", tmp_path, opts)
    assert (tmp_path / "data" / "x.txt").read_bytes() == b"x" and not (tmp_path / "a.tar.gz").exists()
    assert all(r["headers"].get("Authorization") == "Bearer tok" for r in server.requests_for("/a.tar.gz"))
    download_study("broderick2019", tmp_path, opts, force=True)
    assert len(server.requests_for("/a.tar.gz")) == 1  # extracted (then deleted): never fetched again


def test_deep_blue_files_named_by_the_server(server: FakeServer, tmp_path: Path) -> None:
    files = {"id1": ("S01.mat", b"subject 1"), "id2": ("AliceChapterOne-EEG.csv", b"Word,Segment\n"),
             "id3": ("audio.zip", zip_bytes({"audio/DownTheRabbitHoleFinal_SoundFile1.wav": b"wav"}))}
    for ident, (name, body) in files.items():
        server.files[f"/downloads/{ident}"] = body
        server.extra_headers[f"/downloads/{ident}"] = {"Content-Disposition": f'attachment; filename="{name}"'}
    opts = {**OPTS, "brennan2019": {"base_url": server.url("/downloads"), "files": list(files), "urls": []}}
    download_study("brennan2019", tmp_path, opts)
    assert (tmp_path / "S01.mat").read_bytes() == b"subject 1" and (tmp_path / "AliceChapterOne-EEG.csv").exists()
    assert (tmp_path / "audio" / "DownTheRabbitHoleFinal_SoundFile1.wav").read_bytes() == b"wav"


MOUS_FILES = {"participants.tsv": b"participant_id\nsub-A2002\n",
              "sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.meg4": payload(40_000, 20),
              "sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.res4": b"res4",
              "sub-A2002/anat/T1w.nii": b"mri",
              "sub-V1001/meg/v.meg4": b"visual",
              "stimuli/audio_files/EQ_Ramp_Int2_Int1LPF001.wav": b"wav"}


def mous_server(server: FakeServer) -> dict:
    for rel, body in MOUS_FILES.items():
        server.files[f"/dcc/DSC_1/{rel}"] = body
    server.auth["/dcc/"] = ("alice", "s3cret")
    server.dav.add("/dcc/")
    return {**OPTS, "schoffelen2019": {"base_url": server.url("/dcc/DSC_1"), "user_env": "BM2_MOUS_USER",
                                       "password_env": "BM2_MOUS_PASSWORD", "files": [],
                                       "include": ["*.tsv", "sub-A2*/meg/**", "stimuli/**"]}}


def test_mous_without_credentials_explains_registration(server: FakeServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    opts = mous_server(server)
    monkeypatch.delenv("BM2_MOUS_USER", raising=False)
    monkeypatch.setenv("BM2_MOUS_PASSWORD", "s3cret")  # one of the two is not enough
    with pytest.raises(CredentialsError) as info:
        download_study("schoffelen2019", tmp_path, opts)
    message = str(info.value)
    assert "BM2_MOUS_USER" in message and "BM2_MOUS_PASSWORD" in message and "data.donders.ru.nl" in message
    assert "data-use agreement" in message and server.log == []  # no request before credentials exist
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("must never prompt"))


def test_mous_with_credentials_lists_and_authenticates(server: FakeServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    opts = mous_server(server)
    monkeypatch.setenv("BM2_MOUS_USER", "alice")
    monkeypatch.setenv("BM2_MOUS_PASSWORD", "s3cret")
    download_study("schoffelen2019", tmp_path, opts)
    got = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
           if p.is_file() and not p.name.endswith(".lock") and not p.name.startswith(".bm2")}
    assert got == {"participants.tsv", "sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.meg4",
                   "sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.res4",
                   "stimuli/audio_files/EQ_Ramp_Int2_Int1LPF001.wav"}
    assert (tmp_path / "sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.meg4").read_bytes() == \
        MOUS_FILES["sub-A2002/meg/sub-A2002_task-auditory_meg.ds/x.meg4"]
    assert server.log and all(r["headers"].get("Authorization", "").startswith("Basic ") for r in server.log)
    assert all(r["status"] in (200, 207) for r in server.log)
    listed = {r["path"] for r in server.log if r["method"] == "PROPFIND"}
    # folders that no include pattern can match are not even listed
    assert listed == {"/dcc/DSC_1/", "/dcc/DSC_1/sub-A2002/", "/dcc/DSC_1/sub-A2002/meg/",
                      "/dcc/DSC_1/sub-A2002/meg/sub-A2002_task-auditory_meg.ds/", "/dcc/DSC_1/stimuli/",
                      "/dcc/DSC_1/stimuli/audio_files/"}


def test_mous_explicit_files_and_rejected_credentials(server: FakeServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    opts = mous_server(server)
    opts["schoffelen2019"]["files"] = ["stimuli/audio_files/EQ_Ramp_Int2_Int1LPF001.wav"]
    monkeypatch.setenv("BM2_MOUS_USER", "alice")
    monkeypatch.setenv("BM2_MOUS_PASSWORD", "s3cret")
    download_study("schoffelen2019", tmp_path / "ok", opts)
    assert (tmp_path / "ok/stimuli/audio_files/EQ_Ramp_Int2_Int1LPF001.wav").read_bytes() == b"wav"
    assert not [r for r in server.log if r["method"] == "PROPFIND"]
    opts["schoffelen2019"]["files"] = []
    monkeypatch.setenv("BM2_MOUS_PASSWORD", "wrong")
    with pytest.raises(CredentialsError, match="(?s)HTTP 401.*BM2_MOUS_USER / BM2_MOUS_PASSWORD"):
        download_study("schoffelen2019", tmp_path / "no", opts)
    assert "wrong" not in str(server.log[-1]["path"])


def test_unknown_and_local_studies(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"'nope'.*\['brennan2019', 'broderick2019', 'gwilliams2022', "
                                            r"'libribrain2025', 'schoffelen2019'\]"):
        download_study("nope", tmp_path, OPTS)
    assert download_study("synthetic", tmp_path / "syn", OPTS) == tmp_path / "syn"
    assert not (tmp_path / "syn").exists()


def test_glob_patterns_stay_within_folders() -> None:
    assert dl.glob_regex("*.tsv").match("participants.tsv")
    assert not dl.glob_regex("*.tsv").match("sub-A2002/scans.tsv")
    assert dl.glob_regex("sub-A2*/meg/**").match("sub-A2002/meg/x.ds/y.meg4")
    assert dl._may_contain("sub-A2002", ["sub-A2*/meg/**"]) and not dl._may_contain("sub-V1001", ["sub-A2*/**"])
    assert dl._may_contain("sub-A2002/meg/x.ds", ["sub-A2*/meg/**"])
    assert not dl._may_contain("sub-A2002/anat", ["*.tsv", "sub-A2*/*.tsv", "sub-A2*/meg/**"])
    assert dl._may_contain("a/b/c", ["**.wav"]) and dl._may_contain("a/b", ["a/*/*.wav"])
    assert not dl._may_contain("a/b/c", ["a/*/*.wav"])
    assert dl._may_contain("anything", [])


def test_config_section_matches_the_defaults() -> None:
    from scripts.download import load_options

    assert dl._options(load_options()) == dl.DEFAULTS  # conf/config.yaml documents the real defaults


def test_command_line(server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.download import main

    server.add_osf_project("ag3kj", {"participants.tsv": b"p"})
    monkeypatch.setenv("BM2_DATA", str(tmp_path / "data"))
    overrides = [f"gwilliams2022.api={server.url('/v2')}", "gwilliams2022.projects=[ag3kj]", "backoff=0",
                 "progress=false"]
    assert main(["gwilliams2022", *overrides]) == 0
    assert (tmp_path / "data" / "gwilliams2022" / "participants.tsv").read_bytes() == b"p"
    assert main(["gwilliams2022", "--root", str(tmp_path / "elsewhere"), *overrides]) == 0
    assert (tmp_path / "elsewhere" / "participants.tsv").exists()
    monkeypatch.delenv("BM2_MOUS_USER", raising=False)
    assert main(["schoffelen2019", "--root", str(tmp_path / "mous")]) == 1
    assert "BM2_MOUS_USER" in capsys.readouterr().err
    assert main(["--list"]) == 0 and "schoffelen2019" in capsys.readouterr().out


def test_many_files_in_parallel_are_all_verified(server: FakeServer, tmp_path: Path) -> None:
    files = {f"d{i % 3}/f{i}.bin": payload(3000 + i, i) for i in range(12)}
    server.add_osf_project("ag3kj", files, page_size=5)
    server.faults["/osf/ag3kj/d1/f4.bin"] = ["corrupt"]
    server.faults["/osf/ag3kj/d2/f5.bin"] = ["drop:1000"]
    opts = {**OPTS, "workers": 4, "gwilliams2022": {"api": server.url("/v2"), "projects": ["ag3kj"]}}
    start = time.time()
    download_study("gwilliams2022", tmp_path, opts)
    assert time.time() - start < 20
    assert all((tmp_path / rel).read_bytes() == body for rel, body in files.items())
