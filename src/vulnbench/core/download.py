"""Fetch and unpack public data sets for the download rules.

One checksum check, `verify_file`, covers every file a download rule hands on: a file placed by hand (or left by an
earlier run) is checked where it lies and never modified or deleted; a fresh download is hashed as it streams and
checked with the same comparison before it is moved into place. Downloads are written to a temporary name first,
so the final path never holds a partial file: a truncated body, a dropped connection or a wrong digest leaves
nothing behind (temporary files of a killed earlier download are removed once they are stale).

Each attempt is bounded in time by two rules (`timeout` seconds, `min_rate` bytes/s):

* connecting, and each read, may wait at most `timeout` s for the next byte;
* in each successive `timeout`-second window the attempt must receive at least `min_rate * timeout` bytes (the
  status line and headers count as nothing; `min_rate=0` turns the rule off). A server that trickles a byte every
  few seconds never trips a per-read timeout; this rule abandons it at the end of the first window that falls
  short: one window after the request for a trickle from the start, at most two after a good start. A watchdog
  thread enforces it by shutting the socket down, so it also ends a trickled header block, a stuck TLS handshake
  or a stuck proxy tunnel.

Failed attempts (connection errors, timeouts, stalls, truncated bodies, HTTP 5xx/408/429) are retried `retries`
times in all, `backoff * 2**k` s apart; a pure trickle therefore fails after about
`retries * timeout + backoff * (2**(retries-1) - 1)` s with one line naming the URL and what happened. Offline
machines get a one-line message telling the user where to put the file by hand.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import gzip
import hashlib
import http.client
import logging
import lzma
import socket
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm.auto import tqdm

from vulnbench.core.errors import ConfigError, DataError, DownloadError
from vulnbench.core.io import atomic_dir, atomic_path

log = logging.getLogger(__name__)

#: digests we accept: sha256 by preference, md5 because 10x Genomics publishes nothing else
_HEX_LENGTH = {"sha256": 64, "md5": 32}
_CHUNK = 1 << 20
_USER_AGENT = "vulnbench (+https://github.com/vulnbench)"
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EHOSTDOWN}
#: HTTP answers that say "try again later" rather than "no such file"
_RETRY_STATUS = {408, 429}
#: a temporary file of this download untouched for this long belongs to no live attempt (those write at least
#: every `timeout` s or are abandoned), so it is the remains of a killed one
_STALE_PARTIAL_AGE = 3600.0
#: what a user can do about a file already at the destination that fails its checksum
PLACED_HINT = "it was not downloaded now and is left untouched: move it away to download it again, or fix the " \
              "checksum in the config"


class _TransientError(Exception):
    """A network failure worth retrying (connection error, timeout, stall, truncated body, HTTP 5xx/408/429)."""

    def __init__(self, reason: BaseException | str) -> None:
        super().__init__(str(reason))
        self.reason = reason


# -- the checksum: one concept for placed and downloaded files ------------------------------------------------------
@dataclass(frozen=True)
class Checksum:
    """An expected digest: `algorithm` and lowercase hex `digest`, which for "sha256-prefix" is only a prefix."""

    algorithm: str
    digest: str
    prefix: bool = False

    def matches(self, actual: str) -> bool:
        return actual.startswith(self.digest) if self.prefix else actual == self.digest

    def __str__(self) -> str:
        return f"{'sha256-prefix' if self.prefix else self.algorithm}:{self.digest}"


def parse_checksum(checksum: str | Checksum | None) -> Checksum | None:
    """"sha256:<hex>", "md5:<hex>" or "sha256-prefix:<hex>" as a Checksum; anything else is a ConfigError, raised
    before any byte is fetched or hashed."""
    if checksum is None or isinstance(checksum, Checksum):
        return checksum
    algorithm, sep, digest = str(checksum).strip().partition(":")
    algorithm, digest = algorithm.lower(), digest.lower()
    hex_only = all(c in "0123456789abcdef" for c in digest)
    if algorithm == "sha256-prefix" and sep and hex_only and 8 <= len(digest) <= 64:
        # torchvision's convention: its weight files are named after the first hex digits of their sha256
        return Checksum("sha256", digest, prefix=True)
    length = _HEX_LENGTH.get(algorithm)
    if not sep or length is None or len(digest) != length or not hex_only:
        raise ConfigError(
            f"bad checksum {checksum!r}: expected 'sha256:<64 hex digits>', 'md5:<32 hex digits>' or "
            "'sha256-prefix:<8 or more hex digits>'"
        )
    return Checksum(algorithm, digest)


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


def mismatch(path: str | Path, expected: Checksum, actual: str) -> str | None:
    """None when `actual` satisfies `expected`, else the one-line statement of the mismatch.

    The single comparison behind both `verify_file` (files on disk) and `download` (digests computed while
    streaming), so a placed and a downloaded file pass or fail by the same rule and read the same way.
    """
    if expected.matches(actual):
        return None
    return f"checksum mismatch for {path}: expected {expected}, found {expected.algorithm}:{actual}"


def verify_file(path: str | Path, checksum: str | Checksum | None, *, hint: str = PLACED_HINT) -> Path:
    """Check a file that is already on disk (placed by hand, or left by an earlier run) against `checksum`.

    The file is the user's: whatever the verdict, it is never modified or deleted. A mismatch is a DataError in
    one line naming the file, both digests and `hint` (what to do); no checksum means it is used unverified, with a
    warning, since there is nothing to check it against.
    """
    path = Path(path)
    expected = parse_checksum(checksum)
    if not path.is_file():
        raise DataError(f"cannot verify {path}: not a file")
    if expected is None:
        log.warning("%s used unverified: no checksum configured (set one to pin it)", path)
        return path
    started = time.monotonic()
    actual = file_digest(path, expected.algorithm)
    problem = mismatch(path, expected, actual)
    if problem:
        raise DataError(f"{problem}; {hint}")
    log.info("%s matches %s (checked in %.1f s)", path, expected, time.monotonic() - started)
    return path


# -- one attempt: bounded in time by the watchdog --------------------------------------------------------------------
class _Watchdog:
    """Abandons an attempt that receives fewer than `min_bytes` in one of its successive `window`-second windows.

    Runs beside the reading thread and, on a stall, shuts the attempt's sockets down (a duplicate descriptor of
    each, taken right after the TCP connect, so it works through TLS and proxy tunnels); the blocked read then
    returns end-of-file or an error, and `stalled` says why. The reader adds to `received`.
    """

    def __init__(self, window: float, min_bytes: float) -> None:
        self.window = window
        self.min_bytes = min_bytes
        self.received = 0
        self.stalled: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="download-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """End the watch (idempotent); afterwards `stalled` no longer changes."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def attach(self, sock: socket.socket) -> socket.socket:
        """Watch a freshly connected socket; one that connects after a stall (slow DNS, a redirect) is cut at once."""
        with self._lock:
            if not self._done.is_set():
                self._sockets.append(sock.dup())
            if self.stalled:
                self._cut()
        return sock

    def _cut(self) -> None:
        """Shut every watched socket down (caller holds the lock): the reader's blocked read returns at once."""
        for sock in self._sockets:
            with contextlib.suppress(OSError):  # already closed by the reader: nothing to stop
                sock.shutdown(socket.SHUT_RDWR)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's usual opener (proxies from the environment, redirects) with every new socket attached here."""
        watchdog = self

        class _Watched:
            def do_open(self, http_class: Callable[..., http.client.HTTPConnection], req: urllib.request.Request,
                        **kwargs: Any) -> http.client.HTTPResponse:
                def connection(host: str, **conn_kwargs: Any) -> http.client.HTTPConnection:
                    conn = http_class(host, **conn_kwargs)
                    # http.client opens its socket through this attribute: the one hook before TLS and tunnels
                    create = conn._create_connection  # type: ignore[attr-defined]
                    conn._create_connection = (  # type: ignore[attr-defined]
                        lambda *args, **kw: watchdog.attach(create(*args, **kw)))
                    return conn

                return super().do_open(connection, req, **kwargs)  # type: ignore[misc]

        class _HTTP(_Watched, urllib.request.HTTPHandler):
            pass

        handlers: list[type[urllib.request.BaseHandler]] = [_HTTP]
        if hasattr(urllib.request, "HTTPSHandler"):  # absent from a Python built without ssl

            class _HTTPS(_Watched, urllib.request.HTTPSHandler):
                pass

            handlers.append(_HTTPS)
        return urllib.request.build_opener(*handlers)

    def _watch(self) -> None:
        tick = min(0.5, self.window / 10)
        mark_time, mark_bytes = time.monotonic(), 0
        while not self._done.wait(tick):
            now = time.monotonic()
            if now - mark_time < self.window:
                continue
            got = self.received - mark_bytes
            if got < self.min_bytes:
                rate = _size(self.min_bytes / self.window) + "/s"
                with self._lock:
                    self.stalled = (f"stalled: {got} bytes in {now - mark_time:.1f} s, below the minimum {rate} "
                                    "(the server is trickling or the link is too slow)")
                    self._cut()
                return
            mark_time, mark_bytes = now, self.received


