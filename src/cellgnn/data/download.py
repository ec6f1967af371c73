"""Downloads users can trust: streamed, resumable, retried, checksummed, atomic.

``download(url, dest, sha256)`` streams ``url`` into ``<dest>.part`` with a tqdm
progress bar (stderr), resumes a partial ``.part`` with an HTTP ``Range`` request
after a dropped connection (within one call, and across calls: the ``.part`` is
kept when a call fails), retries transient failures with exponential backoff,
verifies the SHA-256 and only then renames ``.part`` onto ``dest``.

Checksums: when ``sha256`` is given it is checked. When it is not, the first
successful download records the sum in a sidecar ``<dest>.sha256`` (``sha256sum``
format) and every later call verifies ``dest`` (or a re-download) against it.

Nothing already downloaded is ever deleted by a failure: ``dest`` is only ever
replaced by a verified file, and a file whose sum does not match is moved aside to
``<dest>.mismatch`` for inspection instead of being used.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import CellgnnInputError

LOG = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read per iteration
USER_AGENT = "cellgnn-downloader/0.1 (+https://github.com/; python-urllib)"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(CellgnnInputError):
    """A download failed (host unreachable, HTTP error, checksum mismatch, truncation)."""


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte pieces (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(dest: str | os.PathLike) -> Path:
    """``<dest>.sha256``: where the sum of a file downloaded without a known sum is recorded."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def read_sidecar(dest: str | os.PathLike) -> str | None:
    """The sum recorded for ``dest`` (``None`` when no sidecar exists)."""
    side = sidecar_path(dest)
    if not side.exists():
        return None
    text = side.read_text().split()
    if not text or not _HEX64.match(text[0].lower()):
        raise DownloadError("the recorded checksum sidecar is not a SHA-256 hex digest", file=str(side),
                            fix=f"delete {side} (it is re-recorded on the next download) or fix its content")
    return text[0].lower()


def write_sidecar(dest: str | os.PathLike, digest: str) -> None:
    """Record ``digest`` for ``dest`` atomically, in ``sha256sum`` format."""
    from ..io import write_text

    write_text(f"{digest}  {Path(dest).name}\n", sidecar_path(dest))


