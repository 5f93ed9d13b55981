"""The reader-study app: a local web page that shows one image at a time and records benign/malignant answers.

Standard library only (http.server), so a reader's laptop needs nothing but this package and a browser. The
reader's CSV is the whole state: every answer is appended and fsync'ed before the browser hears "ok", and on load
the page asks which image comes next — killing the server or closing the tab loses nothing. The server looks
image names up in the manifest and never builds a path from what the browser sends.

It may be served to clinicians on a hospital network, so: each reader has a personal link, /r/<token>/, printed at
start; the token, not anything the browser says, decides whose answers are read and written (one reader cannot see or
change another's). One server per reader (a lock in the answers folder), a Host-header check against DNS rebinding,
small bodies only, a deadline for reading each request (a stalled upload does not hold a thread), a cap on open
connections, and a JSON error with a message (never a traceback) for anything malformed.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vulnbench.core.errors import ConfigError, VulnbenchError
from vulnbench.reader.answers import ANSWER_VALUES, AnswerLog
from vulnbench.reader.study import Study, check_reader_name, load_study

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
MAX_BODY_BYTES = 4096
#: longest image name the API takes (study names are img_0001.png); longer is malformed, not merely unknown
MAX_IMAGE_NAME = 128
#: a response time above a year is not a measurement (but a tab left open over a weekend still is)
MAX_RESPONSE_TIME_MS = 365 * 24 * 3600 * 1000
#: seconds a client has to send a whole request (request line, headers, body)
REQUEST_TIMEOUT = 20.0
#: connections served at once; more are turned away with 503 instead of each holding a thread
MAX_CONNECTIONS = 32


class _Rejected(Exception):
    """A request the server refuses: HTTP status plus a message the page can show."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ReaderServer(ThreadingHTTPServer):
    """Serves one study to the readers it was started for; each reader's answers go to <answers_dir>/<reader>.csv,
    written by that reader's AnswerLog (which holds the reader's lock while the server lives)."""

    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], study: Study, readers: Sequence[str], answers_dir: Path, *,
                 allowed_hosts: Iterable[str] = (), request_timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        names = [check_reader_name(r) for r in readers]
        if not names:
            raise ConfigError("name at least one reader to serve")
        if len(set(names)) != len(names):
            raise ConfigError(f"reader names must differ, got {', '.join(names)}")
        self.study = study
        self.readers = tuple(names)
        self.answers_dir = Path(answers_dir)
        self.request_timeout = float(request_timeout)
        self._known = frozenset(study.images)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(int(max_connections))
        self._thread: threading.Thread | None = None
        self._logs: dict[str, AnswerLog] = {}
        try:
            for name in names:  # lock every reader before binding: a second server fails on the lock, clearly
                self._logs[name] = AnswerLog(self.answers_dir, name, study.study_id, self._known).open()
            super().__init__(address, _Handler)
        except BaseException:
            self._close_logs()
            raise
        self.allowed_hosts = _allowed_hosts(address[0], self.server_address[0], allowed_hosts)
        self._tokens = {name: answer_log.token.encode() for name, answer_log in self._logs.items()}

    # -- addresses -----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL (no token: it only says where the server is)."""
        host, port = self.server_address[:2]
        if host in WILDCARD_HOSTS:
            host = socket.gethostname()
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def reader_url(self, reader: str) -> str:
        """The reader's personal link: whoever holds it answers as this reader, so give it to them only."""
        return f"{self.url}r/{self._logs[reader].token}/"

    @property
    def repairs(self) -> list[str]:
        """What opening the answers files had to repair (torn last line, missing newline, repeated answers)."""
        return [repair for answer_log in self._logs.values() for repair in answer_log.repairs]

    def answers_path(self, reader: str) -> Path:
        return self._logs[reader].path

    def reader_for_token(self, token: str) -> str | None:
        given = token.encode("utf-8", "surrogateescape")
        found = None
        for reader, expected in self._tokens.items():  # compare with every token: timing tells nothing
            if hmac.compare_digest(expected, given):
                found = reader
        return found

    # -- state -----------------------------------------------------------------------------------------------------
    def state(self, reader: str) -> dict[str, Any]:
        with self._lock:
            return self._state_locked(reader)

    def _state_locked(self, reader: str) -> dict[str, Any]:
        done = self._logs[reader].answered
        upcoming = next((i for i, name in enumerate(self.study.images) if name not in done), None)
        return {"reader": reader, "answered": len(done), "total": len(self.study.images),
                "next": None if upcoming is None else {"image": self.study.images[upcoming]}}

    def record(self, reader: str, image: str, answer: str, response_time_ms: float) -> dict[str, Any]:
        """Append one answer durably; refuse unknown images (404), repeats (409) and bad values (400)."""
        if image not in self._known:
            raise _Rejected(HTTPStatus.NOT_FOUND, f"unknown image {image!r}")
        if answer not in ANSWER_VALUES:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "answer must be 'benign' or 'malignant'")
        with self._lock:
            answer_log = self._logs[reader]
            if image in answer_log.answered:
                raise _Rejected(HTTPStatus.CONFLICT, f"image {image} is already answered")
            expected = self._state_locked(reader)["next"]
            if expected is not None and expected["image"] != image:
                log.warning("reader %s answered %s while %s was next (accepted)", reader, image, expected["image"])
            try:
                answer_log.append(image, ANSWER_VALUES[answer], response_time_ms,
                                  datetime.now(UTC).isoformat(timespec="milliseconds"))
            except OSError as error:
                log.error("reader %s: answer to %s NOT saved: %s", reader, image, error)
                raise _Rejected(HTTPStatus.INSUFFICIENT_STORAGE,
                                f"this answer was NOT saved ({error.strerror or error}); tell the study organiser — "
                                "earlier answers are safe") from None
            log.info("reader %s: %s → %s (%.0f ms)", reader, image, answer, response_time_ms)
            return self._state_locked(reader)

    # -- connections -------------------------------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        """At most `max_connections` at once: a flood of idle connections cannot take every thread."""
        if not self._slots.acquire(blocking=False):
            log.warning("reader study server: too many connections, turned %s away", client_address[0])
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\n\r\n{\"error\": \"server busy, retry\"}")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke (client gone, timed out): one log line, no traceback on the console."""
        log.debug("reader study server: connection from %s failed", client_address[0], exc_info=True)

    # -- lifetime ----------------------------------------------------------------------------------------------------
    def start(self) -> ReaderServer:
        """Serve in a background thread (tests, notebooks); `close()` stops it."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="reader-study", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        self._close_logs()

    def _close_logs(self) -> None:
        for answer_log in self._logs.values():
            answer_log.close()


