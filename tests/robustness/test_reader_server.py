"""Issue 16 item 8: the reader server as served to clinicians on a hospital network, attacked over real HTTP.

Per-reader links (one reader cannot read or write another's answers), 400 with a message for malformed input, the
Host-header check, the body size limit, a deadline for reading a request (a stalled upload does not hold a thread)
and a cap on open connections. Every server here listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from vulnbench.core.errors import ConfigError
from vulnbench.reader.app import MAX_BODY_BYTES, serve

GOOD = {"image": "img_0001.png", "answer": "benign", "response_time_ms": 812.5}


@pytest.fixture
def server(study: Path):
    running = serve(study, ["alice", "bob"], request_timeout=0.6, max_connections=4)
    yield running
    running.close()


def _path(server, reader: str) -> str:
    return urlsplit(server.reader_url(reader)).path


def _http(server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          host: str | None = None) -> tuple[int, bytes]:
    """One request with http.client; `host` replaces the Host header http.client would send."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
    if host is not None:
        connection.putheader("Host", host)
    sent = {"Content-Type": "application/json"} if body is not None else {}
    sent.update(headers or {})
    if body is not None and "Content-Length" not in sent and "Transfer-Encoding" not in sent:
        sent["Content-Length"] = str(len(body))
    for name, value in sent.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


def _answer(server, reader: str, payload: dict | bytes, **kwargs) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, data = _http(server, "POST", _path(server, reader) + "api/answer", body, **kwargs)
    return status, json.loads(data)


def test_a_reader_link_reads_and_writes_only_its_own_answers(server, study: Path) -> None:
    answers = study / "answers"
    alice, bob = _path(server, "alice"), _path(server, "bob")
    assert alice != bob and len(alice) > 30  # /r/<token>/ with a long random token
    printed = server.reader_url("alice")
    assert printed.startswith(f"http://127.0.0.1:{server.server_address[1]}/r/")

    status, data = _http(server, "GET", alice + "api/state")
    assert status == 200 and json.loads(data)["reader"] == "alice"
    status, page = _http(server, "GET", alice)
    assert status == 200 and b'"alice"' in page and bob.encode() not in page
    assert _http(server, "GET", alice.rstrip("/"))[0] == 308  # …/r/<token> → …/r/<token>/

    # alice's link cannot answer for bob, and bob's file never appears
    status, reply = _answer(server, "alice", {**GOOD, "reader": "bob"})
    assert status == 403 and reply["error"] == "this link records answers of its own reader only"
    assert not (answers / "bob.csv").exists()
    assert _answer(server, "alice", GOOD)[0] == 200
    assert not (answers / "bob.csv").exists() and json.loads(_http(server, "GET", bob + "api/state")[1])[
        "answered"] == 0

    # without a valid token: nothing (not the page, not the images, not the state)
    token = alice.split("/")[2]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for path in ["/", "/api/state", "/images/img_0001.png", f"/r/{forged}/api/state", f"/r/{forged}/",
                 f"/r/{token.upper()}/api/state", "/r//api/state", "/r/" + "x" * 5000 + "/api/state",
                 f"/r/{token}%2f/api/state", f"/R/{token}/api/state"]:
        status, data = _http(server, "GET", path)
        assert status == 403, path
        assert "error" in json.loads(data) and b"img_0001" not in data and b"PNG" not in data
    status, data = _http(server, "POST", f"/r/{forged}/api/answer", json.dumps(GOOD).encode())
    assert status == 403 and (answers / "alice.csv").read_text().count("img_0001.png") == 1


