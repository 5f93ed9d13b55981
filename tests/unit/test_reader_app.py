"""Reader-study web app: request validation over plain HTTP, and a browser session that survives a killed server.

Everything a reader sees lies under their personal link /r/<token>/ (tests/robustness/test_reader_server.py checks
the tokens, host check, limits and timeouts themselves)."""

from __future__ import annotations

import csv
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vulnbench.core.errors import DataError
from vulnbench.reader.app import serve
from vulnbench.reader.study import build_study, load_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """8 images: 4 clean, 2 pixel, 2 colour (distinct colours so a mix-up would show)."""
    rng = np.random.default_rng(0)

    def images(condition: str, n: int) -> list[tuple[Path, str]]:
        folder = tmp_path / "src" / condition
        folder.mkdir(parents=True)
        items = []
        for i in range(n):
            path = folder / f"{condition}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
            items.append((path, "melanoma" if i % 2 == 0 else "nevus"))
        return items

    return build_study(images("clean", 4), {"pixel": images("pixel", 2), "color": images("color", 2)},
                       tmp_path / "study", n_per_condition=4, seed=1)


@pytest.fixture
def server(study, tmp_path):
    running = serve(study, ["alice", "bob"], answers_dir=tmp_path / "answers")
    yield running
    running.close()


def _link(server, reader: str = "alice") -> str:
    """The path of a reader's personal link, /r/<token>/."""
    return "/" + server.reader_url(reader).split("/", 3)[3]