def _fetch_once(url: str, tmp: Path, algorithm: str, label: str, timeout: float, min_rate: float,
                progress_every: float) -> tuple[str, int]:
    """Stream `url` into `tmp` once, hashing on the fly; returns (hex digest, bytes received).

    Network failures come out as _TransientError (or HTTPError for a 4xx) so the caller can tell them apart from
    local disk errors, which propagate unchanged. A body shorter than its Content-Length, or cut by a stall, is an
    error even though http.client itself returns short bodies silently.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with _Watchdog(timeout, min_rate * timeout) as watchdog:
        try:
            response = watchdog.opener().open(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500 or exc.code in _RETRY_STATUS:
                raise _TransientError(f"HTTP {exc.code} {exc.reason}") from exc
            raise
        except (OSError, http.client.HTTPException) as exc:
            watchdog.stop()
            raise _TransientError(watchdog.stalled or exc) from exc

        hasher = _new_hash(algorithm)
        received = 0
        with response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            size = _size(total) if total is not None else "size unknown"
            log.info("downloading %s -> %s (%s)", url, label, size)
            # read1 returns whatever one socket read brings, so a trickle cannot pin us inside a 1 MiB read
            read = getattr(response, "read1", response.read)
            started = last_report = time.monotonic()
            # the bar draws on an interactive terminal only; elsewhere (a rule's log file) a line every progress_every s
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                      leave=False, disable=None) as bar:
                while True:
                    try:
                        chunk = read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        watchdog.stop()
                        raise _TransientError(watchdog.stalled or exc) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    watchdog.received = received
                    bar.update(len(chunk))
                    now = time.monotonic()
                    if bar.disable and now - last_report >= progress_every:
                        last_report = now
                        _report_progress(label, received, total, now - started)
        watchdog.stop()
        if total is not None and received < total:
            # http.client returns a short body silently when the server hangs up early
            raise _TransientError(watchdog.stalled or f"connection closed after {received} of {total} bytes")
        if total is None and watchdog.stalled:
            raise _TransientError(watchdog.stalled)  # the end-of-file was ours: the body is incomplete
    return hasher.hexdigest(), received


def _report_progress(label: str, received: int, total: int | None, elapsed: float) -> None:
    """One log line of progress: what a bar would show, readable in a rule's log file."""
    rate = received / elapsed if elapsed > 0 else 0.0
    if total:
        left = tqdm.format_interval((total - received) / rate) if rate > 0 else "?"
        log.info("%s: %s of %s (%.0f%%) at %s/s, about %s left", label, _size(received), _size(total),
                 100 * received / total, _size(rate), left)
    else:
        log.info("%s: %s so far at %s/s", label, _size(received), _size(rate))


