"""The reader-study app: a local web page that shows one image at a time and records benign/malignant answers.

Standard library only (http.server), so a reader's laptop needs nothing but this package and a browser. The
reader's CSV is the whole state: every answer is appended and fsync'ed before the browser hears "ok", and on load
the page asks which image comes next — killing the server or closing the tab loses nothing. The server looks
image names up in the manifest and never builds a path from what the browser sends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import socket
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from vulnbench.errors import ConfigError, VulnbenchError
from vulnbench.reader.study import (
    ANSWER_COLUMNS,
    ANSWER_VALUES,
    Study,
    check_reader_name,
    load_study,
    read_reader_csv,
)

log = logging.getLogger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MAX_BODY_BYTES = 4096


class _Rejected(Exception):
    """A request the server refuses: HTTP status plus a message the page can show."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ReaderServer(ThreadingHTTPServer):
    """Serves one study; answers of each reader go to <answers_dir>/<reader>.csv (one lock guards all of them)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], study: Study, default_reader: str, answers_dir: Path) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.study = study
        self.default_reader = check_reader_name(default_reader)
        self.answers_dir = answers_dir
        self._known = frozenset(study.images)
        self._lock = threading.Lock()
        self._answered: dict[str, set[str]] = {}  # reader → images answered (loaded from the CSV on first use)
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def _answers_path(self, reader: str) -> Path:
        return self.answers_dir / f"{reader}.csv"

    def _answered_by(self, reader: str) -> set[str]:
        """Caller holds the lock. The CSV is read once per reader; afterwards this server is its only writer."""
        if reader not in self._answered:
            path = self._answers_path(reader)
            done = set(read_reader_csv(path, self._known)["image"]) if path.exists() else set()
            self._answered[reader] = done
        return self._answered[reader]

    def state(self, reader: str) -> dict[str, Any]:
        with self._lock:
            return self._state_locked(reader)

    def _state_locked(self, reader: str) -> dict[str, Any]:
        done = self._answered_by(reader)
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
            done = self._answered_by(reader)
            if image in done:
                raise _Rejected(HTTPStatus.CONFLICT, f"image {image} is already answered")
            expected = self._state_locked(reader)["next"]
            if expected is not None and expected["image"] != image:
                log.warning("reader %s answered %s while %s was next (accepted)", reader, image, expected["image"])
            self._append(reader, [image, ANSWER_VALUES[answer], f"{response_time_ms:.1f}",
                                  datetime.now(UTC).isoformat(timespec="milliseconds")])
            done.add(image)
            log.info("reader %s: %s → %s (%.0f ms)", reader, image, answer, response_time_ms)
            return self._state_locked(reader)

    def _append(self, reader: str, row: list[object]) -> None:
        """Header + row in one write, flushed and fsync'ed: the answer survives a killed server or a power cut."""
        path = self._answers_path(reader)
        self.answers_dir.mkdir(parents=True, exist_ok=True)
        is_new = not path.exists() or path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if is_new:
            writer.writerow(ANSWER_COLUMNS)
        writer.writerow(row)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        if is_new:  # make the new directory entry durable too
            directory = os.open(self.answers_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

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


class _Handler(BaseHTTPRequestHandler):
    server: ReaderServer
    server_version = "vulnbench-reader"
    sys_version = ""

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
            route()
        except _Rejected as rejected:
            self._send_json(rejected.status, {"error": rejected.message})
        except (VulnbenchError, OSError) as error:
            log.error("reader study server: %s", error)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"server error: {error}"})

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _page(self.server.default_reader), "text/html; charset=utf-8")
        elif url.path == "/api/state":
            self._send_json(HTTPStatus.OK, self.server.state(self._reader(parse_qs(url.query).get("reader"))))
        elif url.path.startswith("/images/"):
            self._send_image(url.path.removeprefix("/images/"))
        elif url.path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")

    def _post(self) -> None:
        if urlsplit(self.path).path != "/api/answer":
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")
        payload = self._json_body()
        reader = self._reader([payload.get("reader")])
        image, answer = payload.get("image"), payload.get("answer")
        response_time = payload.get("response_time_ms")
        if not isinstance(image, str):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "image must be a string")
        if not isinstance(answer, str):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "answer must be 'benign' or 'malignant'")
        if (not isinstance(response_time, int | float) or isinstance(response_time, bool)
                or not math.isfinite(response_time) or response_time < 0):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "response_time_ms must be a number ≥ 0")
        self._send_json(HTTPStatus.OK, self.server.record(reader, image, answer, float(response_time)))

    # -- helpers -------------------------------------------------------------------------------------------------
    def _reader(self, values: list[Any] | None) -> str:
        reader = values[0] if values else self.server.default_reader
        try:
            return check_reader_name(reader)
        except ConfigError as error:
            raise _Rejected(HTTPStatus.BAD_REQUEST, str(error)) from None

    def _json_body(self) -> dict[str, Any]:
        # JSON only: a cross-site form cannot send application/json without a CORS preflight this server refuses
        if self.headers.get_content_type() != "application/json":
            raise _Rejected(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _Rejected(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
        if not 0 < length <= MAX_BODY_BYTES:
            raise _Rejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be 1–{MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise _Rejected(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return payload

    def _send_image(self, quoted_name: str) -> None:
        # exact lookup in the manifest: "../x", "%2e%2e%2fx", "a/b" are simply not keys
        path = self.server.study.paths.get(unquote(quoted_name))
        if path is None:
            raise _Rejected(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, path.read_bytes(), "image/png")

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes | str, content_type: str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                         "style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(data)


def create_server(study_dir: str | Path, reader: str, host: str = "127.0.0.1", port: int = 0,
                  answers_dir: str | Path | None = None) -> ReaderServer:
    """Bind (port 0 = any free port) without serving yet; answers default to <study_dir>/answers."""
    study = load_study(study_dir)
    check_reader_name(reader)
    answers = Path(answers_dir) if answers_dir is not None else Path(study_dir) / "answers"
    if host not in LOCAL_HOSTS:
        log.warning("binding the reader study to %s: anyone who can reach this address can see the images and "
                    "submit answers — prefer 127.0.0.1", host)
    try:
        server = ReaderServer((host, int(port)), study, reader, answers)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with server._lock:
        server._answered_by(reader)  # a malformed answers file fails now, not at the first click
    return server


def serve(study_dir: str | Path, reader: str, host: str = "127.0.0.1", port: int = 0,
          answers_dir: str | Path | None = None) -> ReaderServer:
    """Start serving in a background thread and return the server (`.url`, `.close()`)."""
    return create_server(study_dir, reader, host, port, answers_dir).start()


def run(study_dir: str | Path, reader: str, host: str = "127.0.0.1", port: int = 0,
        answers_dir: str | Path | None = None) -> None:
    """Serve in the foreground until Ctrl-C (the `vulnbench reader-study serve` command)."""
    server = create_server(study_dir, reader, host, port, answers_dir)
    state = server.state(reader)
    print(f"Reader study: {state['answered']} of {state['total']} images answered by {reader}; answers go to "
          f"{server._answers_path(reader)}", flush=True)
    print(f"Open {server.url} in a browser (Ctrl-C stops the server; answers are saved as you go)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _page(default_reader: str) -> str:
    return _PAGE.replace("__DEFAULT_READER__", json.dumps(default_reader))


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
const reader = new URLSearchParams(location.search).get("reader") || __DEFAULT_READER__;
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
  image.src = "/images/" + encodeURIComponent(current);
}

async function loadState() {
  try {
    const response = await fetch("/api/state?reader=" + encodeURIComponent(reader), {cache: "no-store"});
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
    const response = await fetch("/api/answer", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({reader: reader, image: current, answer: value, response_time_ms: responseTime})});
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
