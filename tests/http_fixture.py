"""A small local HTTP server for the download tests: files with Range support, OSF-like API listings,
a basic-auth protected WebDAV-like area, and faults injected on demand (dropped connections, corrupted
bodies, ignored ranges, error statuses). It only ever binds to 127.0.0.1, on a port chosen by the OS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
import typing as tp
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
CHUNK = 16 * 1024


class FakeServer:
    """In-memory HTTP server; configure ``files`` / ``json`` / ``faults`` / ``auth`` / ``dav``, read ``log``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}                  # URL path -> body (served with Range support)
        self.extra_headers: dict[str, dict[str, str]] = {}  # URL path -> additional response headers
        self.json: dict[str, tp.Any] = {}                  # URL path (with query, if any) -> JSON payload
        self.faults: dict[str, list[str]] = {}             # URL path -> faults, one consumed per GET
        self.auth: dict[str, tuple[str, str]] = {}         # URL prefix -> (user, password), basic auth
        self.dav: set[str] = set()                         # URL prefixes answering PROPFIND from `files`
        self.throttle: dict[str, float] = {}               # URL path -> seconds slept per 16 KiB chunk
        self.ignore_range = False                          # answer 200 + whole body even to Range requests
        self.log: list[dict[str, tp.Any]] = []             # every request: method, path, headers, status, sent
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((HOST, 0), handler)  # port 0: a free port picked by the OS
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._httpd = None

    @property
    def base(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://{HOST}:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` (quoted)."""
        return self.base + quote(path)

    def requests_for(self, path: str, method: str = "GET") -> list[dict[str, tp.Any]]:
        """The logged requests for ``path``."""
        with self.lock:
            return [r for r in self.log if r["path"] == path and r["method"] == method]

    # ------------------------------------------------------------------ OSF
    def add_osf_project(self, project: str, files: dict[str, bytes], page_size: int = 2,
                        sha256: bool = False) -> None:
        """Mimic the OSF API v2 listings of ``project`` (paginated, folders with their own listings)."""
        root = f"/v2/nodes/{project}/files/osfstorage/"
        folders: dict[str, list[dict[str, tp.Any]]] = {"": []}
        for rel in sorted(files):
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                folders.setdefault("/".join(parts[:depth]) + "/", [])
        for rel, body in sorted(files.items()):
            parent = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
            path = f"/osf/{project}/{rel}"
            self.files[path] = body
            hashes = {"md5": hashlib.md5(body).hexdigest()}
            if sha256:
                hashes["sha256"] = hashlib.sha256(body).hexdigest()
            folders[parent].append({"type": "files", "attributes": {
                "kind": "file", "name": rel.rsplit("/", 1)[-1], "materialized_path": "/" + rel, "size": len(body),
                "extra": {"hashes": hashes}}, "links": {"download": self.url(path)}})
        for folder in sorted(folders):
            if not folder:
                continue
            parent = folder[:-1].rsplit("/", 1)[0] + "/" if "/" in folder[:-1] else ""
            listing = f"{root}{folder}"
            folders[parent].append({"type": "files", "attributes": {
                "kind": "folder", "name": folder[:-1].rsplit("/", 1)[-1], "path": "/" + folder,
                "materialized_path": "/" + folder},
                "relationships": {"files": {"links": {"related": {"href": self.url(listing), "meta": {}}}}}})
        for folder, items in folders.items():
            listing = f"{root}{folder}"
            pages = [items[i:i + page_size] for i in range(0, len(items), page_size)] or [[]]
            for number, page in enumerate(pages, 1):
                key = listing if number == 1 else f"{listing}?page={number}"
                nxt = f"{self.url(listing)}?page={number + 1}" if number < len(pages) else None
                self.json[key] = {"data": page, "links": {"first": None, "last": None, "prev": None, "next": nxt,
                                                          "meta": {"total": len(items), "per_page": page_size}}}

    # ------------------------------------------------------------------ request handling
    def _handle(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        entry = {"method": method, "path": path, "query": split.query, "headers": dict(handler.headers),
                 "status": None, "sent": 0, "time": time.time(), "end": None}
        with self.lock:
            self.log.append(entry)
        length = int(handler.headers.get("Content-Length") or 0)
        if length:  # read the request body, or closing the socket could reset the client's connection
            handler.rfile.read(length)
        for prefix, (user, password) in self.auth.items():
            if path.startswith(prefix):
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                if handler.headers.get("Authorization") != f"Basic {token}":
                    return self._send(handler, entry, 401, b"authentication required",
                                      {"WWW-Authenticate": 'Basic realm="fake"'})
        if method == "PROPFIND":
            return self._propfind(handler, entry, path)
        page = parse_qs(split.query).get("page")  # other query parameters (page[size] ...) are ignored
        key = path + (f"?page={page[0]}" if page else "")
        if key in self.json:
            return self._send(handler, entry, 200, json.dumps(self.json[key]).encode(),
                              {"Content-Type": "application/vnd.api+json"})
        if path in self.files:
            return self._serve_file(handler, entry, path)
        return self._send(handler, entry, 404, b"not found")

    def _send(self, handler: _Handler, entry: dict[str, tp.Any], status: int, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        entry["status"] = status
        try:
            handler.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                handler.send_header(key, value)
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
                entry["sent"] += len(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        entry["end"] = time.time()

    def _serve_file(self, handler: _Handler, entry: dict[str, tp.Any], path: str) -> None:
        data = self.files[path]
        with self.lock:
            queue = self.faults.get(path) or []
            fault = queue.pop(0) if queue and handler.command == "GET" else ""
        entry["fault"] = fault
        if fault.startswith("status:"):
            return self._send(handler, entry, int(fault.split(":")[1]), b"try later", {"Retry-After": "0"})
        if fault == "corrupt":  # same length, wrong bytes: only a checksum notices
            data = bytes(b ^ 0x5A for b in data)
        status, start, end = 200, 0, len(data) - 1
        headers = {"Accept-Ranges": "bytes", **self.extra_headers.get(path, {})}
        ranged = handler.headers.get("Range")
        if ranged and not self.ignore_range and fault != "ignore_range":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())
            assert match, f"unexpected Range header {ranged!r}"
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            if start >= len(data):
                return self._send(handler, entry, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start:end + 1]
        limit = int(fault.split(":")[1]) if fault.startswith("drop:") else len(body)
        entry["status"] = status
        try:
            handler.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **headers}.items():
                handler.send_header(key, value)
            handler.end_headers()
            delay = self.throttle.get(path, 0.0)
            for offset in range(0, min(limit, len(body)), CHUNK):
                piece = body[offset:min(offset + CHUNK, limit)]
                handler.wfile.write(piece)
                entry["sent"] += len(piece)
                if delay:
                    time.sleep(delay)
            if limit < len(body):  # drop the connection mid-body, as a flaky network would
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        entry["end"] = time.time()

    def _propfind(self, handler: _Handler, entry: dict[str, tp.Any], path: str) -> None:
        if not any(path.startswith(prefix) for prefix in self.dav):
            return self._send(handler, entry, 405, b"method not allowed")
        folder = path.rstrip("/") + "/"
        children: dict[str, int | None] = {}  # href -> size (None: folder)
        for name, body in self.files.items():
            if name.startswith(folder):
                rest = name[len(folder):]
                if "/" in rest:
                    children[folder + rest.split("/", 1)[0] + "/"] = None
                else:
                    children[name] = len(body)
        if not children:
            return self._send(handler, entry, 404, b"not found")
        parts = ['<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:">']
        for href, size in [(folder, None), *sorted(children.items())]:
            kind = "<d:collection/>" if size is None else ""
            length = "" if size is None else f"<d:getcontentlength>{size}</d:getcontentlength>"
            parts.append(f"<d:response><d:href>{escape(quote(href))}</d:href><d:propstat><d:prop>"
                         f"<d:resourcetype>{kind}</d:resourcetype>{length}</d:prop>"
                         "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>")
        parts.append("</d:multistatus>")
        self._send(handler, entry, 207, "".join(parts).encode(), {"Content-Type": "application/xml"})


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and a dropped body is unambiguous

    def log_message(self, format: str, *args: tp.Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.fake._handle(self, "GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self.fake._handle(self, "HEAD")

    def do_PROPFIND(self) -> None:  # noqa: N802
        self.fake._handle(self, "PROPFIND")