def _size(n: float) -> str:
    """Bytes for people: 512 B, 1.5 KiB, 9.1 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while abs(n) >= 1024 and step < len(units) - 1:
        n /= 1024
        step += 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


# -- the download: attempts, retries, one-line errors ---------------------------------------------------------------
def _is_unreachable(reason: BaseException | str) -> bool:
    """True when the failure means no route to the host at all (offline, DNS failure, refused)."""
    if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
        reason = reason.reason
    if isinstance(reason, socket.gaierror | ConnectionRefusedError):
        return True
    if isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS:
        return True
    return "network is unreachable" in str(reason).lower()


def _describe(reason: BaseException | str, timeout: float) -> str:
    """Short human text for a network failure, unwrapping urllib's URLError."""
    if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
        reason = reason.reason
    if isinstance(reason, TimeoutError):
        return f"timed out (nothing received for {timeout:g} s)"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed mid-body ({reason!r})"
    return " ".join(str(reason).split()) or type(reason).__name__


def _remove_stale_partials(dest: Path, timeout: float) -> None:
    """Delete temporary files that an earlier, killed download of `dest` left beside it.

    They are ours (atomic_path's `.<name>.<random>.tmp`) and partial by construction; one that has not been
    written to for a long time cannot belong to a live attempt, which writes at least every `timeout` s.
    """
    cutoff = time.time() - max(_STALE_PARTIAL_AGE, 2 * timeout)
    for partial in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        try:
            if partial.is_file() and partial.stat().st_mtime < cutoff:
                partial.unlink()
                log.info("removed %s, a partial download left by an interrupted run", partial)
        except OSError:
            pass


