"""LibriBrain downloads from the Hugging Face hub, against a fake hub (no network here): the files of the split land
at the release's paths, a second call does nothing, interrupted transfers are resumed or redone and never kept as
complete, corrupted ones are refused, offline runs explain what to place where, and the token is never printed."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import types
from pathlib import Path

import h5py
import huggingface_hub
import numpy as np
import pytest

from bm2.data.grouped_h5 import GroupedParams, grouped_datasets, hub_files
from bm2.download import STUDY_MARKER, ChecksumError, DownloadError, download_study
from bm2.download.hub import fetch_hub_file, libribrain_files, HubFile, LIBRIBRAIN_DEFAULTS
from bm2.studies.libribrain2025 import LibriBrain2025

from .data.fixtures_grouped import write_grouped

TOKEN = "hf_secretTOKEN12345"
OPTS = {"progress": False, "workers": 2, "backoff": 0.0, "retries": 2}


class FakeHub:
    """Repositories in memory; ``faults[path]``: ``cut`` (send half, then drop the connection), ``corrupt`` (right size,
    wrong bytes), ``offline`` (connection refused), ``leak`` (an error whose text holds the token)."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.faults: dict[str, list[str]] = {}
        self.offline = False
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
        hub = self

        class Api:
            def __init__(self, endpoint=None, token=None):
                self.token = token

            def get_paths_info(self, repo_id, paths, repo_type=None, revision=None):
                with hub.lock:
                    hub.calls.append(("list", repo_id, self.token))
                if hub.offline:
                    import httpx2
                    raise httpx2.ConnectError("[Errno 101] Network is unreachable")
                if repo_id not in hub.repos:
                    from huggingface_hub.errors import RepositoryNotFoundError
                    raise RepositoryNotFoundError(f"404 {repo_id}", response=types.SimpleNamespace(status_code=404))
                files = hub.repos[repo_id]
                return [types.SimpleNamespace(path=p, size=len(files[p]), blob_id="x",
                                              lfs={"sha256": hashlib.sha256(files[p]).hexdigest(),
                                                   "size": len(files[p])})
                        for p in paths if p in files]

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.download)
        return self

    def download(self, repo_id, filename, *, repo_type=None, revision=None, local_dir=None, token=None,
                 endpoint=None, tqdm_class=None, **kwargs):
        """Like the hub in local_dir mode: partial data in .cache/huggingface/download/<path>.incomplete, resumed,
        moved to the final name once complete."""
        body = self.repos[repo_id][filename]
        incomplete = Path(local_dir) / ".cache" / "huggingface" / "download" / (filename + ".incomplete")
        incomplete.parent.mkdir(parents=True, exist_ok=True)
        offset = incomplete.stat().st_size if incomplete.exists() else 0
        with self.lock:
            self.calls.append(("get", repo_id, filename, offset, token))
            fault = self.faults.get(filename, [None]).pop(0) if self.faults.get(filename) else None
        if self.offline or fault == "offline":
            from huggingface_hub.errors import LocalEntryNotFoundError
            raise LocalEntryNotFoundError("cannot reach the hub and no local file")
        if fault == "refused":
            error = OSError("401 Client Error: Unauthorized")
            error.response = types.SimpleNamespace(status_code=401)  # type: ignore[attr-defined]
            raise error
        if fault == "leak":
            raise OSError(f"boom while sending Authorization: Bearer {token}")
        if fault == "cut":
            with open(incomplete, "ab") as fh:
                fh.write(body[offset:offset + max(1, (len(body) - offset) // 2)])
            import httpx2
            raise httpx2.ReadError("connection reset by peer")
        time.sleep(0.01)
        with open(incomplete, "ab") as fh:
            fh.write(body[offset:])
        if fault == "corrupt":
            raw = bytearray(incomplete.read_bytes())
            raw[0] ^= 0xFF
            incomplete.write_bytes(bytes(raw))
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        incomplete.replace(dest)
        return str(dest)

    def gets(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "get"]


def _repo(files: list[str]) -> dict[str, bytes]:
    return {p: f"{p}\n".encode() * 50 for p in files}


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    fake = FakeHub().install(monkeypatch)
    wanted = libribrain_files(books=["Sherlock1"])
    main = _repo(wanted)
    fallback = {p: main.pop(p) for p in wanted if "ses-3_" in p}  # one run only in the fallback repository
    fake.repos = {"pnpl/LibriBrain": main, "pnpl/LibriBrain-Competition-2025": fallback}
    return fake


def _options(**spec):
    return {**OPTS, "libribrain2025": {"books": ["Sherlock1"], **spec}}


def test_split_files_are_the_runs_of_the_pinned_split():
    files = libribrain_files()
    assert len(files) == 180 and len(set(files)) == 180  # 90 runs (88 train, validation, test) x h5 + events
    assert "Sherlock1/derivatives/serialised/sub-0_ses-11_task-Sherlock1_run-2_proc-bads+headpos+sss+notch+bp+ds" \
           "_meg.h5" in files
    assert "Sherlock1/derivatives/events/sub-0_ses-12_task-Sherlock1_run-2_events.tsv" in files
    assert not any("Sherlock4" in f and "ses-8_" in f for f in files)
    assert len(libribrain_files(books=["Sherlock1"])) == 24
    with pytest.raises(DownloadError, match=r"books=\['Sherlock9'\] selects no run.*'Sherlock7'"):
        libribrain_files(books=["Sherlock9"])


def test_files_land_at_the_release_paths_and_a_second_call_does_nothing(tmp_path, hub):
    root = tmp_path / "libribrain2025"
    download_study("libribrain2025", root, _options())
    wanted = libribrain_files(books=["Sherlock1"])
    for path in wanted:
        repo = "pnpl/LibriBrain-Competition-2025" if "ses-3_" in path else "pnpl/LibriBrain"
        assert (root / path).read_bytes() == hub.repos[repo][path]
    assert {c[1] for c in hub.gets() if "ses-3_" in c[2]} == {"pnpl/LibriBrain-Competition-2025"}
    assert LibriBrain2025(root, books=["Sherlock1"]).missing_runs() == []
    assert (root / STUDY_MARKER).is_file() and len(hub.gets()) == 24
    hub.calls.clear()
    download_study("libribrain2025", root, _options())
    assert hub.calls == []  # complete: no hub access at all
    download_study("libribrain2025", root, _options(), force=True)
    assert hub.gets() == []  # checked against the listing, nothing fetched again


def test_interrupted_download_is_resumed_and_partial_files_are_never_kept(tmp_path, hub):
    root = tmp_path / "lb"
    wanted = libribrain_files(books=["Sherlock1"])
    cut, short = wanted[0], wanted[2]
    hub.faults[cut] = ["cut"]
    body = hub.repos["pnpl/LibriBrain"][short]
    (root / short).parent.mkdir(parents=True)
    (root / short).write_bytes(body[: len(body) // 3])  # cut short under its final name (copied by hand, ...)
    download_study("libribrain2025", root, _options())
    offsets = [c[3] for c in hub.gets() if c[2] == cut]
    assert offsets[0] == 0 and offsets[1] > 0  # the second attempt resumed from the partial data
    assert (root / cut).read_bytes() == hub.repos["pnpl/LibriBrain"][cut]
    assert (root / short).read_bytes() == body


def test_corrupted_transfers_are_refetched_then_refused(tmp_path, hub):
    root = tmp_path / "lb"
    wanted = libribrain_files(books=["Sherlock1"])
    hub.faults[wanted[1]] = ["corrupt"]
    download_study("libribrain2025", root, _options())
    assert (root / wanted[1]).read_bytes() == hub.repos["pnpl/LibriBrain"][wanted[1]]
    assert sum(c[2] == wanted[1] for c in hub.gets()) == 2
    remote = HubFile("pnpl/LibriBrain", wanted[6], len(hub.repos["pnpl/LibriBrain"][wanted[6]]),
                     hashlib.sha256(hub.repos["pnpl/LibriBrain"][wanted[6]]).hexdigest())
    hub.faults[wanted[6]] = ["corrupt", "corrupt"]
    (root / wanted[6]).unlink()
    with pytest.raises(ChecksumError, match="failed verification twice.*sha256"):
        fetch_hub_file(remote, root, dict(LIBRIBRAIN_DEFAULTS), OPTS, None)
    assert not (root / wanted[6]).exists()


def test_two_jobs_racing_fetch_each_file_once(tmp_path, hub):
    path = libribrain_files(books=["Sherlock1"])[0]
    body = hub.repos["pnpl/LibriBrain"][path]
    remote = HubFile("pnpl/LibriBrain", path, len(body), hashlib.sha256(body).hexdigest())
    threads = [threading.Thread(target=fetch_hub_file, args=(remote, tmp_path, dict(LIBRIBRAIN_DEFAULTS), OPTS, None))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tmp_path / path).read_bytes() == body and len(hub.gets()) == 1


def test_offline_explains_what_to_place_where(tmp_path, hub, capsys):
    hub.offline = True
    root = tmp_path / "lb"
    with pytest.raises(DownloadError) as info:
        download_study("libribrain2025", root, _options())
    text = str(info.value)
    assert "cannot be reached" in text and "Network is unreachable" in text
    assert f"under {root}" in text and "Sherlock1: ses-1..10 run-1, ses-11..12 run-2" in text
    assert "{book}/derivatives/events/sub-{s}_ses-{ses}_task-{book}_run-{run}_events.tsv" in text
    assert str(root / "Sherlock1/derivatives/serialised/sub-0_ses-1_task-Sherlock1_run-1_proc-") in text
    assert "hf download pnpl/LibriBrain --repo-type dataset --local-dir ROOT" in text and "huggingface-cli" in text
    assert not (root / STUDY_MARKER).exists()
    # listing worked but the transfers cannot: same explanation, naming only what is still missing
    hub.offline = False
    for path in libribrain_files(books=["Sherlock1"])[:4]:
        hub.faults[path] = ["offline"] * 3
    with pytest.raises(DownloadError,
                       match=r"cannot be reached[\s\S]*4 of these files are missing[\s\S]*Sherlock1: ses-1..2"):
        download_study("libribrain2025", root, _options())
    from scripts.download import main

    hub.offline = True
    assert main(["libribrain2025", "--root", str(root), "backoff=0"]) == 1
    assert "Place the files yourself" in capsys.readouterr().err
    # the grouped files: their full paths where the loader reads them, and the command that fetches them
    with pytest.raises(DownloadError) as info:
        download_study("libribrain2025", root, _options(grouped=[100]))
    text = str(info.value)
    assert str(root / "grouped" / "data" / "grouped_100" / "test_grouped.h5") in text
    assert "grouped/grouped" not in text
    assert (f"hf download wordcab/libribrain-meg-preprocessed --repo-type dataset --local-dir {root / 'grouped'} "
            "--include 'data/grouped_100/train_grouped.h5'") in text


def test_token_comes_from_the_environment_and_is_never_printed(tmp_path, hub, monkeypatch, caplog, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    root = tmp_path / "lb"
    wanted = libribrain_files(books=["Sherlock1"])
    hub.faults[wanted[5]] = ["leak"]
    caplog.set_level("DEBUG")
    from scripts.download import main

    assert main(["libribrain2025", "--root", str(root), "libribrain2025.books=[Sherlock1]", "backoff=0"]) == 1
    out = capsys.readouterr()
    assert "1 of 24 files could not be downloaded" in out.err and "Bearer ***" in out.err
    assert TOKEN not in out.err + out.out + caplog.text
    assert {c[-1] for c in hub.gets()} == {TOKEN} and {c[2] for c in hub.calls if c[0] == "list"} == {TOKEN}
    assert main(["libribrain2025", "--root", str(root), "libribrain2025.books=[Sherlock1]", "backoff=0"]) == 0
    assert TOKEN not in capsys.readouterr().err + caplog.text


def test_grouped_files_are_fetched_next_to_the_release_and_read(tmp_path, hub):
    rng = np.random.default_rng(0)
    files = {}
    for path in hub_files(100):
        buffer = tmp_path / "src" / path
        write_grouped(buffer, rng.standard_normal((3, 306, 125)), [0, 5, 38], 100)
        files[path] = buffer.read_bytes()
    hub.repos["wordcab/libribrain-meg-preprocessed"] = files
    root = tmp_path / "lb"
    download_study("libribrain2025", root, _options(grouped=[100]))
    datasets = grouped_datasets(root / "grouped", GroupedParams(k=100))
    assert len(datasets.test) == 3 and datasets.test.segments.label_name.tolist() == ["AA", "AY", "ZH"]
    with h5py.File(io.BytesIO(files[hub_files(100)[2]]), "r") as f:
        np.testing.assert_array_equal(datasets.test[1]["brain"].numpy(), f["data"][1])
    marker = json.loads((root / STUDY_MARKER).read_text())
    assert marker["study"] == "libribrain2025"


def test_listing_the_whole_split_in_batches_and_reporting_absent_runs(tmp_path, hub, caplog):
    from bm2.download.hub import list_hub_files

    every = libribrain_files()
    hub.repos["pnpl/LibriBrain"] = _repo(every[:-2])  # the last run is on no repository
    found = list_hub_files(LIBRIBRAIN_DEFAULTS["repos"], every, dict(LIBRIBRAIN_DEFAULTS), OPTS, None)
    assert set(found) == set(every[:-2]) and all(f.repo == "pnpl/LibriBrain" for f in found.values())
    assert [c[1] for c in hub.calls] == ["pnpl/LibriBrain", "pnpl/LibriBrain", "pnpl/LibriBrain-Competition-2025"]
    hub.calls.clear()
    download_study("libribrain2025", tmp_path / "lb", {**OPTS, "libribrain2025": {"books": ["Sherlock7"]}})
    assert "1 file(s) of split '2025' are in none of" not in caplog.text  # the h5 and the events of one run: 2
    assert "2 file(s) of split '2025' are in none of" in caplog.text and every[-1] in caplog.text
    assert len(hub.gets()) == 26


def test_unreachable_endpoint_with_the_real_client_gives_the_offline_help(tmp_path, monkeypatch):
    """No fake: huggingface_hub itself against a local port nobody listens on (its real connection error)."""
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: connections are refused
    opts = {**OPTS, "retries": 0, "libribrain2025": {"books": ["Sherlock2"], "endpoint": f"http://127.0.0.1:{port}"}}
    with pytest.raises(DownloadError, match=r"hub cannot be reached[\s\S]*Sherlock2: ses-1..12 run-1"):
        download_study("libribrain2025", tmp_path / "lb", opts)


def test_unknown_options_are_refused_with_the_valid_keys(tmp_path, hub):
    with pytest.raises(DownloadError, match=r"unknown key\(s\) \['book'\].*valid keys.*'books'"):
        download_study("libribrain2025", tmp_path / "lb", _options(book=["Sherlock1"]))
    with pytest.raises(DownloadError, match=r"verify='md5': use sha256 or size"):
        download_study("libribrain2025", tmp_path / "lb", _options(verify="md5"))
    assert hub.calls == []


def test_a_refused_file_names_the_token_variable(tmp_path, hub):
    path = libribrain_files(books=["Sherlock1"])[3]
    hub.faults[path] = ["refused"]
    with pytest.raises(DownloadError, match=r"1 of 24 files[\s\S]*401 Client Error.*export HF_TOKEN=<an access token>"):
        download_study("libribrain2025", tmp_path / "lb", _options())
    assert sum(c[2] == path for c in hub.gets()) == 1  # a refusal is not retried
