"""The LibriBrain download with the real ``huggingface_hub`` client against a small local hub (``endpoint`` points at
127.0.0.1): the paths-info listing, HEAD metadata, ranged GETs, and the client's own resume after a dropped body."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from bm2.download import STUDY_MARKER, download_study
from bm2.download.hub import libribrain_files

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_localSECRET987"


class LocalHub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.faults: dict[str, list[str]] = {}
        self.log: list[dict] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_POST(self):  # /api/datasets/{owner}/{name}/paths-info/{revision}
                parts = unquote(urlsplit(self.path).path).split("/")
                repo = "/".join(parts[3:5])
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                with hub.lock:
                    hub.log.append({"method": "POST", "repo": repo, "auth": self.headers.get("Authorization")})
                if repo not in hub.repos:
                    body = json.dumps({"error": "Repository not found"}).encode()
                    return self._send(404, body, {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound",
                                                  "Content-Length": str(len(body))})
                files = hub.repos[repo]
                info = [{"type": "file", "path": p, "size": len(files[p]), "oid": hashlib.sha1(files[p]).hexdigest(),
                         "lfs": {"oid": hashlib.sha256(files[p]).hexdigest(), "size": len(files[p]),
                                 "pointerSize": 134}} for p in form.get("paths", []) if p in files]
                body = json.dumps(info).encode()
                self._send(200, body, {"Content-Type": "application/json", "Content-Length": str(len(body))})

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):  # /datasets/{owner}/{name}/resolve/{revision}/{path}
                parts = unquote(urlsplit(self.path).path).split("/")
                repo, path = "/".join(parts[2:4]), "/".join(parts[6:])
                data = hub.repos.get(repo, {}).get(path)
                ranged = self.headers.get("Range")
                with hub.lock:
                    hub.log.append({"method": self.command, "repo": repo, "path": path, "range": ranged,
                                    "auth": self.headers.get("Authorization")})
                    fault = hub.faults[path].pop(0) if self.command == "GET" and hub.faults.get(path) else None
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "Content-Length": "0"})
                start = int(ranged.split("=")[1].split("-")[0]) if ranged else 0
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                           "Accept-Ranges": "bytes", "Content-Length": str(len(data) - start)}
                if ranged:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                if fault == "cut":  # promise the whole body, send half, drop the connection
                    self.send_response(206 if ranged else 200)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(206 if ranged else 200, body, headers)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def local_hub():
    hub = LocalHub()
    hub.thread.start()
    yield hub
    hub.server.shutdown()
    hub.server.server_close()


def test_real_client_fetches_resumes_and_then_stays_offline(tmp_path, local_hub, monkeypatch, capsys, caplog):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    wanted = libribrain_files(books=["Sherlock1"])
    bodies = {p: (p * 2000).encode() for p in wanted}
    # the client writes 10 MB chunks (DOWNLOAD_CHUNK_SIZE): a body cut after 12 MB leaves partial data to resume
    bodies[wanted[0]] = bytes(range(256)) * (24 << 12)
    local_hub.repos = {"pnpl/LibriBrain": {p: b for p, b in bodies.items() if "ses-3_" not in p},
                       "pnpl/LibriBrain-Competition-2025": {p: b for p, b in bodies.items() if "ses-3_" in p}}
    local_hub.faults[wanted[0]] = ["cut"]
    root = tmp_path / "lb"
    opts = {"progress": False, "workers": 2, "backoff": 0.0, "retries": 1,
            "libribrain2025": {"books": ["Sherlock1"], "endpoint": local_hub.endpoint}}
    download_study("libribrain2025", root, opts)
    for path, body in bodies.items():
        assert (root / path).read_bytes() == body
    gets = [r for r in local_hub.log if r["method"] == "GET"]
    from huggingface_hub import constants

    resumed = f"bytes={constants.DOWNLOAD_CHUNK_SIZE}-"  # what the client had written when the connection dropped
    assert [r["range"] for r in gets if r["path"] == wanted[0]] == [None, resumed]
    assert {r["repo"] for r in gets if "ses-3_" in r["path"]} == {"pnpl/LibriBrain-Competition-2025"}
    assert {r["auth"] for r in local_hub.log} == {f"Bearer {TOKEN}"}  # the token from HF_TOKEN reached the hub
    assert (root / STUDY_MARKER).is_file()
    local_hub.log.clear()
    download_study("libribrain2025", root, opts)
    assert local_hub.log == []
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err + caplog.text
