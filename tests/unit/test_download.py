"""download() and extract_tar() against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import tarfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vulnbench.core.download import download, extract_tar, file_digest
from vulnbench.core.errors import ConfigError, DataError, DownloadError

PAYLOAD = b"cell\tgene\tcount\n" * 5000 + b"end\n"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@dataclass
class Server:
    """What a test needs to know about the running server: where it is and what it was asked."""

    base_url: str
    root: Path
    requests: Counter[str] = field(default_factory=Counter)
    fail_first: dict[str, int] = field(default_factory=dict)
    fail_status: int = 500
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(SimpleHTTPRequestHandler):
    """Serves `directory`; /flaky/<name> answers fail_status (500) for the first fail_first[path] requests."""

    state: Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.state
        with state.lock:
            state.requests[self.path] += 1
            count = state.requests[self.path]
        if self.path.startswith("/flaky/"):
            if count <= state.fail_first.get(self.path, 0):
                self.send_error(state.fail_status, "deliberate failure")
                return
            self.path = self.path.removeprefix("/flaky")
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    # a proxy from the environment must not intercept requests to the local server
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    (root / "data.tsv").write_bytes(PAYLOAD)
    state = Server(base_url="", root=root)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_download_with_sha256(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.tsv"
    assert download(f"{server.base_url}/data.tsv", dest, checksum=f"sha256:{SHA256}") == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == []


def test_download_with_md5(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.tsv"
    download(f"{server.base_url}/data.tsv", dest, checksum=f"md5:{MD5.upper()}")
    assert file_digest(dest, "md5") == MD5
    assert file_digest(dest, "sha256") == SHA256


def test_download_without_checksum_warns(server: Server, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "data.tsv"
    with caplog.at_level("WARNING", logger="vulnbench.core.download"):
        download(f"{server.base_url}/data.tsv", dest, checksum=None)
    assert dest.read_bytes() == PAYLOAD
    assert "unverified" in caplog.text


def test_download_with_a_sha256_prefix_as_torchvision_names_its_weights(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "weights-abcd.pth"
    download(f"{server.base_url}/data.tsv", dest, checksum=f"sha256-prefix:{SHA256[:8]}")
    assert dest.read_bytes() == PAYLOAD
    wrong = f"sha256-prefix:{'0' if SHA256[0] != '0' else '1'}{SHA256[1:8]}"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server.base_url}/data.tsv", tmp_path / "other.pth", checksum=wrong, backoff=0)
    assert not (tmp_path / "other.pth").exists()


@pytest.mark.parametrize("checksum", ["sha1:abc", SHA256, "sha256:xyz", f"md5:{SHA256}", "sha256:",
                                      "sha256-prefix:abc", f"sha256-prefix:{SHA256}0"])
def test_bad_checksum_format_is_config_error(tmp_path: Path, checksum: str) -> None:
    with pytest.raises(ConfigError, match="bad checksum"):
        download("http://127.0.0.1:9/x", tmp_path / "x", checksum=checksum)


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest_dir = tmp_path / "out"
    dest_dir.mkdir()
    dest = dest_dir / "data.tsv"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(f"{server.base_url}/data.tsv", dest, checksum=f"sha256:{wrong}", backoff=0)
    message = str(info.value)
    assert "\n" not in message
    assert str(dest) in message
    assert f"sha256:{wrong}" in message and f"sha256:{SHA256}" in message
    assert not dest.exists()
    assert list(dest_dir.iterdir()) == []
    assert server.requests["/data.tsv"] == 1  # a wrong digest is not a transient failure


def test_retries_after_server_errors(server: Server, tmp_path: Path) -> None:
    server.fail_first["/flaky/data.tsv"] = 2
    dest = tmp_path / "data.tsv"
    download(f"{server.base_url}/flaky/data.tsv", dest, checksum=f"sha256:{SHA256}", retries=3, backoff=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests["/flaky/data.tsv"] == 3


def test_server_errors_exhaust_retries(server: Server, tmp_path: Path) -> None:
    server.fail_first["/flaky/data.tsv"] = 5
    dest = tmp_path / "data.tsv"
    with pytest.raises(DownloadError, match=r"after 2 attempt.*HTTP 500"):
        download(f"{server.base_url}/flaky/data.tsv", dest, checksum=f"sha256:{SHA256}", retries=2, backoff=0)
    assert server.requests["/flaky/data.tsv"] == 2
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_not_found_fails_at_once(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "missing.tsv"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server.base_url}/missing.tsv", dest, checksum=f"sha256:{SHA256}", retries=3, backoff=0)
    assert server.requests["/missing.tsv"] == 1
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_unreachable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    dest = tmp_path / "x.tsv"
    with pytest.raises(DownloadError) as info:
        download(url, dest, checksum=f"sha256:{SHA256}", retries=2, backoff=0, timeout=2)
    message = str(info.value)
    assert "offline or host unreachable" in message
    assert url in message and str(dest) in message
    assert "\n" not in message
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_existing_matching_file_is_kept(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.tsv"
    url = f"{server.base_url}/data.tsv"
    download(url, dest, checksum=f"sha256:{SHA256}")
    assert server.requests["/data.tsv"] == 1
    download(url, dest, checksum=f"sha256:{SHA256}")
    download(url, dest, checksum=f"md5:{MD5}")
    assert server.requests["/data.tsv"] == 1


def test_existing_mismatching_file_is_refused_not_replaced(server: Server, tmp_path: Path) -> None:
    """A file at the destination may be the user's own: a wrong digest stops the rule, the file stays."""
    dest = tmp_path / "data.tsv"
    dest.write_bytes(b"stale")
    with pytest.raises(DataError) as info:
        download(f"{server.base_url}/data.tsv", dest, checksum=f"sha256:{SHA256}")
    message = str(info.value)
    assert "\n" not in message and str(dest) in message
    assert f"expected sha256:{SHA256}" in message and f"found sha256:{hashlib.sha256(b'stale').hexdigest()}" in message
    assert "move it away" in message
    assert dest.read_bytes() == b"stale"
    assert server.requests["/data.tsv"] == 0