def _allowed_hosts(requested: str, bound: str, extra: Iterable[str]) -> frozenset[str]:
    """Host names the browser may use for this server: anything else is a DNS-rebinding page or a mistake."""
    names = {requested.lower(), str(bound).lower()} | {h.strip().lower().strip("[]") for h in extra if h.strip()}
    if requested in LOCAL_HOSTS or str(bound) in LOCAL_HOSTS or requested in WILDCARD_HOSTS:
        names |= LOCAL_HOSTS
    if requested in WILDCARD_HOSTS:  # this machine's name and its addresses (other names: --allowed-host)
        name = socket.gethostname()
        names.add(name.lower())
        with contextlib.suppress(OSError):
            names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(name, None)}
    return frozenset(names - WILDCARD_HOSTS)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline: a client dribbling a byte at a time still runs out of time."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    server: ReaderServer
    server_version = "vulnbench-reader"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive connection holds a thread

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with one deadline for the whole request
        deadline = time.monotonic() + self.server.request_timeout
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing -------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._respond(self._get)

    def do_POST(self) -> None:
        self._respond(self._post)

    def _respond(self, route: Any) -> None:
        """Run a route; refusals become JSON errors the page shows, failures a 500 with one line (no traceback)."""
        try:
            self._check_host()
            route()
        except _Rejected as rejected:
            self._send_json(rejected.status, {"error": rejected.message})
        except TimeoutError:
            self.close_connection = True
            self._send_json(HTTPStatus.REQUEST_TIMEOUT, {"error": "request not received in time"})
        except (VulnbenchError, OSError) as error:
            log.error("reader study server: %s", error)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"server error: {error}"})
        except Exception:
            log.exception("reader study server: unexpected error on %s", self.path[:200])
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal server error"})

    def _check_host(self) -> None:
        """The Host header must name this server: a page from elsewhere that rebinds its DNS name to this address
        cannot use a reader's link."""
        host = self.headers.get("Host")
        if not host:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "Host header required")
        try:
            parsed = urlsplit(f"//{host.strip()}")
            name, port = (parsed.hostname or "").lower(), parsed.port
        except ValueError:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "malformed Host header") from None
        if name not in self.server.allowed_hosts or (port or 80) != self.server.server_address[1]:
            raise _Rejected(HTTPStatus.MISDIRECTED_REQUEST,
                            f"Host {host[:100]!r} is not this server (start it with --allowed-host NAME to use "
                            "another name)")

    def _reader_route(self, path: str) -> tuple[str, str]:
        """/r/<token>/<rest> → (reader, rest); everything a reader sees lies under their personal link."""
        if not path.startswith("/r/"):
            raise _Rejected(HTTPStatus.FORBIDDEN, "open your personal link, printed by `vulnbench reader-study "
                                                  "serve` (…/r/<token>/)")
        token, slash, rest = path.removeprefix("/r/").partition("/")
        reader = self.server.reader_for_token(token)
        if reader is None:
            raise _Rejected(HTTPStatus.FORBIDDEN, "unknown reader link: ask the study organiser for yours")
        if not slash:
            raise _Redirect(f"/r/{token}/")
        return reader, rest

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            return
        try:
            reader, rest = self._reader_route(path)
        except _Redirect as redirect:
            self.send_response(HTTPStatus.PERMANENT_REDIRECT)
            self.send_header("Location", redirect.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if rest in ("", "index.html"):
            self._send(HTTPStatus.OK, _page(reader), "text/html; charset=utf-8")
        elif rest == "api/state":
            self._send_json(HTTPStatus.OK, self.server.state(reader))
        elif rest.startswith("images/"):
            self._send_image(rest.removeprefix("images/"))
        else:
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")

    def _post(self) -> None:
        try:
            reader, rest = self._reader_route(urlsplit(self.path).path)
        except _Redirect:
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found") from None
        if rest != "api/answer":
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")
        payload = self._json_body()
        claimed = payload.get("reader", reader)
        if claimed != reader:
            raise _Rejected(HTTPStatus.FORBIDDEN, "this link records answers of its own reader only")
        image, answer = payload.get("image"), payload.get("answer")
        if not isinstance(image, str):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "image must be a string")
        if len(image) > MAX_IMAGE_NAME:
            raise _Rejected(HTTPStatus.BAD_REQUEST, f"image name longer than {MAX_IMAGE_NAME} characters")
        if not isinstance(answer, str):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "answer must be 'benign' or 'malignant'")
        response_time = _response_time(payload.get("response_time_ms"))
        self._send_json(HTTPStatus.OK, self.server.record(reader, image, answer, response_time))

    # -- helpers -------------------------------------------------------------------------------------------------
    def _json_body(self) -> dict[str, Any]:
        # JSON only: a cross-site form cannot send application/json without a CORS preflight this server refuses
        if self.headers.get_content_type() != "application/json":
            raise _Rejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        if self.headers.get("Transfer-Encoding"):
            raise _Rejected(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not a chunked body")
        length_field = (self.headers.get("Content-Length") or "").strip()
        if not length_field.isascii() or not length_field.isdigit() or len(length_field) > 9:
            raise _Rejected(HTTPStatus.LENGTH_REQUIRED, "Content-Length required (a whole number of bytes)")
        length = int(length_field)
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            raise _Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be 1–{MAX_BODY_BYTES} bytes")
        body = self.rfile.read(length)
        if len(body) < length:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "body shorter than its Content-Length")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return payload

    def _send_image(self, quoted_name: str) -> None:
        # exact lookup in the manifest: "../x", "%2e%2e%2fx", "a/b" are simply not keys
        if len(quoted_name) > 3 * MAX_IMAGE_NAME:
            raise _Rejected(HTTPStatus.BAD_REQUEST, f"image name longer than {MAX_IMAGE_NAME} characters")
        path = self.server.study.paths.get(unquote(quoted_name))
        if path is None:
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, path.read_bytes(), "image/png")

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes | str, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        try:
            self.connection.settimeout(self.server.request_timeout)  # writing gets its own time, not what is left
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")  # the link's token never leaves in a Referer
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                             "style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'none'")
            self.end_headers()
            self.wfile.write(data)
        except OSError as error:  # the client is gone: nothing left to tell it
            self.close_connection = True
            log.debug("reader study server: could not answer %s: %s", self.address_string(), error)


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _response_time(value: Any) -> float:
    """A response time in ms: a real number from 0 to a year (a huge integer is malformed, not an overflow)."""
    message = f"response_time_ms must be a number from 0 to {MAX_RESPONSE_TIME_MS}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(HTTPStatus.BAD_REQUEST, message)
    if isinstance(value, int) and not 0 <= value <= MAX_RESPONSE_TIME_MS:  # before float(): 10**400 overflows
        raise _Rejected(HTTPStatus.BAD_REQUEST, message)
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_RESPONSE_TIME_MS:
        raise _Rejected(HTTPStatus.BAD_REQUEST, message)
    return number