def _request(server, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, bytes]:
    """Raw http.client, so the path reaches the server byte for byte (no client-side normalisation)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=5)
    headers = {"Content-Type": content_type} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    status, data = response.status, response.read()
    connection.close()
    return status, data


def _answer(server, payload: dict, reader: str = "alice") -> tuple[int, dict]:
    status, data = _request(server, "POST", _link(server, reader) + "api/answer", json.dumps(payload).encode())
    return status, json.loads(data)


def test_only_study_images_are_served(server, study):
    link = _link(server)
    status, data = _request(server, "GET", link + "images/img_0001.png")
    assert status == 200 and data == (study / "images" / "img_0001.png").read_bytes()
    for path in ["images/../manifest.csv", "images/%2e%2e/manifest.csv", "images/..%2fmanifest.csv",
                 "images/%2E%2E%2Fmanifest.csv", "images/%252e%252e%252fmanifest.csv", "images/..%5cmanifest.csv",
                 "images/img_0001.png/../../manifest.csv", "images/%2fetc%2fpasswd", "images//etc/passwd",
                 "images/..%2f..%2f..%2fetc%2fpasswd", "../manifest.csv", "manifest.csv", "images/",
                 "images/img_9999.png", "answers/alice.csv", "images/IMG_0001.PNG", "images/img_0001.png%00"]:
        status, data = _request(server, "GET", link + path)
        assert status in (403, 404), path  # 403 when "../" climbs out of the link
        assert b"melanoma" not in data and b"root:" not in data
    for path in ["/images/img_0001.png", "/manifest.csv", "/answers/alice.csv", "/api/state", "/"]:
        status, data = _request(server, "GET", path)  # without a link nothing is served
        assert status == 403, path
        assert b"PNG" not in data and b"img_0001" not in data
    status, page = _request(server, "GET", link)
    assert status == 200 and b"Most likely benign" in page and b"Most likely malignant" in page
    assert b"melanoma" not in page and b"manifest" not in page  # the key never reaches the browser
    status, data = _request(server, "GET", link + "api/state")
    assert status == 200 and json.loads(data) == {"reader": "alice", "answered": 0, "total": 8,
                                                  "next": {"image": "img_0001.png"}}
    assert b"melanoma" not in data and b"clean" not in data


def test_answers_are_validated_and_recorded_once(server, tmp_path):
    good = {"reader": "alice", "image": "img_0001.png", "answer": "malignant", "response_time_ms": 1234.56}
    assert _answer(server, {**good, "answer": "maybe"})[0] == 400
    assert _answer(server, {**good, "answer": 1})[0] == 400
    assert _answer(server, {**good, "reader": "../evil"})[0] == 403  # the link, not the body, says who answers
    assert _answer(server, {**good, "reader": "bob"})[0] == 403
    assert _answer(server, {**good, "response_time_ms": -5})[0] == 400
    assert _answer(server, {**good, "response_time_ms": "fast"})[0] == 400
    assert _answer(server, {**good, "image": "img_9999.png"})[0] == 404
    assert _answer(server, {**good, "image": "../manifest.csv"})[0] == 404
    assert _request(server, "POST", _link(server) + "api/answer", b"{not json")[0] == 400
    assert _request(server, "POST", _link(server) + "api/answer", b"answer=benign",
                    "application/x-www-form-urlencoded")[0] == 415
    assert _request(server, "POST", "/api/answer", json.dumps(good).encode())[0] == 403
    assert not (tmp_path / "answers" / "alice.csv").exists()  # nothing written by refused requests

    status, state = _answer(server, good)
    assert status == 200 and state["answered"] == 1 and state["next"] == {"image": "img_0002.png"}
    status, state = _answer(server, good)
    assert status == 409 and "already answered" in state["error"]
    # a study image out of order is accepted (e.g. two tabs), the next one is still the first unanswered
    status, state = _answer(server, {**good, "image": "img_0005.png", "answer": "benign"})
    assert status == 200 and state["next"] == {"image": "img_0002.png"}
    # concurrent double submissions: exactly one wins
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(_answer(server, {**good, "image": "img_0002.png"})[0]))
               for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 11
    lines = (tmp_path / "answers" / "alice.csv").read_text().splitlines()
    assert lines[0].startswith("# vulnbench reader answers v2; study=") and lines[0].endswith("; reader=alice")
    rows = list(csv.DictReader(lines[1:]))
    assert [(r["image"], r["answer"], r["response_time_ms"]) for r in rows] == [
        ("img_0001.png", "1", "1234.6"), ("img_0005.png", "0", "1234.6"), ("img_0002.png", "1", "1234.6")]
    assert all(datetime.fromisoformat(r["timestamp"]).utcoffset().total_seconds() == 0 for r in rows)
    # another reader has their own link, file and state
    status, state = _answer(server, {**good, "reader": "bob"}, reader="bob")
    assert status == 200 and state == {"reader": "bob", "answered": 1, "total": 8, "next": {"image": "img_0002.png"}}
    assert (tmp_path / "answers" / "bob.csv").exists() and server.state("alice")["answered"] == 3


def test_state_resumes_from_the_csv_and_bad_files_fail_early(study, tmp_path, caplog):
    first = serve(study, "alice", answers_dir=tmp_path / "answers")
    link = first.reader_url("alice")
    for name in ("img_0001.png", "img_0002.png"):
        assert _answer(first, {"image": name, "answer": "benign", "response_time_ms": 900})[0] == 200
    first.close()
    with caplog.at_level(logging.WARNING):
        second = serve(study, "alice", answers_dir=tmp_path / "answers", port=first.server_address[1])
    try:
        assert second.reader_url("alice") == link  # the same link works after a restart
        assert second.state("alice")["answered"] == 2 and second.state("alice")["next"] == {"image": "img_0003.png"}
    finally:
        second.close()
    (tmp_path / "answers" / "alice.csv").write_text("image,answer\n")
    with pytest.raises(DataError, match=r"alice\.csv line 1: header"):
        serve(study, "alice", answers_dir=tmp_path / "answers")


# -- a real browser ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_server(study: Path, answers: Path, port: int, log_file: Path) -> tuple[subprocess.Popen, str]:
    """Start `vulnbench reader-study serve` and return it with the link it printed for alice."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vulnbench.cli", "reader-study", "serve", str(study), "--reader", "alice",
         "--port", str(port), "--answers", str(answers)],
        stdout=log_file.open("a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        links = re.findall(rf"alice \(\d+ of \d+ answered\): (http://127\.0\.0\.1:{port}/r/[\w-]+/)",
                           log_file.read_text())
        if links:
            try:
                with urllib.request.urlopen(links[-1] + "api/state", timeout=1) as response:
                    if response.status == 200:
                        return process, links[-1]
            except (urllib.error.URLError, ConnectionError):
                pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start: {log_file.read_text()}")


def test_browser_session_survives_a_killed_server(study, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api.expect.set_options(timeout=20_000)  # shared CI machines can be slow; the happy path takes ~2 s
    answers = tmp_path / "answers"
    port = _free_port()
    log_file = tmp_path / "server.log"
    process, link = _start_server(study, answers, port, log_file)
    expected: dict[str, str] = {}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 900, "height": 650})
        try:
            page = browser.new_page()
            progress = page.locator("#progress-text")

            def answer(k: int, action: str, value: str) -> None:
                """Wait until image k+1 is shown, answer it, and wait for the progress to say k+1."""
                sync_api.expect(page.locator("#benign")).to_be_enabled()
                image = page.locator("#image").get_attribute("src").removeprefix("images/")
                expected[image] = value
                if action.startswith("#"):
                    page.click(action)
                else:
                    page.keyboard.press(action)
                sync_api.expect(progress).to_have_text(f"{k + 1} / 8")

            page.goto(link)
            sync_api.expect(progress).to_have_text("0 / 8")
            for k, (action, value) in enumerate([("#benign", "0"), ("m", "1"), ("#malignant", "1"),
                                                 ("ArrowLeft", "0")]):
                answer(k, action, value)

            sync_api.expect(page.locator("#benign")).to_be_enabled()  # image 5 on screen (fetched) before the kill
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            assert len(_rows(answers / "alice.csv")) == 4  # all on disk before the kill
            page.keyboard.press("b")  # the server is gone: the page must say so and not move on
            sync_api.expect(page.locator("#message")).to_contain_text("NOT saved")
            sync_api.expect(progress).to_have_text("4 / 8")

            process, again = _start_server(study, answers, port, log_file)
            assert again == link  # the reader's link survives the restart
            page.reload()
            sync_api.expect(progress).to_have_text("4 / 8")
            for k, (action, value) in enumerate([("#malignant", "1"), ("b", "0"), ("#benign", "0"),
                                                 ("ArrowRight", "1")], start=4):
                answer(k, action, value)
            sync_api.expect(page.locator("#done")).to_contain_text("Done — thank you")
            sync_api.expect(page.locator("#done-count")).to_contain_text("8 answers")
            sync_api.expect(page.locator("#buttons")).to_be_hidden()
        finally:
            browser.close()
            process.kill()
            process.wait(timeout=10)

    rows = _rows(answers / "alice.csv")
    assert sorted(r["image"] for r in rows) == list(load_study(study).images)  # exactly one row per image
    assert {r["image"]: r["answer"] for r in rows} == expected  # each button/key recorded what it says
    assert all(float(r["response_time_ms"]) > 0 for r in rows)
    assert all(datetime.fromisoformat(r["timestamp"]).tzinfo is not None for r in rows)


def _rows(path: Path) -> list[dict[str, str]]:
    """Answer rows of a v2 file (after its version line)."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# vulnbench reader answers v2")
    return list(csv.DictReader(lines[1:]))
