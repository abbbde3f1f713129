"""Remote listings: OSF API, WebDAV PROPFIND and remote file names."""

from __future__ import annotations

import re
import typing as tp
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import requests
import requests.auth

from .http import DownloadError, MAX_FOLDERS, MAX_LISTING_PAGES, RemoteFile, _raise_for_status, _with_retries


# ---------------------------------------------------------------------------------------------- listings

def _safe_relative(path: str, source: str) -> str:
    """``path`` as a clean relative POSIX path, or an error if it would escape the study root."""
    norm = path.replace("\\", "/").strip("/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"{source}: refusing remote path {path!r} (empty, absolute or with '..')")
    return "/".join(parts)


def _get_json(session: requests.Session, url: str, opts: dict[str, tp.Any]) -> dict[str, tp.Any]:
    def once() -> dict[str, tp.Any]:
        with session.get(url, timeout=opts["timeout"], headers={"Accept": "application/json"}) as resp:
            _raise_for_status(resp, url)
            try:
                return resp.json()
            except ValueError as exc:
                raise DownloadError(f"{url}: the answer is not JSON; check the API URL in the `download:` "
                                    "config section") from exc
    return _with_retries(once, url, opts["retries"], opts["backoff"])


def _page_size(url: str, size: int = 100) -> str:
    # Fewer, larger listing pages spare OSF's rate limit; the API ignores the parameter where unsupported.
    return url if "page[size]" in url else url + ("&" if "?" in url else "?") + f"page[size]={size}"


def osf_list_files(project: str, api: str, session: requests.Session, opts: dict[str, tp.Any]) -> list[RemoteFile]:
    """Every file of an OSF project's osfstorage (folders recursed, pages followed), with size and hash."""
    start = f"{api.rstrip('/')}/nodes/{project}/files/osfstorage/"
    queue: list[tuple[str, str]] = [(_page_size(start), "")]
    seen: set[str] = set()
    files: list[RemoteFile] = []
    pages = 0
    while queue:
        url: str | None
        url, prefix = queue.pop(0)
        while url:
            if url in seen:  # a listing linking back to a page already read: stop rather than loop
                break
            seen.add(url)
            pages += 1
            if pages > MAX_LISTING_PAGES:
                raise DownloadError(f"OSF project {project}: more than {MAX_LISTING_PAGES} listing pages")
            payload = _get_json(session, url, opts)
            for item in payload.get("data") or []:
                attrs = item.get("attributes") or {}
                rel = _safe_relative(prefix + str(attrs.get("name", "")), f"OSF project {project}")
                if attrs.get("kind") == "folder":
                    related = (((item.get("relationships") or {}).get("files") or {}).get("links") or {})
                    related = related.get("related")
                    href = related.get("href") if isinstance(related, dict) else related
                    if not href:  # older answers: the folder's own listing from its storage path
                        href = f"{start.rstrip('/')}{attrs.get('path', '')}"
                    queue.append((_page_size(href), rel + "/"))
                    continue
                hashes = ((attrs.get("extra") or {}).get("hashes") or {})
                checksum = (f"sha256:{hashes['sha256']}" if hashes.get("sha256")
                            else f"md5:{hashes['md5']}" if hashes.get("md5") else None)
                download = (item.get("links") or {}).get("download")
                if not download:
                    raise DownloadError(f"OSF project {project}: no download link for {rel}")
                size = attrs.get("size")
                files.append(RemoteFile(rel, download, int(size) if size is not None else None, checksum))
            url = (payload.get("links") or {}).get("next")
    return files


_DAV = "{DAV:}"
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
                 b"<d:resourcetype/><d:getcontentlength/></d:prop></d:propfind>")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``*`` and ``?`` stay within a folder, ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _may_contain(folder: str, patterns: tp.Sequence[str]) -> bool:
    """Whether some file under ``folder`` could match one of ``patterns`` (prunes e.g. fMRI subjects)."""
    if not patterns:
        return True
    parts = folder.strip("/").split("/")
    for pattern in patterns:
        segments = pattern.split("/")
        for depth, part in enumerate(parts):
            if depth >= len(segments) - 1 and "**" not in segments[min(depth, len(segments) - 1)]:
                break  # the pattern names files at this depth or above, not inside this folder
            if "**" in segments[depth]:
                return True  # crosses folders: anything below may match
            if not glob_regex(segments[depth]).match(part):
                break
        else:
            return True
    return False


