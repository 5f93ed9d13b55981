"""Issue 16 item 5: a reader's answers file survives what disks and people do to it.

No trailing newline, a torn last line (disk full, power cut), older formats, two servers for one reader, a disk that
fills up mid-answer: the server starts, repairs and reports; the analysis reads; no acknowledged answer is lost.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from vulnbench.core.errors import ConfigError, DataError
from vulnbench.reader.analysis import read_answers
from vulnbench.reader.answers import version_line
from vulnbench.reader.app import serve
from vulnbench.reader.study import load_study

V1_HEADER = b"image,answer,response_time_ms,timestamp\n"
ROW = "img_{:04d}.png,{},1500.0,2024-05-01T10:00:{:02d}.000+00:00"


def _rows(*numbers: int) -> bytes:
    return b"".join((ROW.format(n, n % 2, n) + "\n").encode() for n in numbers)


def _v2(study: Path, reader: str = "alice") -> bytes:
    return (version_line(load_study(study).study_id, reader) + "\n").encode() + V1_HEADER


def _post(url: str, image: str, answer: str = "benign") -> tuple[int, dict]:
    """POST an answer to a reader's link (http://127.0.0.1:port/r/<token>/)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    body = json.dumps({"image": image, "answer": answer, "response_time_ms": 1000})
    connection.request("POST", parts.path + "api/answer", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    result = response.status, json.loads(response.read())
    connection.close()
    return result


def test_torn_last_line_is_cut_off_kept_aside_and_reported(study: Path, caplog) -> None:
    answers = study / "answers"
    answers.mkdir()
    whole = _v2(study) + _rows(1, 2)
    torn = b"img_0003.png,1,15"  # the disk filled up in the middle of the third answer
    (answers / "alice.csv").write_bytes(whole + torn)

    # the analysis reads it, says so, and changes nothing
    with caplog.at_level(logging.WARNING):
        frame = read_answers(study, answers)
    assert frame["image"].tolist() == ["img_0001.png", "img_0002.png"]
    assert "alice.csv: torn last line (17 bytes, never acknowledged) left out: 'img_0003.png,1,15'" in caplog.text
    assert (answers / "alice.csv").read_bytes() == whole + torn

    # the server repairs it before appending, keeps the fragment, and reports the repair
    server = serve(study, "alice")
    try:
        assert any("cut off a torn last line (17 bytes" in r and "alice.csv.torn" in r for r in server.repairs)
        assert (answers / "alice.csv").read_bytes() == whole
        assert (answers / "alice.csv.torn").read_bytes() == torn + b"\n"
        assert server.state("alice")["next"] == {"image": "img_0003.png"}
        assert _post(server.reader_url("alice"), "img_0003.png", "malignant")[0] == 200
    finally:
        server.close()
    lines = (answers / "alice.csv").read_bytes()
    assert lines.startswith(whole) and re.fullmatch(rb"img_0003\.png,1,1000\.0,\S+\+00:00\n", lines[len(whole):])
    assert read_answers(study, answers)["answer"].tolist() == [1, 0, 1]


def test_missing_trailing_newline_and_older_formats_are_read_and_appended_to(study: Path) -> None:
    answers = study / "answers"
    answers.mkdir()
    v1 = V1_HEADER + _rows(1, 2).rstrip(b"\n")  # v1 (no version line), saved by an editor without a final newline
    original = b"\xef\xbb\xbfImage_name,Diagnosis\r\nimg_0001.png,1\r\nimg_0002.png,0"  # the original app's export,
    # saved again by a spreadsheet (byte-order mark, CRLF, no final newline)
    (answers / "alice.csv").write_bytes(v1)
    (answers / "bob.csv").write_bytes(original)
    frame = read_answers(study, answers)
    assert frame.groupby("reader")["image"].count().to_dict() == {"alice": 2, "bob": 2}

    server = serve(study, ["alice", "bob"])
    try:
        assert f"{answers / 'alice.csv'}: added the missing newline after the last answer" in server.repairs
        for reader in ("alice", "bob"):
            assert server.state(reader)["answered"] == 2
            assert _post(server.reader_url(reader), "img_0003.png")[0] == 200
    finally:
        server.close()
    alice = (answers / "alice.csv").read_bytes()
    assert alice.startswith(v1 + b"\n") and re.fullmatch(rb"img_0003\.png,0,1000\.0,\S+\n", alice[len(v1) + 1:])
    assert (answers / "bob.csv").read_bytes() == original + b"\nimg_0003.png,0\n"  # appended in its own format
    frame = read_answers(study, answers)
    assert frame.groupby("reader")["image"].count().to_dict() == {"alice": 3, "bob": 3}
    assert frame.loc[frame["reader"] == "bob", "response_time_ms"].isna().all()


def test_a_new_file_has_a_versioned_header_and_foreign_or_future_files_are_refused(study: Path) -> None:
    answers = study / "answers"
    server = serve(study, "alice")
    try:
        assert _post(server.reader_url("alice"), "img_0001.png")[0] == 200
    finally:
        server.close()
    first = (answers / "alice.csv").read_text().splitlines()
    assert first[:2] == [version_line(load_study(study).study_id, "alice"), "image,answer,response_time_ms,timestamp"]

    # answers given to another study (same image names, other images): never mixed with this study's key
    (answers / "bob.csv").write_bytes(b"# vulnbench reader answers v2; study=feedfeedfeedfeed; reader=bob\n"
                                      + V1_HEADER + _rows(1))
    with pytest.raises(DataError, match=r"bob\.csv holds answers to another study \(study=feedfeedfeedfeed\)"):
        read_answers(study, answers)
    with pytest.raises(DataError, match="another study"):
        serve(study, "bob")
    (answers / "bob.csv").write_bytes(b"# vulnbench reader answers v3; study=x\n" + V1_HEADER)
    with pytest.raises(DataError, match=r"bob\.csv line 1: answers format v3 is newer than this vulnbench reads"):
        read_answers(study, answers)


def test_duplicate_answers_of_two_servers_keep_the_first(study: Path, caplog) -> None:
    answers = study / "answers"
    answers.mkdir()
    # two servers (before the lock) appended for one reader: img_0002 twice, with different answers
    (answers / "alice.csv").write_bytes(V1_HEADER + _rows(1, 2) + ROW.format(2, 1, 9).encode() + b"\n" + _rows(3))
    with caplog.at_level(logging.WARNING):
        frame = read_answers(study, answers)
    assert frame["image"].tolist() == ["img_0001.png", "img_0002.png", "img_0003.png"]
    assert frame["answer"].tolist() == [1, 0, 1]  # the first answer to img_0002 (0), not the later 1
    assert "1 repeated answer(s) ignored, the first answer of each image counts: line 4 (img_0002.png)" in caplog.text
    server = serve(study, "alice")
    try:
        assert server.state("alice")["answered"] == 3 and any("repeated answer" in r for r in server.repairs)
    finally:
        server.close()


def test_one_server_per_reader(study: Path) -> None:
    first = serve(study, "alice")
    try:
        with pytest.raises(ConfigError, match=r"reader alice is already being served by another reader-study server "
                                              r"\(pid \d+.*\); stop that one first") as caught:
            serve(study, ["bob", "alice"])
        assert "\n" not in str(caught.value)
        assert not (study / "answers" / "bob.csv").exists()
        other = serve(study, "bob")  # another reader is fine
        other.close()
        link = first.reader_url("alice")
        assert _post(link, "img_0001.png")[0] == 200
    finally:
        first.close()
    again = serve(study, "alice")  # the lock goes with its server
    try:
        assert urlsplit(again.reader_url("alice")).path == urlsplit(link).path  # the same token (port 0: a new port)
        assert again.state("alice")["answered"] == 1
    finally:
        again.close()


# -- real server processes ------------------------------------------------------------------------------------------
class _Process:
    """`vulnbench reader-study serve` in a child process; its output is collected (a pipe: no file size limit)."""

    def __init__(self, study: Path, reader: str, fsize_limit: int | None = None) -> None:
        def limit() -> None:
            if fsize_limit is not None:  # a disk that is full after `fsize_limit` bytes (Python ignores SIGXFSZ)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vulnbench.cli", "reader-study", "serve", str(study), "--reader", reader,
             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit)
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def link(self, reader: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.findall(rf"{reader} \(\d+ of \d+ answered\): (http://127\.0\.0\.1:\d+/r/[\w-]+/)",
                               "".join(self.output))
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("server did not start: " + "".join(self.output))

    def wait(self) -> int:
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.wait()


def _same_token(new: str, old: str) -> str:
    """A restarted server (on a new free port) gives the reader the same link path."""
    assert urlsplit(new).path == urlsplit(old).path
    return new


def test_a_second_server_process_for_the_same_reader_is_refused(study: Path) -> None:
    first = _Process(study, "alice")
    try:
        link = first.link("alice")
        second = _Process(study, "alice")
        assert second.wait() == 1
        errors = [line for line in second.output if line.startswith("vulnbench error")]
        assert len(errors) == 1 and "reader alice is already being served by another reader-study server" in errors[0]
        assert f"pid {first.process.pid}" in errors[0] and "Traceback" not in "".join(second.output)
        assert _post(link, "img_0001.png")[0] == 200  # the first server is unaffected
    finally:
        first.kill()


def test_disk_full_mid_answer_loses_nothing_acknowledged(study: Path) -> None:
    answers = study / "answers" / "alice.csv"
    acknowledged = []
    server = _Process(study, "alice")
    try:
        link = server.link("alice")
        for image in ("img_0001.png", "img_0002.png"):
            assert _post(link, image)[0] == 200
            acknowledged.append(image)
    finally:
        server.kill()
    whole = answers.read_bytes()

    # restart on a disk with room for 20 more bytes: the third answer (~55 bytes) is written half, then fails
    server = _Process(study, "alice", fsize_limit=len(whole) + 20)
    try:
        link = _same_token(server.link("alice"), link)
        for _ in range(2):
            status, reply = _post(link, "img_0003.png", "malignant")
            assert status == 507 and "this answer was NOT saved (File too large)" in reply["error"]
            assert answers.read_bytes() == whole  # cut back: no half line for the next answer to land on
    finally:
        server.kill()

    server = _Process(study, "alice")  # room again: the same answer goes through, nothing needed repair
    try:
        link = _same_token(server.link("alice"), link)
        assert "repaired" not in "".join(server.output)
        assert _post(link, "img_0003.png", "malignant")[0] == 200
        acknowledged.append("img_0003.png")
    finally:
        server.kill()
    frame = read_answers(study, study / "answers")
    assert frame["image"].tolist() == acknowledged and frame["answer"].tolist() == [0, 0, 1]


def test_a_server_started_on_a_torn_file_prints_the_repair(study: Path) -> None:
    answers = study / "answers"
    answers.mkdir()
    (answers / "alice.csv").write_bytes(_v2(study) + _rows(1) + b"img_0002.png,0,9")
    server = _Process(study, "alice")
    try:
        server.link("alice")
        printed = "".join(server.output)
        assert re.search(r"repaired: \S+alice\.csv: cut off a torn last line \(16 bytes, never acknowledged: "
                         r"'img_0002\.png,0,9'\); kept in alice\.csv\.torn", printed), printed
    finally:
        server.kill()
    assert (answers / "alice.csv").read_bytes() == _v2(study) + _rows(1)
