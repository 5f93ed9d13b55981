"""One reader's answers file: its format, a forgiving reader, and the single writer a server holds per reader.

The file is the only copy of a clinician's hour of work, so it is read defensively and written by one process at a
time. Format v2 (a versioned first line, then the columns)::

    # vulnbench reader answers v2; study=<study id>; reader=<name>
    image,answer,response_time_ms,timestamp
    img_0001.png,1,1234.6,2024-05-01T10:00:00.000+00:00

Also read: v1 (the same columns without the version line) and the original PyQt app's export (Image_name,Diagnosis).
A torn last line (disk full, power cut: never acknowledged to the browser) is reported and left out by readers and cut
off (kept aside in <reader>.csv.torn) by the writer; a missing final newline is added by the writer before it appends;
an image answered twice (two servers for one reader, before the lock existed) keeps its first answer and is reported.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from vulnbench.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: columns of the app's format (v1 and v2); answer 0 = benign, 1 = malignant (as the original app)
ANSWER_COLUMNS = ("image", "answer", "response_time_ms", "timestamp")
#: the original PyQt app's export (thelynchlab/dermoscopy-app): no times
ORIGINAL_ANSWER_COLUMNS = ("Image_name", "Diagnosis")
ANSWER_VALUES = {"benign": 0, "malignant": 1}
#: the version this code writes; files of a newer version are refused rather than misread
FORMAT_VERSION = 2
VERSION_PREFIX = "# vulnbench reader answers v"
#: a folder of simulated readers carries this file: no real reader's server writes there (the pipeline rewrites it)
SIMULATED_MARKER = ".simulated"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")


def version_line(study_id: str, reader: str, simulated: bool = False) -> str:
    """The first line of a v2 file: which format, which study (answers must never meet another study's key)."""
    return f"{VERSION_PREFIX}{FORMAT_VERSION}; study={study_id}; reader={reader}" + ("; simulated=yes" * simulated)


def _parse_version_line(line: str, where: str) -> tuple[int, dict[str, str]]:
    match = re.fullmatch(re.escape(VERSION_PREFIX) + r"(\d{1,4})((?:; *[a-z_]+=[A-Za-z0-9_.-]*)*) *", line)
    if match is None:
        raise DataError(f"{where}: unreadable version line {line[:80]!r}")
    version = int(match.group(1))
    if version > FORMAT_VERSION:
        raise DataError(f"{where}: answers format v{version} is newer than this vulnbench reads (v{FORMAT_VERSION}); "
                        "upgrade vulnbench")
    meta = dict(item.strip().split("=", 1) for item in match.group(2).split(";") if item.strip())
    return version, meta


@dataclass(frozen=True)
class AnswerFile:
    """A parsed answers file plus what reading it found wrong (and what a writer must repair before appending)."""

    path: Path
    #: image, answer (0/1), response_time_ms (NaN for the original app), timestamp (None for the original app)
    frame: pd.DataFrame
    #: 2 = versioned, 1 = app columns without version line, 0 = original app export, None = empty file
    version: int | None
    #: the column header, None while the file has none yet
    columns: tuple[str, ...] | None
    #: key=value pairs of the version line (study, reader, simulated)
    meta: dict[str, str]
    #: bytes of the whole lines (a writer appends after them)
    valid_size: int
    #: an unfinished last line (no newline, does not parse), left out of `frame`
    torn: bytes | None = None
    #: the last line is whole but lacks its newline (a writer adds it before appending)
    missing_newline: bool = False
    #: (line number, image) of repeated answers, dropped (the first answer of an image counts)
    duplicates: tuple[tuple[int, str], ...] = ()
    has_version_line: bool = False

    @property
    def simulated(self) -> bool:
        return self.meta.get("simulated") == "yes"

    @property
    def torn_preview(self) -> str:
        return "" if self.torn is None else repr(self.torn[:60].decode("utf-8", "replace"))

    def problems(self, torn: bool = True) -> list[str]:
        """One sentence per thing that reading had to work around, for logs and the server's start-up report."""
        found = []
        if torn and self.torn is not None:
            found.append(f"{self.path}: torn last line ({len(self.torn)} bytes, never acknowledged) left out: "
                         f"{self.torn_preview}")
        if self.duplicates:
            lines = ", ".join(f"line {n} ({image})" for n, image in self.duplicates[:3])
            found.append(f"{self.path}: {len(self.duplicates)} repeated answer(s) ignored, the first answer of each "
                         f"image counts: {lines}")
        return found


def parse_answers(data: bytes, path: str | Path, known_images: set[str] | frozenset[str],
                  study_id: str | None = None) -> AnswerFile:
    """Parse an answers file's bytes, checked line by line so that an error names the file and the line.

    Whole lines must be valid (an error is a DataError naming the line); only the last line, when it has no
    newline and does not parse, counts as torn.
    """
    path = Path(path)
    cut = data.rfind(b"\n") + 1
    body, tail = data[:cut], data[cut:]
    try:
        text = body.decode("utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not part of the header
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read answers file {path}: not UTF-8 (byte {exc.start})") from None
    parser = _Parser(path, known_images, study_id)
    lines = text.split("\n")[:-1] if text else []
    for number, line in enumerate(lines, start=1):
        parser.feed(number, line.removesuffix("\r"))
    torn, missing_newline = None, False
    if tail.strip():
        try:
            last = tail.decode("utf-8" if body else "utf-8-sig")
            if last.startswith("#"):  # a version line is always followed by more: alone at the end it is unfinished
                raise DataError("unfinished version line")
            parser.feed(len(lines) + 1, last.removesuffix("\r"))
            missing_newline = True
        except (UnicodeDecodeError, DataError):
            torn = tail
    elif tail:  # whitespace only after the last newline: harmless, but a writer must not append after it
        missing_newline = True
    return AnswerFile(path=path, frame=parser.frame(), version=parser.version, columns=parser.columns,
                      meta=parser.meta, valid_size=cut if torn is not None else len(data), torn=torn,
                      missing_newline=missing_newline, duplicates=tuple(parser.duplicates),
                      has_version_line=parser.has_version_line)


@dataclass
class _Parser:
    path: Path
    known: set[str] | frozenset[str]
    study_id: str | None
    version: int | None = None
    columns: tuple[str, ...] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    has_version_line: bool = False
    rows: list[dict[str, object]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    duplicates: list[tuple[int, str]] = field(default_factory=list)

    def feed(self, number: int, line: str) -> None:
        """Take one line; a line that raises has changed nothing (so a torn last line can be dropped)."""
        where = f"{self.path} line {number}"
        if not line.strip():
            return
        if self.columns is None and not self.has_version_line and line.startswith(VERSION_PREFIX):
            self.version, self.meta = _parse_version_line(line, where)
            self.has_version_line = True
            theirs = self.meta.get("study")
            if self.study_id is not None and theirs and theirs != self.study_id:
                raise DataError(f"{self.path} holds answers to another study (study={theirs}), not this one "
                                f"(study={self.study_id}): was the study rebuilt? use the study they belong to")
            return
        fields = next(csv.reader([line]))
        if self.columns is None:
            header = tuple(fields)
            if header == ANSWER_COLUMNS or (header == ORIGINAL_ANSWER_COLUMNS and not self.has_version_line):
                self.columns = header
                if self.version is None:
                    self.version = 0 if header == ORIGINAL_ANSWER_COLUMNS else 1
                return
            raise DataError(f"{where}: header {','.join(fields)!r}, expected {','.join(ANSWER_COLUMNS)!r}")
        self._row(where, number, fields)

    def _row(self, where: str, number: int, fields: list[str]) -> None:
        assert self.columns is not None
        if len(fields) != len(self.columns):
            raise DataError(f"{where}: {len(fields)} fields, expected {len(self.columns)}")
        image, answer = fields[0], fields[1]
        if image not in self.known:
            raise DataError(f"{where}: image {image[:80]!r} is not in the study")
        if answer not in ("0", "1"):
            raise DataError(f"{where}: answer {answer[:20]!r} is not 0 (benign) or 1 (malignant)")
        response_time: float = math.nan
        timestamp: str | None = None
        if self.columns == ANSWER_COLUMNS:
            try:
                response_time = float(fields[2])
                stamp = datetime.fromisoformat(fields[3])
            except ValueError:
                raise DataError(f"{where}: bad response time {fields[2][:30]!r} or timestamp "
                                f"{fields[3][:40]!r}") from None
            if not math.isfinite(response_time) or response_time < 0 or stamp.tzinfo is None:
                raise DataError(f"{where}: response time must be ≥ 0 and the timestamp carry a time zone")
            timestamp = fields[3]
        if image in self.seen:
            self.duplicates.append((number, image))
            return
        self.seen[image] = number
        self.rows.append({"image": image, "answer": int(answer), "response_time_ms": response_time,
                          "timestamp": timestamp})

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in ANSWER_COLUMNS})
        return pd.DataFrame(self.rows, columns=list(ANSWER_COLUMNS))


def read_answer_file(path: str | Path, known_images: set[str] | frozenset[str],
                     study_id: str | None = None) -> AnswerFile:
    """Read and parse one answers file without changing it; what had to be worked around is logged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read answers file {path}: {exc.strerror or exc}") from None
    parsed = parse_answers(data, path, known_images, study_id)
    for problem in parsed.problems():
        log.warning("%s", problem)
    return parsed


def read_reader_csv(path: str | Path, known_images: set[str] | frozenset[str],
                    study_id: str | None = None) -> pd.DataFrame:
    """One reader's answers (columns image, answer, response_time_ms, timestamp); an empty file means none yet."""
    return read_answer_file(path, known_images, study_id).frame


def is_simulated_folder(folder: Path) -> bool:
    return (folder / SIMULATED_MARKER).exists()


class AnswerLog:
    """The one writer of <answers>/<reader>.csv while a server runs.

    `open()` takes the reader's lock (fcntl.flock on <answers>/.<reader>.lock, held until `close()`; the kernel drops
    it when the process dies), repairs the file's tail once, and reads which images are answered. `append()` writes
    one answer with a single write and an fsync; if the write fails half-way (disk full) the file is cut back to its
    last whole line, so a failed answer leaves no trace and the browser is told it was not saved.
    """

    def __init__(self, answers_dir: Path, reader: str, study_id: str, known_images: frozenset[str]) -> None:
        self.answers_dir = Path(answers_dir)
        self.reader = reader
        self.study_id = study_id
        self.known = known_images
        self.path = self.answers_dir / f"{reader}.csv"
        self.lock_path = self.answers_dir / f".{reader}.lock"
        self.token_path = self.answers_dir / f".{reader}.token"
        self.answered: set[str] = set()
        self.repairs: list[str] = []
        self.token = ""
        self._lock_fd: int | None = None
        self._columns: tuple[str, ...] | None = None
        self._needs_version_line = True

    # -- lifetime ----------------------------------------------------------------------------------------------------
    def open(self) -> AnswerLog:
        if is_simulated_folder(self.answers_dir):
            raise ConfigError(f"{self.answers_dir} is a folder of simulated readers (rewritten by the pipeline): real "
                              "answers go to the study's own answers folder (the default of --answers)")
        try:
            self.answers_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create answers folder {self.answers_dir}: {exc.strerror or exc}") from None
        self._lock()
        try:
            self.token = self._load_token()
            self._repair_and_load()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"cannot lock {self.lock_path}: {exc.strerror or exc}") from None
            raise ConfigError(f"reader {self.reader} is already being served by another reader-study server "
                              f"({holder or 'unknown process'}); stop that one first: one server per reader keeps "
                              f"{self.path} whole") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, lock {self.lock_path}\n".encode())
        self._lock_fd = fd

    def _load_token(self) -> str:
        """The reader's link secret: made once and kept beside the answers, so a restarted server keeps the link."""
        try:
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            token = self.token_path.read_text(encoding="ascii", errors="replace").strip()
            if not _TOKEN.fullmatch(token):
                raise DataError(f"{self.token_path} holds no reader token; delete it to make a new link") from None
            return token
        token = secrets.token_urlsafe(24)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return token

    def _repair_and_load(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        parsed = parse_answers(data, self.path, self.known, self.study_id)
        if parsed.simulated:
            raise ConfigError(f"{self.path} holds a simulated reader's answers; serve real readers into another "
                              "answers folder")
        self.repairs.extend(parsed.problems(torn=False))
        if parsed.torn is not None:
            aside = self.path.with_name(self.path.name + ".torn")
            with open(aside, "ab") as handle:
                handle.write(parsed.torn + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            with open(self.path, "r+b") as handle:
                handle.truncate(parsed.valid_size)
                handle.flush()
                os.fsync(handle.fileno())
            self.repairs.append(f"{self.path}: cut off a torn last line ({len(parsed.torn)} bytes, never "
                                f"acknowledged: {parsed.torn_preview}); kept in {aside.name}")
        elif parsed.missing_newline:
            self._write(b"\n")
            self.repairs.append(f"{self.path}: added the missing newline after the last answer")
        for repair in self.repairs:
            log.warning("%s", repair)
        self._columns = parsed.columns
        self._needs_version_line = parsed.columns is None and not parsed.has_version_line
        self.answered = set(parsed.frame["image"])
        if parsed.version in (0, 1):
            log.info("%s is in an older format (v%d): new answers are appended in that format", self.path,
                     parsed.version)

    # -- writing -----------------------------------------------------------------------------------------------------
    def append(self, image: str, answer: int, response_time_ms: float, timestamp: str) -> None:
        """Append one answer durably (one write, fsync), in the file's own format; header lines come with the first."""
        if self._lock_fd is None:
            raise ConfigError(f"answers of {self.reader} are not open for writing")
        buffer = io.StringIO()
        if self._needs_version_line:
            buffer.write(version_line(self.study_id, self.reader) + "\n")
        writer = csv.writer(buffer, lineterminator="\n")
        if self._columns is None:
            writer.writerow(ANSWER_COLUMNS)
        columns = self._columns or ANSWER_COLUMNS
        if columns == ORIGINAL_ANSWER_COLUMNS:
            writer.writerow([image, answer])
        else:
            writer.writerow([image, answer, f"{response_time_ms:.1f}", timestamp])
        self._write(buffer.getvalue().encode("utf-8"))
        self._needs_version_line = False
        self._columns = columns
        self.answered.add(image)

    def _write(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:  # leave no half line behind: the next answer must start on a line of its own
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                except OSError as exc:
                    log.error("could not cut %s back to %d bytes: %s", self.path, start, exc)
                raise
        finally:
            os.close(fd)
        if created:  # make the new directory entry durable too
            directory = os.open(self.answers_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