def webdav_list_files(base_url: str, session: requests.Session, auth: tp.Any, opts: dict[str, tp.Any],
                      include: tp.Sequence[str] = ()) -> list[RemoteFile]:
    """Files under a WebDAV folder (PROPFIND, depth 1, folders recursed), filtered by ``include`` globs."""
    base = base_url.rstrip("/") + "/"
    base_path = unquote(urlsplit(base).path)
    patterns = [glob_regex(p) for p in include]
    queue, seen, files = [""], set(), []
    while queue:
        folder = queue.pop(0)
        if folder in seen:
            continue
        seen.add(folder)
        if len(seen) > MAX_FOLDERS:
            raise DownloadError(f"{base}: more than {MAX_FOLDERS} folders; narrow `include`")
        url = base + quote(folder)

        def once(url: str = url) -> bytes:
            with session.request("PROPFIND", url, data=PROPFIND_BODY, auth=auth, timeout=opts["timeout"],
                                 headers={"Depth": "1", "Content-Type": "application/xml"}) as resp:
                _raise_for_status(resp, url)
                if resp.status_code != 207:
                    raise DownloadError(f"{url}: expected a WebDAV listing (HTTP 207), got HTTP {resp.status_code};"
                                        " set `files` explicitly in the `download:` config section instead")
                return resp.content
        # The answer comes from the authenticated repository; expat refuses entity-expansion bombs.
        tree = ElementTree.fromstring(_with_retries(once, url, opts["retries"], opts["backoff"]))
        for response in tree.iter(f"{_DAV}response"):
            href = unquote(urlsplit((response.findtext(f"{_DAV}href") or "").strip()).path)
            if not href.startswith(base_path):
                continue
            rel_raw = href[len(base_path):].strip("/")
            if not rel_raw or rel_raw == folder.strip("/"):
                continue  # the folder itself
            rel = _safe_relative(rel_raw, base)
            is_dir = response.find(f".//{_DAV}resourcetype/{_DAV}collection") is not None
            if is_dir:
                if _may_contain(rel, include):
                    queue.append(rel + "/")
                continue
            if patterns and not any(p.match(rel) for p in patterns):
                continue
            length = response.findtext(f".//{_DAV}getcontentlength")
            size = int(length) if length and length.strip().isdigit() else None
            files.append(RemoteFile(rel, base + quote(rel), size, None))
    return files


def _filename_from_headers(resp: requests.Response) -> str | None:
    disposition = resp.headers.get("Content-Disposition", "")
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", disposition)
    if match:
        return unquote(match.group(1).strip().strip('"'))
    match = re.search(r'filename\s*=\s*"([^"]+)"', disposition) or re.search(r"filename\s*=\s*([^;]+)",
                                                                             disposition)
    return match.group(1).strip() if match else None


def remote_name(url: str, session: requests.Session, opts: dict[str, tp.Any], auth: tp.Any = None,
                headers: dict[str, str] | None = None) -> str:
    """The file name a server gives ``url`` (Content-Disposition), else the last segment of its path."""
    def once() -> str | None:
        # GET rather than HEAD (not every repository answers HEAD); the body is never read.
        with session.get(url, stream=True, timeout=opts["timeout"], auth=auth, headers=headers or {}) as resp:
            _raise_for_status(resp, url)
            return _filename_from_headers(resp)
    name = _with_retries(once, url, opts["retries"], opts["backoff"]) or unquote(urlsplit(url).path.rstrip("/"))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise DownloadError(f"{url}: cannot tell the file name; give it as `name` in the `download:` config section")
    return name


