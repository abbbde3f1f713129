"""Fetch the public studies: resumable, verified, atomic, lock-protected downloads and safe archive extraction.

Entry points:

- :func:`download_file`: one URL to one file. Partial data lives in ``dest + ".part"`` and is resumed with HTTP
  range requests; the result is checked against the source's checksum (or at least its size) and only then
  renamed to ``dest``; a ``dest + ".lock"`` file lock makes concurrent jobs wait for each other instead of
  writing the same file twice.
- :func:`extract_archive`: zip / tar(.gz) extracted once (temporary folder, rename, completion marker last),
  refusing members that would land outside the destination.
- :func:`download_study`: the source of each study (``gwilliams2022``: OSF API; ``broderick2019``: Dryad
  archive; ``brennan2019``: Deep Blue files; ``schoffelen2019``: Donders WebDAV with credentials taken from
  environment variables). Its options are the ``download:`` section of ``conf/config.yaml`` (see
  :data:`DEFAULTS`); ``python -m scripts.download NAME`` runs it from the command line.

Once a study is complete, a marker (``.bm2-download.json``) in its root lets later calls return at once,
without any network access.
"""

from __future__ import annotations

from .http import (logger, CHUNK, NET_CHUNK, STUDY_MARKER, ARCHIVE_SUFFIXES, MAX_LISTING_PAGES, MAX_FOLDERS, USER_AGENT,
                   DownloadError, ChecksumError, CredentialsError, ArchiveError, UnsafeArchiveError, RemoteFile,
                   progress_enabled, new_session, file_digest, NETWORK_ERRORS, download_file)
from .archives import archive_marker, extract_archive, is_archive
from .listings import osf_list_files, PROPFIND_BODY, glob_regex, webdav_list_files, remote_name
from .listings import _may_contain as _may_contain  # used by the tests
from .studies import (BRENNAN_FILES, DEFAULTS, NOTHING_TO_DOWNLOAD, MOUS_HELP, download_files, DOWNLOADERS,
                      downloadable_studies, download_study)
from .studies import _options as _options  # used by the tests

__all__ = [
    "logger", "CHUNK", "NET_CHUNK", "STUDY_MARKER", "ARCHIVE_SUFFIXES", "MAX_LISTING_PAGES", "MAX_FOLDERS",
    "USER_AGENT", "BRENNAN_FILES", "DEFAULTS", "NOTHING_TO_DOWNLOAD", "MOUS_HELP", "DownloadError", "ChecksumError",
    "CredentialsError", "ArchiveError", "UnsafeArchiveError", "RemoteFile", "progress_enabled", "new_session",
    "file_digest", "NETWORK_ERRORS", "download_file", "archive_marker", "extract_archive", "is_archive",
    "osf_list_files", "PROPFIND_BODY", "glob_regex", "webdav_list_files", "remote_name", "download_files",
    "DOWNLOADERS", "downloadable_studies", "download_study",
]