def _normalize_sum(sha256: str | None, url: str) -> str | None:
    if sha256 is None:
        return None
    s = str(sha256).strip().lower()
    if s == "":
        return None
    if not _HEX64.match(s):
        raise DownloadError(f"'{sha256}' is not a 64-character hex SHA-256 (for {url})", field="sha256",
                            fix="give the file's `sha256sum` output, or leave it empty to record it on first download")
    return s


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *, retries: int = 5,
             backoff: float = 1.0, timeout: float = 60.0, force: bool = False,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` (a ``Path``).

    sha256: expected hex digest, or ``None``/"" to use (or, on first download, record)
        the sidecar ``<dest>.sha256``.
    retries: attempts after the first for transient failures (connection refused/reset,
        timeouts, truncated bodies, HTTP 408/429/5xx); waits ``backoff * 2**attempt`` s.
    timeout: socket timeout per read, seconds.
    force: download again even when ``dest`` exists and verifies; ``dest`` is replaced only
        by a verified new file.

    Raises ``DownloadError`` (a ``CellgnnInputError``) naming the URL, the file, what was
    expected and what was got, and the fix. ``dest`` is never deleted or truncated.
    """
    dest = Path(dest)
    expected = _normalize_sum(sha256, url)
    recorded = read_sidecar(dest)
    if expected and recorded and expected != recorded:
        LOG.warning("%s: configured sha256 %s differs from the recorded sidecar %s; the configured one is used",
                    dest, expected, recorded)
    want = expected or recorded

    if dest.exists() and not force:
        if want is None:
            got = sha256_file(dest)
            write_sidecar(dest, got)
            LOG.info("%s exists; recorded its sha256 %s in %s", dest, got, sidecar_path(dest))
            return dest
        got = sha256_file(dest)
        if got == want:
            LOG.info("%s exists and its sha256 matches; not downloading again", dest)
            return dest
        raise DownloadError(
            f"the existing file does not match its checksum (expected sha256 {want}, got {got}); "
            f"source {url}", file=str(dest), field="sha256",
            fix=f"if the file is corrupt, move it away and rerun to download it again; if the source changed on "
                f"purpose, update sha256 in the sample sheet/config (or delete {sidecar_path(dest).name})")

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _fetch_with_retries(url, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress)

    got = sha256_file(part)
    if want is not None and got != want:
        bad = dest.with_name(dest.name + ".mismatch")
        os.replace(part, bad)
        kept = f"; the earlier file {dest} is untouched" if dest.exists() else ""
        raise DownloadError(
            f"checksum mismatch for {url}: expected sha256 {want}, got {got} "
            f"({bad.stat().st_size} bytes, moved aside to {bad}){kept}",
            file=str(dest), field="sha256",
            fix="rerun to download again (a proxy or an interrupted transfer can corrupt a file); if the "
                "source really changed, update sha256 in the sample sheet/config, or delete the recorded "
                f"{sidecar_path(dest).name}")
    os.replace(part, dest)
    if want is None:
        write_sidecar(dest, got)
        LOG.info("downloaded %s -> %s; recorded sha256 %s in %s (later downloads are verified against it)",
                 url, dest, got, sidecar_path(dest))
    else:
        LOG.info("downloaded %s -> %s; sha256 verified", url, dest)
    return dest


class _Transient(Exception):
    """A failure worth retrying (the ``.part`` file is kept and resumed)."""


def _fetch_with_retries(url: str, part: Path, *, retries: int, backoff: float, timeout: float,
                        progress: bool) -> None:
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = backoff * 2 ** (attempt - 1)
            LOG.warning("download of %s failed (%s); retry %d/%d in %.1f s, resuming from %d bytes",
                        url, last, attempt, retries, wait, part.stat().st_size if part.exists() else 0)
            time.sleep(wait)
        try:
            _fetch_once(url, part, timeout=timeout, progress=progress)
            return
        except _Transient as exc:
            last = exc if exc.args else (exc.__cause__ or exc)
    have = part.stat().st_size if part.exists() else 0
    reason = _describe(last)
    raise DownloadError(
        f"could not download {url} after {retries + 1} attempts: {reason}; "
        f"{have} bytes kept in {part} and resumed on the next run", file=str(part.with_suffix("")),
        fix="check the network connection and that the host is reachable (a proxy may need "
            "HTTPS_PROXY), then rerun; or download the file by hand and give its path in the sample sheet")


def _describe(exc: Exception | None) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        r = exc.reason
        if isinstance(r, ConnectionRefusedError):
            return "host unreachable (connection refused)"
        if isinstance(r, socket.gaierror):
            return f"host name could not be resolved ({r})"
        if isinstance(r, (socket.timeout, TimeoutError)):
            return "connection timed out"
        return f"host unreachable ({r})"
    if isinstance(exc, _Transient):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """One HTTP attempt: resume ``part`` from its current size; raise ``_Transient`` to retry."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # the .part already holds the whole file (or more): let the checksum decide
            LOG.info("server says %s is already complete at %d bytes", url, offset)
            return
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Transient() from exc
        raise DownloadError(
            f"HTTP {exc.code} {exc.reason} for {url}", file=str(part.with_suffix("")), field="url",
            fix="check the URL in the sample sheet/config (open it in a browser); "
                "GEO supplementary files live under https://ftp.ncbi.nlm.nih.gov/geo/samples/") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient() from exc

    with resp:
        status = resp.status
        if offset and status == 206:
            m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.write_bytes(b"")  # cannot trust the partial bytes against this answer: start over
                raise _Transient(f"unexpected Content-Range {resp.headers.get('Content-Range')!r} "
                                 f"for a resume at byte {offset}")
            mode = "ab"
        else:
            if offset:
                LOG.info("server ignored the Range request (HTTP %d); downloading %s from the start", status, url)
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        got = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), file=sys.stderr, disable=not progress, leave=False)
        try:
            with open(part, mode) as fh:
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient() from exc
                    if not block:
                        break
                    fh.write(block)
                    got += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
        if remaining is not None and got < remaining:
            raise _Transient(f"connection closed after {offset + got} of {total} bytes")
