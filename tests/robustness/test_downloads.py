"""Downloads under faults (issue 16, item 6), each against a real HTTP server on 127.0.0.1 that misbehaves on
purpose: it trickles bytes (in the body or in the headers), says nothing, hangs up early or resets the
connection. Every case must end within a bounded time with one line naming the URL and what happened, leave
no partial file behind, and never touch a file the user placed at the destination.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vulnbench.core.download import download, verify_file
from vulnbench.core.errors import DataError, DownloadError
from vulnbench.img.data import ISIC2019_GROUNDTRUTH, ISIC2019_INPUT, ISIC2019_METADATA, get_image_dataset

PAYLOAD = bytes(range(256)) * 256  # 64 KiB
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
#: no handler of the fault server runs longer than this, whatever the client does
HANDLER_CAP = 20.0


@dataclass
class FaultServer:
    base_url: str
    requests: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            self.requests[path] += 1
            return self.requests[path]


class _FaultHandler(BaseHTTPRequestHandler):
    """/ok, /trickle (body, 1 byte / 0.05 s), /trickle-headers, /silent, /truncated (half the Content-Length),
    /truncated-once (then /ok), /chunked-cut, /no-length-cut, /reset, /slow (64 KiB over ~1 s, steady)."""

    state: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _drip(self, data: bytes, pause: float) -> None:
        deadline = time.monotonic() + HANDLER_CAP
        for i in range(len(data)):
            if self.state.stop.is_set() or time.monotonic() > deadline:
                return
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            time.sleep(pause)

    def _headers(self, length: int | None) -> None:
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_GET(self) -> None:
        path = self.path
        seen = self.state.count(path)
        if path == "/ok" or (path == "/truncated-once" and seen > 1):
            self._headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD)
        elif path == "/trickle":
            self._headers(len(PAYLOAD))
            self._drip(PAYLOAD, 0.05)
        elif path == "/trickle-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(b"X-Slow: " + b"x" * 10_000, 0.05)
        elif path == "/silent":
            self.state.stop.wait(HANDLER_CAP)
        elif path in ("/truncated", "/truncated-once"):
            self._headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        elif path == "/chunked-cut":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"400\r\n" + PAYLOAD[:1024] + b"\r\n")  # and no terminating 0-chunk
            self.close_connection = True
        elif path == "/no-length-cut":
            self.protocol_version = "HTTP/1.0"  # a close-delimited body: its length is unknowable
            self._headers(None)
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        elif path == "/reset":
            self._headers(len(PAYLOAD))
            self.wfile.write(PAYLOAD[:4096])
            self.wfile.flush()
            time.sleep(0.1)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # RST instead of FIN
        elif path == "/slow":
            self._headers(len(PAYLOAD))
            for start in range(0, len(PAYLOAD), 4096):
                if self.state.stop.is_set():
                    return
                self.wfile.write(PAYLOAD[start:start + 4096])
                self.wfile.flush()
                time.sleep(1.0 / 16)
        else:
            self.send_error(404)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up on a trickle is the point of these tests


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = FaultServer(base_url="")
    handler = type("Handler", (_FaultHandler,), {"state": state})
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _timed(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:  # returned to the test, which checks its type
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# -- a server that never finishes: bounded by the stall rule ------------------------------------------------------
@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_trickling_server_fails_within_the_bound_and_leaves_nothing(faults: FaultServer, tmp_path: Path,
                                                                      path: str) -> None:
    """20 bytes/s would never trip a 0.5 s read timeout; the stall rule (1 KiB/s per 0.5 s window) ends each
    attempt after one window: 2 attempts ≈ 1 s, and certainly well under the server's 20 s."""
    dest = tmp_path / "out" / "data.bin"
    url = f"{faults.base_url}{path}"
    error, elapsed = _timed(lambda: download(url, dest, checksum=f"sha256:{SHA256}", retries=2, timeout=0.5,
                                             backoff=0.0))
    assert isinstance(error, DownloadError)
    message = str(error)
    assert "\n" not in message and url in message
    assert "after 2 attempt(s)" in message and "stalled" in message and "trickling" in message
    assert 0.9 <= elapsed < 2 * 0.5 + 1.5, elapsed  # one window per attempt, plus slack for a loaded machine
    assert faults.requests[path] == 2
    assert not dest.exists() and _leftovers(dest.parent) == []


