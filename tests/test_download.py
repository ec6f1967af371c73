"""Downloads against a real HTTP server on 127.0.0.1: resume, retries, checksums, errors."""

from __future__ import annotations

import hashlib

import pytest
from fixtures_10x import closed_port, http_server, small_counts, write_10x_h5

from cellgnn.data.download import DownloadError, download, read_sidecar, sidecar_path
from cellgnn.errors import CellgnnInputError

FAST = {"retries": 3, "backoff": 0.01, "timeout": 5, "progress": False}


@pytest.fixture
def payload(tmp_path):
    """A real 10x .h5 file's bytes (a few KB) and its sha256."""
    p = write_10x_h5(small_counts(60, 40), tmp_path / "src.h5")
    data = p.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def test_download_verifies_and_records_sum(tmp_path, payload):
    data, digest = payload
    with http_server({"/a.h5": data}) as srv:
        out = download(f"{srv.base}/a.h5", tmp_path / "dl" / "a.h5", None, **FAST)
        assert out.read_bytes() == data
        assert read_sidecar(out) == digest  # first download records the sum
        assert not out.with_name("a.h5.part").exists()
        n = len(srv.requests)
        # a second call verifies the existing file against the sidecar and does not fetch
        download(f"{srv.base}/a.h5", out, None, **FAST)
        assert len(srv.requests) == n
        # with the right sum given explicitly, also no fetch
        download(f"{srv.base}/a.h5", out, digest, **FAST)
        assert len(srv.requests) == n


def test_dropped_connection_is_resumed_with_range(tmp_path, payload):
    data, digest = payload
    with http_server({"/a.h5": data}, modes={"/a.h5": "drop"}, drops=2) as srv:
        out = download(f"{srv.base}/a.h5", tmp_path / "a.h5", digest, **FAST)
        assert out.read_bytes() == data
        ranges = [r for _, r in srv.requests]
    assert ranges[0] is None
    # each retry asked for the remainder only (two drops, then a complete answer)
    assert len(ranges) == 3 and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert int(ranges[1].split("=")[1].rstrip("-")) == len(data) // 2


def test_partial_file_survives_failure_and_is_resumed_next_run(tmp_path, payload):
    data, digest = payload
    dest = tmp_path / "a.h5"
    with http_server({"/a.h5": data}, modes={"/a.h5": "drop"}, drops=10) as srv:
        with pytest.raises(DownloadError, match="bytes kept") as ei:
            download(f"{srv.base}/a.h5", dest, digest, **{**FAST, "retries": 0})
        assert srv.base + "/a.h5" in str(ei.value)
    part = tmp_path / "a.h5.part"
    assert part.exists() and 0 < part.stat().st_size < len(data) and not dest.exists()
    kept = part.stat().st_size
    with http_server({"/a.h5": data}) as srv:
        download(f"{srv.base}/a.h5", dest, digest, **FAST)
        assert srv.requests[0][1] == f"bytes={kept}-"
    assert dest.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts_cleanly(tmp_path, payload):
    data, digest = payload
    (tmp_path / "a.h5.part").write_bytes(data[:100])
    with http_server({"/a.h5": data}, modes={"/a.h5": "no_range"}) as srv:
        out = download(f"{srv.base}/a.h5", tmp_path / "a.h5", digest, **FAST)
    assert out.read_bytes() == data


def test_wrong_bytes_checksum_error_keeps_good_file(tmp_path, payload):
    data, digest = payload
    dest = tmp_path / "a.h5"
    with http_server({"/a.h5": data}) as srv:
        download(f"{srv.base}/a.h5", dest, None, **FAST)  # good file + recorded sum
    with http_server({"/a.h5": data}, modes={"/a.h5": "wrong"}) as srv:
        with pytest.raises(DownloadError) as ei:
            download(f"{srv.base}/a.h5", dest, None, force=True, **FAST)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and digest in msg and srv.base in msg and "Fix:" in msg
    bad_digest = hashlib.sha256(bytes(b ^ 0xFF for b in data)).hexdigest()
    assert bad_digest in msg  # expected vs got
    assert dest.read_bytes() == data  # earlier good file untouched
    assert read_sidecar(dest) == digest
    assert (tmp_path / "a.h5.mismatch").exists() and not (tmp_path / "a.h5.part").exists()


def test_wrong_bytes_against_configured_sum(tmp_path, payload):
    data, digest = payload
    with http_server({"/a.h5": data}, modes={"/a.h5": "wrong"}) as srv:
        with pytest.raises(DownloadError, match="expected sha256 " + digest):
            download(f"{srv.base}/a.h5", tmp_path / "a.h5", digest, **FAST)
    assert not (tmp_path / "a.h5").exists()
    assert not sidecar_path(tmp_path / "a.h5").exists()  # nothing recorded from a bad file


def test_existing_corrupt_file_is_reported_not_deleted(tmp_path, payload):
    data, digest = payload
    dest = tmp_path / "a.h5"
    dest.write_bytes(data[:-10])  # truncated earlier download
    with http_server({"/a.h5": data}) as srv:
        with pytest.raises(DownloadError, match="does not match its checksum"):
            download(f"{srv.base}/a.h5", dest, digest, **FAST)
        assert srv.requests == []
    assert dest.read_bytes() == data[:-10]


def test_http_404_is_not_retried(tmp_path):
    with http_server({}) as srv:
        with pytest.raises(DownloadError, match="HTTP 404") as ei:
            download(f"{srv.base}/missing.h5", tmp_path / "m.h5", None, **FAST)
        assert len(srv.requests) == 1
    assert "missing.h5" in str(ei.value) and isinstance(ei.value, CellgnnInputError)
    assert not (tmp_path / "m.h5").exists()


def test_unreachable_host_clear_message(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/x.h5"
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "x.h5", None, **{**FAST, "retries": 1})
    msg = str(ei.value)
    assert "host unreachable" in msg and url in msg and "after 2 attempts" in msg and "Fix:" in msg


def test_bad_sha256_string_rejected_before_download(tmp_path):
    with pytest.raises(DownloadError, match="not a 64-character hex"):
        download("http://127.0.0.1:1/x", tmp_path / "x", "abc", **FAST)
