"""Reading text files as they come: UTF-8 (with or without a byte-order mark), UTF-16 with a BOM, else Latin-1.

Every study reads its text files (events.tsv, CSVs, logs, TextGrids ...) through :func:`read_text`, so that a
file saved by an old Windows tool (767 Latin-1 ``events.tsv`` on OpenNeuro) is read with a warning naming it
instead of failing with a bare ``UnicodeDecodeError``.
"""

from __future__ import annotations

import codecs
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def decode_text(data: bytes, source: str | Path) -> str:
    """``data`` decoded: UTF-16 when it starts with a UTF-16 BOM, else UTF-8 (a BOM is dropped), else Latin-1
    with a warning naming ``source`` and the first byte that is not UTF-8."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        logger.warning("%s is not UTF-8 (byte 0x%02x on line %d); read as Latin-1 (ISO-8859-1): check its "
                       "accented characters, or re-save it as UTF-8", source, data[exc.start], line)
        return data.decode("latin-1")


def read_text(path: str | Path) -> str:
    """The text of ``path`` (see :func:`decode_text`), with universal newlines (``\\r\\n`` and ``\\r`` become
    ``\\n``)."""
    text = decode_text(Path(path).read_bytes(), path)
    return text.replace("\r\n", "\n").replace("\r", "\n")
