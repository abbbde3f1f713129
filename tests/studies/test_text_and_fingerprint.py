"""The shared text reader (UTF-8 / BOM / UTF-16 / Latin-1 fallback) and the content fingerprints of inputs."""

from __future__ import annotations

import logging
import os

import pytest

from bm2.studies._common import canonical_code, read_textgrid, read_tsv
from bm2.studies.base import StudyError
from bm2.utils import fingerprint
from bm2.utils.fingerprint import file_fingerprint, files_fingerprint
from bm2.utils.text import read_text


def test_read_text_encodings(tmp_path, caplog):
    path = tmp_path / "a.tsv"
    for data in ("onset\tword\r\n1\tcafé\r\n".encode(), b"\xef\xbb\xbf" + "onset\tword\n1\tcafé\n".encode(),
                 "onset\tword\n1\tcafé\n".encode("utf-16")):
        path.write_bytes(data)
        with caplog.at_level(logging.WARNING):
            assert read_text(path) == "onset\tword\n1\tcafé\n"
        assert not caplog.records
    path.write_bytes("onset\tword\n1\tcafé\n".encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        assert read_text(path) == "onset\tword\n1\tcafé\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} is not UTF-8 (byte 0xe9 on line 2); read as Latin-1 (ISO-8859-1): check its accented characters, "
        "or re-save it as UTF-8"]


def test_latin1_textgrid(tmp_path, caplog):
    text = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\ntiers? <exists>\nsize = 1\n'
            'item []:\n    item [1]:\n        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n'
            '        xmax = 1\n        intervals: size = 1\n        intervals [1]:\n            xmin = 0\n'
            '            xmax = 1\n            text = "één"\n')
    (tmp_path / "a.TextGrid").write_bytes(text.encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        assert read_textgrid(tmp_path / "a.TextGrid") == {"words": [(0.0, 1.0, "één")]}
    assert "a.TextGrid is not UTF-8" in caplog.text


def test_read_tsv_lines(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("onset\tduration\ttrial_type\n1.0\t0\tword\n\n2.0\tn/a\n3\t1\tx\t\t\n")
    table = read_tsv(path)
    assert list(table.index) == [2, 4, 5] and list(table.columns) == ["onset", "duration", "trial_type"]
    assert table.loc[4].tolist() == ["2.0", "n/a", ""] and table.loc[5].tolist() == ["3", "1", "x"]
    path.write_text("onset\tduration\n1\t2\t3\n")
    with pytest.raises(StudyError, match=r"e\.tsv line 2: 3 tab-separated fields but the header \(line 1\) names 2"):
        read_tsv(path)
    path.write_text("onset\tonset\n")
    with pytest.raises(StudyError, match=r"line 1: column\(s\) \['onset'\] appear more than once"):
        read_tsv(path)


def test_canonical_codes():
    assert canonical_code("1.0") == canonical_code("1") == canonical_code(1) == canonical_code(1.0) == "1"
    assert canonical_code(" 2.50 ") == "2.5" and canonical_code("01") == "1"
    assert canonical_code("auditory/left") == "auditory/left" and canonical_code("n/a") == "n/a"
    assert canonical_code("nan") == "nan"


def test_fingerprints_follow_content_not_mtime(tmp_path, monkeypatch):
    small = tmp_path / "channels.tsv"
    small.write_text("name\tstatus\nC3\tgood\n")
    first = file_fingerprint(small)
    os.utime(small, ns=(0, 10**18))
    assert file_fingerprint(small) == first
    small.write_text("name\tstatus\nC3\tbad!\n")  # same size, other content
    assert file_fingerprint(small) != first
    assert file_fingerprint(tmp_path / "nope") == "missing"
    # a large file is sampled: head, tail and evenly spaced probes
    monkeypatch.setattr(fingerprint, "FULL_HASH_BYTES", 1 << 20)
    big = tmp_path / "raw.fif"
    data = bytearray(os.urandom(3 << 20))
    big.write_bytes(bytes(data))
    first = file_fingerprint(big)
    os.utime(big, ns=(0, 10**18))
    assert file_fingerprint(big) == first
    probe = fingerprint.sampled_ranges(len(data))[1][0]
    for offset in (10, len(data) - 10, probe + 5):  # header, end, first probe
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        big.write_bytes(bytes(changed))
        assert file_fingerprint(big) != first, offset
    changed = bytearray(data)
    changed[probe - 5] ^= 0xFF  # between two sampled blocks: not seen (the documented limit)
    big.write_bytes(bytes(changed))
    assert file_fingerprint(big) == first
    big.write_bytes(bytes(data) + b"\0")
    assert file_fingerprint(big) != first
    # a folder (a CTF .ds): names and contents of its files, wherever it lies
    ds = tmp_path / "a.ds"
    ds.mkdir()
    (ds / "a.meg4").write_bytes(b"x" * 100)
    (ds / "a.res4").write_bytes(b"y" * 10)
    moved = tmp_path / "elsewhere" / "a.ds"
    moved.parent.mkdir()
    import shutil

    shutil.copytree(ds, moved)
    assert file_fingerprint(ds) == file_fingerprint(moved)
    (moved / "a.res4").write_bytes(b"z" * 10)
    assert file_fingerprint(ds) != file_fingerprint(moved)
    assert files_fingerprint({"x": ds}) == {"x": file_fingerprint(ds)}