def create_server(study_dir: str | Path, reader: str | Sequence[str], host: str = "127.0.0.1", port: int = 0,
                  answers_dir: str | Path | None = None, *, allowed_hosts: Iterable[str] = (),
                  request_timeout: float = REQUEST_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> ReaderServer:
    """Bind (port 0 = any free port) without serving yet; answers default to <study>/answers. `study_dir` may be the
    pipeline's pointer file (results/reader_study/study.json)."""
    study = load_study(study_dir)
    readers = [reader] if isinstance(reader, str) else list(reader)
    for name in readers:
        check_reader_name(name)
    answers = Path(answers_dir) if answers_dir is not None else study.answers_dir
    if host not in LOCAL_HOSTS:
        log.warning("binding the reader study to %s: anyone who can reach this address can try the readers' links — "
                    "prefer 127.0.0.1, and hand each link to its reader only", host)
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"port must be 0–65535, got {port}")
    if float(request_timeout) <= 0:
        raise ConfigError(f"request timeout must be positive, got {request_timeout}")
    try:
        return ReaderServer((host, int(port)), study, readers, answers, allowed_hosts=allowed_hosts,
                            request_timeout=request_timeout, max_connections=max_connections)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(study_dir: str | Path, reader: str | Sequence[str], host: str = "127.0.0.1", port: int = 0,
          answers_dir: str | Path | None = None, **options: Any) -> ReaderServer:
    """Start serving in a background thread and return the server (`.reader_url(name)`, `.close()`)."""
    return create_server(study_dir, reader, host, port, answers_dir, **options).start()