def test_malformed_input_gets_400_with_a_message(server, study: Path) -> None:
    bad_bodies = {
        json.dumps({**GOOD, "response_time_ms": 10**1000}).encode(): "response_time_ms must be a number",
        json.dumps({**GOOD, "response_time_ms": -(10**1000)}).encode(): "response_time_ms must be a number",
        json.dumps(GOOD).replace("812.5", "1e999").encode(): "response_time_ms must be a number",  # inf
        json.dumps(GOOD).replace("812.5", "NaN").encode(): "response_time_ms must be a number",
        json.dumps({**GOOD, "response_time_ms": True}).encode(): "response_time_ms must be a number",
        json.dumps({**GOOD, "response_time_ms": "812"}).encode(): "response_time_ms must be a number",
        json.dumps({**GOOD, "image": "img_" + "0" * 300 + ".png"}).encode(): "image name longer than 128 characters",
        json.dumps({**GOOD, "image": 10**300}).encode(): "image must be a string",
        json.dumps({**GOOD, "answer": ["benign"]}).encode(): "answer must be 'benign' or 'malignant'",
        b"[" * 3000: "body is not valid JSON",  # nesting deeper than the parser's recursion limit
        b"\xff\xfe{}": "body is not valid JSON",
        b"[]": "body must be a JSON object",
    }
    for body, message in bad_bodies.items():
        status, reply = _answer(server, "alice", body)
        assert status == 400 and message in reply["error"], (body[:60], reply)

    status, reply = _answer(server, "alice", {**GOOD, "answer": "b" * (MAX_BODY_BYTES + 10)})
    assert status == 413 and reply["error"] == f"body must be 1–{MAX_BODY_BYTES} bytes"
    for length in ("-5", "abc", "1" * 30, "  "):
        status, reply = _answer(server, "alice", b"{}", headers={"Content-Length": length})
        assert status == 411 and "Content-Length required" in reply["error"], length
    status, reply = _answer(server, "alice", b"2\r\n{}\r\n0\r\n\r\n", headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    status, data = _http(server, "GET", _path(server, "alice") + "images/" + "a" * 1000 + ".png")
    assert status == 400 and "image name longer than" in json.loads(data)["error"]
    with pytest.raises(ConfigError, match="invalid reader name 'aaaa"):
        serve(study, "a" * 300)

    assert not (study / "answers" / "alice.csv").exists()  # nothing refused was written
    assert _answer(server, "alice", GOOD)[0] == 200  # and the server still works


def test_the_host_header_must_name_this_server(study: Path) -> None:
    server = serve(study, "alice", allowed_hosts=["Study.Hospital.Example"])
    try:
        port = server.server_address[1]
        path = _path(server, "alice") + "api/state"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"study.hospital.example:{port}"):
            assert _http(server, "GET", path, host=host)[0] == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", f"127.0.0.1:{port}@evil",
                     f"127.0.0.1.evil.example:{port}", "127.0.0.1", "[::1]:notaport"):
            status, data = _http(server, "GET", path, host=host)
            assert status in (400, 421), host
            assert "Host" in json.loads(data)["error"]
        status, data = _http(server, "POST", _path(server, "alice") + "api/answer", json.dumps(GOOD).encode(),
                             host=f"rebound.example:{port}")
        assert status == 421 and not (study / "answers" / "alice.csv").exists()  # a rebinding page cannot answer
        status, data = _http(server, "GET", path, host="")
        assert status == 400 and json.loads(data)["error"] == "Host header required"
    finally:
        server.close()


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_stalled_or_dribbled_request_is_cut_off_at_the_deadline(server) -> None:
    port = server.server_address[1]
    baseline = threading.active_count()
    head = (f"POST {_path(server, 'alice')}api/answer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"image\"").encode()
    stalled = _connect(server)
    stalled.sendall(head)  # …and the other 92 bytes never come
    started = time.monotonic()
    # meanwhile the server answers others
    assert _http(server, "GET", _path(server, "bob") + "api/state")[0] == 200
    reply = _read_all(stalled)
    waited = time.monotonic() - started
    stalled.close()
    assert reply.startswith(b"HTTP/1.0 408 ") and b"request not received in time" in reply
    assert 0.3 < waited < 3.0

    # a client that keeps sending one byte at a time still runs out of time (one deadline per request)
    dribble = _connect(server)
    started = time.monotonic()
    request = f"GET {_path(server, 'alice')}api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    closed = False
    for k in range(60):
        try:
            dribble.sendall(request[k:k + 1] if k < len(request) else b"a")
        except OSError:
            closed = True
            break
        dribble.settimeout(0.05)
        try:
            if dribble.recv(4096) == b"":
                closed = True
                break
        except TimeoutError:
            pass
    elapsed = time.monotonic() - started
    dribble.close()
    assert closed and elapsed < 2.5, elapsed

    deadline = time.monotonic() + 5  # the handler threads are gone, not parked
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= baseline
    assert json.loads(_http(server, "GET", _path(server, "alice") + "api/state")[1])["answered"] == 0


def test_open_connections_are_capped(server) -> None:
    idle = [_connect(server) for _ in range(4)]  # max_connections=4: every slot taken by a silent client
    time.sleep(0.2)
    try:
        turned_away = _connect(server)
        turned_away.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = _read_all(turned_away)
        turned_away.close()
        assert reply.startswith(b"HTTP/1.0 503 ") and b"server busy" in reply
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5  # slots come back as the silent connections end
    while True:
        try:
            if _http(server, "GET", _path(server, "alice") + "api/state")[0] == 200:
                break
        except (http.client.HTTPException, OSError):
            pass
        assert time.monotonic() < deadline, "the server did not recover its connection slots"
        time.sleep(0.05)
