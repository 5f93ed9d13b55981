"""Run a stage with its output in the rule's log file and expected errors as one line, not a traceback."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from vulnbench.core.errors import VulnbenchError


@contextlib.contextmanager
def logged_stage(log_path: str | Path | None) -> Iterator[None]:
    """Send logging, warnings and stderr (tqdm) to `log_path`; turn a VulnbenchError into exit 1 + one line."""
    original_stderr = sys.stderr
    handle = open(log_path, "a", buffering=1) if log_path else sys.stderr  # noqa: SIM115
    logging.basicConfig(level=logging.INFO, stream=handle, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    sys.stderr = handle
    try:
        yield
    except VulnbenchError as error:
        message = f"vulnbench error: {error}"
        print(message, file=handle)
        if handle is not original_stderr:
            print(message, file=original_stderr)
        raise SystemExit(1) from None
    finally:
        sys.stderr = original_stderr
        if handle is not original_stderr:
            handle.close()