def run(study_dir: str | Path, reader: str | Sequence[str], host: str = "127.0.0.1", port: int = 0,
        answers_dir: str | Path | None = None, **options: Any) -> None:
    """Serve in the foreground until Ctrl-C (the `vulnbench reader-study serve` command)."""
    server = create_server(study_dir, reader, host, port, answers_dir, **options)
    try:
        for repair in server.repairs:
            print(f"repaired: {repair}", flush=True)
        print(f"Reader study {server.study.directory} ({len(server.study.images)} images); answers go to "
              f"{server.answers_dir}. Give each reader their own link (it lets its holder answer as that reader):",
              flush=True)
        for name in server.readers:
            state = server.state(name)
            print(f"  {name} ({state['answered']} of {state['total']} answered): {server.reader_url(name)}", flush=True)
        print("Ctrl-C stops the server; answers are saved as they are given.", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _page(reader: str) -> str:
    return _PAGE.replace("__READER__", json.dumps(reader))


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dermoscopic Images Study</title>
<style>
  html, body { height: 100%; margin: 0; }
  body { background: #323232; color: #e8e8e8; font: 16px/1.4 system-ui, sans-serif;
         display: flex; flex-direction: column; }
  header { display: flex; align-items: center; gap: 1em; padding: .6em 1.2em; }
  header h1 { font-size: 1.1em; font-weight: 600; margin: 0; white-space: nowrap; }
  progress { flex: 1; height: .9em; accent-color: #8ab4f8; }
  #reader-name { color: #b0b0b0; white-space: nowrap; }
  #progress-text { min-width: 5em; text-align: right; font-variant-numeric: tabular-nums; }
  main { flex: 1; position: relative; min-height: 0; margin: 0 1.2em; }
  #image { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; visibility: hidden; }
  #message { color: #ff8a80; text-align: center; min-height: 1.4em; padding-top: .4em; }
  #buttons { display: flex; justify-content: center; gap: 2em; padding: .6em 1em 1.2em; }
  button { font-size: 1.15em; padding: .7em 1.4em; min-width: 15em; border-radius: 6px; cursor: pointer;
           border: 1px solid #9a9a9a; background: #4a4a4a; color: #fff; }
  button:hover:enabled { background: #5c5c5c; }
  button:disabled { opacity: .4; cursor: default; }
  kbd { font: .8em monospace; border: 1px solid #aaa; border-radius: 3px; padding: 0 .35em; margin-left: .3em; }
  #done { flex: 1; display: flex; flex-direction: column; align-items: center; justify-content: center; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>Dermoscopic Images Study</h1>
  <span id="reader-name"></span>
  <progress id="progress" value="0" max="1"></progress>
  <span id="progress-text">… / …</span>
</header>
<main id="stage"><img id="image" alt="dermoscopic image"></main>
<section id="done" hidden><h2>Done — thank you</h2><p id="done-count"></p></section>
<div id="message" role="alert"></div>
<div id="buttons">
  <button id="benign" type="button" disabled>Most likely benign<kbd>B</kbd><kbd>←</kbd></button>
  <button id="malignant" type="button" disabled>Most likely malignant<kbd>M</kbd><kbd>→</kbd></button>
</div>
<script>
"use strict";
const reader = __READER__;  // fixed by this page's link: the server records answers for its token's reader
document.getElementById("reader-name").textContent = reader;
const image = document.getElementById("image");
const buttons = [document.getElementById("benign"), document.getElementById("malignant")];
let current = null;    // image on screen
let shownAt = null;    // performance.now() when it finished loading; null = not answerable yet
let busy = false;      // an answer is on its way

function say(text) { document.getElementById("message").textContent = text; }
function enable(on) { buttons.forEach(b => { b.disabled = !on; }); }

function show(state) {
  document.getElementById("progress").max = state.total;
  document.getElementById("progress").value = state.answered;
  document.getElementById("progress-text").textContent = state.answered + " / " + state.total;
  current = null; shownAt = null; enable(false);
  if (!state.next) {
    document.getElementById("stage").hidden = true;
    document.getElementById("buttons").hidden = true;
    document.getElementById("done").hidden = false;
    document.getElementById("done-count").textContent = state.answered + " answers recorded for " + reader + ".";
    return;
  }
  current = state.next.image;
  image.style.visibility = "hidden";
  image.onload = () => { shownAt = performance.now(); image.style.visibility = "visible"; enable(true); };
  image.onerror = () => say("Could not load the image — is the server running? Reload the page to retry.");
  image.src = "images/" + encodeURIComponent(current);
}

async function loadState() {
  try {
    const response = await fetch("api/state", {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) { say(body.error || "error " + response.status); return; }
    say(""); show(body);
  } catch (error) {
    say("Cannot reach the study server — your answers so far are saved. Restart it, then reload this page.");
  }
}

async function answer(value) {
  if (busy || current === null || shownAt === null) return;
  const responseTime = performance.now() - shownAt;
  busy = true; enable(false);
  try {
    const response = await fetch("api/answer", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image: current, answer: value, response_time_ms: responseTime})});
    const body = await response.json();
    if (response.ok) { say(""); show(body); }
    else if (response.status === 409) { loadState(); }
    else { say(body.error || "error " + response.status); enable(true); }
  } catch (error) {
    say("Cannot reach the study server — this answer was NOT saved. Restart it, then reload this page.");
    enable(true);
  } finally {
    busy = false;
  }
}

buttons[0].addEventListener("click", () => answer("benign"));
buttons[1].addEventListener("click", () => answer("malignant"));
document.addEventListener("keydown", event => {
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === "b" || key === "arrowleft") { event.preventDefault(); answer("benign"); }
  else if (key === "m" || key === "arrowright") { event.preventDefault(); answer("malignant"); }
});
loadState();
</script>
</body>
</html>
"""