def test_existing_file_without_checksum_is_kept_with_a_warning(server: Server, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "data.tsv"
    dest.write_bytes(b"mine")
    with caplog.at_level("WARNING", logger="vulnbench.core.download"):
        download(f"{server.base_url}/data.tsv", dest, checksum=None)
    assert dest.read_bytes() == b"mine" and server.requests["/data.tsv"] == 0
    assert "unverified" in caplog.text


def test_retries_after_429_too_many_requests(server: Server, tmp_path: Path) -> None:
    server.fail_first["/flaky/data.tsv"] = 1
    server.fail_status = 429
    dest = tmp_path / "data.tsv"
    download(f"{server.base_url}/flaky/data.tsv", dest, checksum=f"sha256:{SHA256}", retries=2, backoff=0)
    assert dest.read_bytes() == PAYLOAD and server.requests["/flaky/data.tsv"] == 2


@pytest.mark.parametrize(("retries", "timeout", "min_rate"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, -1.0)])
def test_bad_limits_are_config_errors(tmp_path: Path, retries: int, timeout: float, min_rate: float) -> None:
    with pytest.raises(ConfigError):
        download("http://127.0.0.1:9/x", tmp_path / "x", checksum=None, retries=retries, timeout=timeout,
                 min_rate=min_rate)


def _targz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_extract_tar(tmp_path: Path) -> None:
    archive = tmp_path / "matrix.tar.gz"
    archive.write_bytes(_targz({"filtered/matrix.mtx": b"%%MatrixMarket\n", "filtered/genes.tsv": b"g1\n"}))
    dest = tmp_path / "extracted"
    assert extract_tar(archive, dest) == dest
    assert (dest / "filtered" / "matrix.mtx").read_bytes() == b"%%MatrixMarket\n"
    assert (dest / "filtered" / "genes.tsv").read_bytes() == b"g1\n"
    # a second extraction replaces the directory rather than failing or merging
    archive.write_bytes(_targz({"other.txt": b"x"}))
    extract_tar(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["other.txt"]
    assert _leftovers(tmp_path) == []


def test_extract_truncated_tar(tmp_path: Path) -> None:
    data = _targz({f"f{i}.txt": bytes(range(256)) * 400 for i in range(5)})
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "extracted"
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        extract_tar(archive, dest)
    assert "\n" not in str(info.value)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_extract_rejects_path_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_targz({"../evil.txt": b"x"}))
    dest = tmp_path / "sub" / "extracted"
    with pytest.raises(DataError, match="unsafe member"):
        extract_tar(archive, dest)
    assert not dest.exists() and not (tmp_path / "sub" / "evil.txt").exists()
    assert _leftovers(tmp_path / "sub") == []