def download(url: str, dest: str | Path, *, checksum: str | Checksum | None, retries: int = 3,
             timeout: float = 60.0, backoff: float = 1.0, min_rate: float = 1024.0,
             progress_every: float = 30.0) -> Path:
    """Download `url` to `dest`, verified against `checksum` ("sha256:<hex>", "md5:<hex>", "sha256-prefix:<hex>"
    or None).

    A file already at `dest` is checked with `verify_file` and kept (re-running a rule costs nothing); when it
    fails its checksum it is left alone and the download refused, since it may be the user's own. Attempts are
    bounded by `timeout` (per read, and the window of the `min_rate` stall rule; see the module docstring) and
    retried `retries` times in all, sleeping backoff*2**k in between; HTTP 4xx (but 408/429) and a wrong digest
    fail at once. Nothing is left at `dest` unless the full, verified file is.
    """
    dest = Path(dest)
    expected = parse_checksum(checksum)
    if retries < 1:
        raise ConfigError(f"retries must be at least 1, got {retries}")
    if not timeout > 0 or min_rate < 0:
        raise ConfigError(f"timeout must be positive and min_rate non-negative, got {timeout} and {min_rate}")
    if dest.exists():
        verify_file(dest, expected, hint=f"it was not downloaded now and is left untouched: move it away to "
                                         f"download {url} again, or fix the checksum in the config")
        return dest
    _remove_stale_partials(dest, timeout)
    algorithm = expected.algorithm if expected else "sha256"

    last: BaseException | str = "no attempt made"
    for attempt in range(retries):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning("retrying %s in %.1f s (attempt %d of %d): %s", url, delay, attempt + 1, retries,
                        _describe(last, timeout))
            time.sleep(delay)
        started = time.monotonic()
        try:
            with atomic_path(dest) as tmp:
                actual, size = _fetch_once(url, tmp, algorithm, dest.name, timeout, min_rate, progress_every)
                problem = mismatch(dest, expected, actual) if expected else None
                if problem:
                    raise DownloadError(f"{problem} (downloaded from {url}; nothing was kept)")
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
        except _TransientError as exc:
            last = exc.reason
            log.warning("attempt %d of %d for %s failed after %.1f s: %s", attempt + 1, retries, url,
                        time.monotonic() - started, _describe(last, timeout))
            continue
        log.info("downloaded %s (%d bytes in %.1f s, %s:%s)", dest, size, time.monotonic() - started,
                 algorithm, actual)
        if expected is None:
            log.warning("%s is unverified: no checksum given (pin it with checksum: '%s:%s')", dest, algorithm,
                        actual)
        return dest

    if _is_unreachable(last):
        raise DownloadError(
            f"cannot download {url}: offline or host unreachable ({_describe(last, timeout)}); place the file at "
            f"{dest} yourself or run where the network is reachable"
        )
    raise DownloadError(f"cannot download {url} after {retries} attempt(s): {_describe(last, timeout)}")


def extract_tar(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a .tar.gz into `dest_dir` safely and atomically; returns `dest_dir`.

    The "data" filter refuses absolute paths, `..`, links out of the tree and device files, so a
    hostile archive cannot write outside `dest_dir`. Extraction goes to a temporary directory beside
    it that replaces `dest_dir` only when complete, so a truncated archive leaves nothing behind.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    with atomic_dir(dest_dir) as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except FileNotFoundError as exc:
            raise DataError(f"cannot extract {archive}: file not found") from exc
        except tarfile.FilterError as exc:
            raise DataError(f"refusing to extract {archive}: unsafe member ({exc})") from exc
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
            raise DataError(f"cannot extract {archive}: corrupt or truncated archive ({exc})") from exc
    log.info("extracted %s -> %s", archive, dest_dir)
    return dest_dir
