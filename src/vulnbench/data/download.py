"""Fetch and unpack public data sets for the download rules.

Downloads are verified against a published digest and written atomically, so a rule either produces
the exact file the paper used or nothing at all; a half-written or tampered file never reaches the
analysis. Offline machines get a one-line message telling the user where to put the file by hand.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from vulnbench.errors import ConfigError, DataError, DownloadError
from vulnbench.io import atomic_path

log = logging.getLogger(__name__)

#: digests we accept: sha256 by preference, md5 because 10x Genomics publishes nothing else
_HEX_LENGTH = {"sha256": 64, "md5": 32}
_CHUNK = 1 << 20
_USER_AGENT = "vulnbench (+https://github.com/vulnbench)"
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EHOSTDOWN}


class _TransientError(Exception):
    """A network failure worth retrying (connection error, timeout, truncated body, HTTP 5xx)."""

    def __init__(self, reason: BaseException | str) -> None:
        super().__init__(str(reason))
        self.reason = reason


def _new_hash(algorithm: str) -> hashlib._Hash:
    """A hash object; md5 is flagged as not-for-security so FIPS-mode Pythons still allow it."""
    try:
        return hashlib.new(algorithm, usedforsecurity=False)
    except ValueError as exc:
        raise ConfigError(
            f"unknown digest algorithm {algorithm!r}; use one of {sorted(_HEX_LENGTH)}"
        ) from exc


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks so multi-gigabyte matrices do not fill memory."""
    hasher = _new_hash(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    """Split "sha256:<hex>" / "md5:<hex>" into (algorithm, lowercase hex); reject anything else early."""
    if checksum is None:
        return None
    algorithm, sep, digest = str(checksum).strip().partition(":")
    algorithm, digest = algorithm.lower(), digest.lower()
    hex_only = all(c in "0123456789abcdef" for c in digest)
    if algorithm == "sha256-prefix" and sep and hex_only and 8 <= len(digest) <= 64:
        # torchvision's convention: its weight files are named after the first hex digits of their sha256
        return "sha256", digest
    length = _HEX_LENGTH.get(algorithm)
    if not sep or length is None or len(digest) != length or not hex_only:
        raise ConfigError(
            f"bad checksum {checksum!r}: expected 'sha256:<64 hex digits>', 'md5:<32 hex digits>' or "
            "'sha256-prefix:<8 or more hex digits>'"
        )
    return algorithm, digest


def _is_unreachable(reason: BaseException | str) -> bool:
    """True when the failure means no route to the host at all (offline, DNS failure, refused)."""
    if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
        reason = reason.reason
    if isinstance(reason, socket.gaierror | ConnectionRefusedError):
        return True
    if isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS:
        return True
    return "network is unreachable" in str(reason).lower()


def _describe(reason: BaseException | str) -> str:
    """Short human text for a network failure, unwrapping urllib's URLError."""
    if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
        reason = reason.reason
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


def _fetch_once(url: str, tmp: Path, timeout: float, algorithm: str, label: str) -> tuple[str, int]:
    """Stream `url` into `tmp` once, hashing on the fly; returns (hex digest, bytes received).

    Network failures come out as _TransientError (or HTTPError for 4xx) so the caller can tell them
    apart from local disk errors, which propagate unchanged.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise _TransientError(exc) from exc

    hasher = _new_hash(algorithm)
    received = 0
    with response, open(tmp, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        size = f"{total} bytes" if total is not None else "size unknown"
        log.info("downloading %s -> %s (%s)", url, label, size)
        # the bar only makes sense with a known size on an interactive terminal; logs get the summary
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                  leave=False, disable=None if total else True) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _TransientError(exc) from exc
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        # http.client returns a short body silently when the server hangs up early
        raise _TransientError(f"connection closed after {received} of {total} bytes")
    return hasher.hexdigest(), received


def download(url: str, dest: str | Path, *, checksum: str | None, retries: int = 3, timeout: float = 60.0,
             backoff: float = 1.0) -> Path:
    """Download `url` to `dest`, verified against `checksum` ("sha256:<hex>", "md5:<hex>" or None).

    An existing `dest` with the right digest is kept, so re-running a rule costs nothing. Connection
    errors, timeouts and HTTP 5xx are retried (`retries` attempts in all, sleeping backoff*2**attempt
    in between); HTTP 4xx fails at once. Nothing is left at `dest` unless the full, verified file is.
    """
    dest = Path(dest)
    expected = _parse_checksum(checksum)
    if retries < 1:
        raise ConfigError(f"retries must be at least 1, got {retries}")
    algorithm = expected[0] if expected else "sha256"

    if dest.exists():
        if expected is None:
            log.warning("%s exists and no checksum is given: keeping it unverified", dest)
            return dest
        actual = file_digest(dest, algorithm)
        if actual.startswith(expected[1]):
            log.info("%s already present and matches %s:%s", dest, algorithm, actual)
            return dest
        log.warning("%s exists but its %s is %s, not %s: downloading it again", dest, algorithm, actual,
                    expected[1])
        dest.unlink()  # known bad: never leave it where a rule would take it for the real file

    last: BaseException | str = "no attempt made"
    for attempt in range(retries):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("retrying %s in %.1f s (attempt %d of %d): %s", url, delay, attempt + 1, retries,
                        _describe(last))
            time.sleep(delay)
        started = time.monotonic()
        try:
            with atomic_path(dest) as tmp:
                actual, size = _fetch_once(url, tmp, timeout, algorithm, dest.name)
                if expected is not None and not actual.startswith(expected[1]):
                    raise DownloadError(
                        f"checksum mismatch for {dest} downloaded from {url}: expected "
                        f"{algorithm}:{expected[1]}, got {algorithm}:{actual}"
                    )
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
        except _TransientError as exc:
            last = exc.reason
            continue
        log.info("downloaded %s (%d bytes in %.1f s, %s:%s)", dest, size, time.monotonic() - started,
                 algorithm, actual)
        if expected is None:
            log.warning("%s is unverified: no checksum given (its %s is %s)", dest, algorithm, actual)
        return dest

    if _is_unreachable(last):
        raise DownloadError(
            f"cannot download {url}: offline or host unreachable ({_describe(last)}); place the file at "
            f"{dest} yourself or run where the network is reachable"
        )
    raise DownloadError(f"cannot download {url} after {retries} attempt(s): {_describe(last)}")


def extract_tar(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a .tar.gz into `dest_dir` safely and atomically; returns `dest_dir`.

    The "data" filter refuses absolute paths, `..`, links out of the tree and device files, so a
    hostile archive cannot write outside `dest_dir`. Extraction goes to a temporary directory beside
    it that replaces `dest_dir` only when complete, so a truncated archive leaves nothing behind.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
    old: Path | None = None
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except FileNotFoundError as exc:
            raise DataError(f"cannot extract {archive}: file not found") from exc
        except tarfile.FilterError as exc:
            raise DataError(f"refusing to extract {archive}: unsafe member ({exc})") from exc
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
            raise DataError(f"cannot extract {archive}: corrupt or truncated archive ({exc})") from exc
        if dest_dir.exists():
            # os.replace cannot overwrite a non-empty directory: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".old", dir=dest_dir.parent))
            os.replace(dest_dir, old / dest_dir.name)
        try:
            os.replace(tmp, dest_dir)
        except OSError:
            if old is not None:
                os.replace(old / dest_dir.name, dest_dir)
            raise
        log.info("extracted %s -> %s", archive, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return dest_dir