def test_a_silent_server_times_out_per_read(faults: FaultServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    url = f"{faults.base_url}/silent"
    error, elapsed = _timed(lambda: download(url, dest, checksum=None, retries=2, timeout=0.5, backoff=0.0))
    assert isinstance(error, DownloadError) and url in str(error)
    assert "timed out" in str(error) or "stalled" in str(error)
    assert elapsed < 2 * 0.5 + 1.5, elapsed
    assert _leftovers(tmp_path) == []


def test_a_slow_but_steady_download_is_not_a_stall_and_logs_progress(faults: FaultServer, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """64 KiB at ~64 KiB/s for ~1 s, with 0.3 s windows and a 1 KiB/s floor: slow, not stalled."""
    dest = tmp_path / "data.bin"
    with caplog.at_level(logging.INFO, logger="vulnbench.core.download"):
        download(f"{faults.base_url}/slow", dest, checksum=f"md5:{MD5}", retries=1, timeout=0.3,
                 progress_every=0.2)
    assert dest.read_bytes() == PAYLOAD
    progress = [r.getMessage() for r in caplog.records if "%) at " in r.getMessage()]
    assert len(progress) >= 2, caplog.text  # the rule's log file sees the download move
    assert all(m.startswith("data.bin: ") and " of 64.0 KiB (" in m for m in progress)


def test_the_progress_bar_draws_on_a_terminal(faults: FaultServer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    download(f"{faults.base_url}/slow", tmp_path / "data.bin", checksum=None, retries=1, timeout=2)
    drawn = terminal.getvalue()
    assert "data.bin" in drawn and "64.0k" in drawn and "B/s" in drawn


# -- a server that hangs up early: the partial file is ours and goes -------------------------------------------------
@pytest.mark.parametrize("checksum", [None, f"sha256:{SHA256}"])
def test_a_truncated_body_is_removed_and_retried_with_or_without_a_checksum(faults: FaultServer, tmp_path: Path,
                                                                            checksum: str | None) -> None:
    dest = tmp_path / "data.bin"
    url = f"{faults.base_url}/truncated"
    with pytest.raises(DownloadError) as info:
        download(url, dest, checksum=checksum, retries=2, timeout=2, backoff=0.0)
    message = str(info.value)
    assert "\n" not in message and url in message
    assert f"connection closed after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes" in message
    assert faults.requests["/truncated"] == 2
    assert _leftovers(tmp_path) == []


def test_a_truncated_first_attempt_is_retried_into_the_full_file(faults: FaultServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    download(f"{faults.base_url}/truncated-once", dest, checksum=None, retries=2, timeout=2, backoff=0.0)
    assert dest.read_bytes() == PAYLOAD
    assert faults.requests["/truncated-once"] == 2
    assert _leftovers(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("path", ["/chunked-cut", "/reset"])
def test_a_cut_connection_leaves_no_file(faults: FaultServer, tmp_path: Path, path: str) -> None:
    dest = tmp_path / "data.bin"
    url = f"{faults.base_url}{path}"
    with pytest.raises(DownloadError) as info:
        download(url, dest, checksum=None, retries=2, timeout=2, backoff=0.0)
    assert "\n" not in str(info.value) and url in str(info.value) and "after 2 attempt(s)" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_a_close_delimited_body_cut_short_is_caught_by_its_checksum(faults: FaultServer, tmp_path: Path) -> None:
    """Without Content-Length a short body looks complete to HTTP; only the checksum can tell (documented)."""
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=f"checksum mismatch for {dest}"):
        download(f"{faults.base_url}/no-length-cut", dest, checksum=f"sha256:{SHA256}", retries=2, timeout=2)
    assert _leftovers(tmp_path) == []


def test_partials_of_a_killed_download_are_removed_once_stale(faults: FaultServer, tmp_path: Path) -> None:
    """A SIGKILL between the write and the rename leaves `.<name>.<random>.tmp`; the next download removes it
    once no live attempt can own it, and leaves a fresh one (maybe another process's) and other files alone."""
    stale = tmp_path / ".data.bin.k1ll3d00.tmp"
    fresh = tmp_path / ".data.bin.l1v3l1v3.tmp"
    unrelated = tmp_path / ".other.bin.k1ll3d00.tmp"
    for path in (stale, fresh, unrelated):
        path.write_bytes(PAYLOAD[:100])
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(unrelated, (two_hours_ago, two_hours_ago))
    download(f"{faults.base_url}/ok", tmp_path / "data.bin", checksum=f"sha256:{SHA256}", retries=1)
    assert _leftovers(tmp_path) == sorted([fresh.name, unrelated.name, "data.bin"])


# -- a file already at the destination: one check, and never deleted --------------------------------------------
def test_a_placed_file_failing_its_checksum_is_refused_and_kept(faults: FaultServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    mine = b"the user's own bytes\n"
    dest.write_bytes(mine)
    before = dest.stat()
    url = f"{faults.base_url}/ok"
    with pytest.raises(DataError) as info:
        download(url, dest, checksum=f"sha256:{SHA256}", retries=1)
    message = str(info.value)
    assert "\n" not in message
    assert f"checksum mismatch for {dest}" in message
    assert f"expected sha256:{SHA256}" in message
    assert f"found sha256:{hashlib.sha256(mine).hexdigest()}" in message
    assert "move it away" in message and "fix the checksum in the config" in message
    assert dest.read_bytes() == mine and dest.stat().st_mtime_ns == before.st_mtime_ns
    assert faults.requests["/ok"] == 0  # refused before any network traffic


def test_placed_and_downloaded_files_pass_the_same_check(faults: FaultServer, tmp_path: Path) -> None:
    """Every accepted checksum form accepts the same bytes placed by hand and downloaded, and rejects the same."""
    good = [f"sha256:{SHA256}", f"md5:{MD5.upper()}", f"sha256-prefix:{SHA256[:8]}"]
    bad = f"sha256-prefix:{'0' if SHA256[0] != '0' else '1'}{SHA256[1:8]}"
    placed = tmp_path / "placed.bin"
    placed.write_bytes(PAYLOAD)
    for i, checksum in enumerate(good):
        assert verify_file(placed, checksum) == placed
        assert download(f"{faults.base_url}/ok", placed, checksum=checksum) == placed
        download(f"{faults.base_url}/ok", tmp_path / f"fetched{i}.bin", checksum=checksum)
    assert faults.requests["/ok"] == len(good)  # the placed file was never fetched again
    with pytest.raises(DataError, match=f"checksum mismatch for {placed}: expected {bad}, found sha256:{SHA256}"):
        verify_file(placed, bad)
    fetched = tmp_path / "fetched-bad.bin"
    with pytest.raises(DownloadError, match=f"checksum mismatch for {fetched}: expected {bad}, found sha256:{SHA256}"):
        download(f"{faults.base_url}/ok", fetched, checksum=bad)
    assert placed.read_bytes() == PAYLOAD and not fetched.exists()


def test_isic_files_placed_in_the_download_folder_are_checked_not_replaced(faults: FaultServer,
                                                                           tmp_path: Path) -> None:
    """The image download rule runs with the user's files already in its folder: right ones are used without a
    request, a wrong one is refused in one line and kept."""
    dest = tmp_path / "resources" / "img" / "isic2019"
    dest.mkdir(parents=True)
    contents = {ISIC2019_GROUNDTRUTH: b"image,MEL,NV\n", ISIC2019_METADATA: b"image,lesion_id\n",
                ISIC2019_INPUT: b"not really a zip"}
    for name, data in contents.items():
        (dest / name).write_bytes(data)
    digests = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    urls = {"input_url": f"{faults.base_url}/ok", "groundtruth_url": f"{faults.base_url}/ok",
            "metadata_url": f"{faults.base_url}/ok"}
    get_image_dataset("isic2019", **urls, input_checksum=digests[ISIC2019_INPUT],
                      groundtruth_checksum=digests[ISIC2019_GROUNDTRUTH],
                      metadata_checksum=digests[ISIC2019_METADATA]).download(dest)
    assert faults.requests["/ok"] == 0
    wrong = get_image_dataset("isic2019", **urls, input_checksum=f"sha256:{SHA256}")
    with pytest.raises(DataError, match=f"checksum mismatch for {dest / ISIC2019_INPUT}: expected sha256:{SHA256}"):
        wrong.download(dest)
    assert {name: (dest / name).read_bytes() for name in contents} == contents
    assert faults.requests["/ok"] == 0


def test_isic_root_files_go_through_the_same_check(tmp_path: Path) -> None:
    root = tmp_path / "isic"
    root.mkdir()
    for name in (ISIC2019_GROUNDTRUTH, ISIC2019_METADATA, ISIC2019_INPUT):
        (root / name).write_bytes(b"x")
    with pytest.raises(DataError) as info:
        get_image_dataset("isic2019", root=str(root), metadata_checksum="md5:" + "1" * 32).load()
    message = str(info.value)
    assert f"checksum mismatch for {root / ISIC2019_METADATA}: expected md5:{'1' * 32}, found md5:" in message
    assert "never changed by vulnbench" in message and "\n" not in message
    assert (root / ISIC2019_METADATA).read_bytes() == b"x"
