"""The `vulnbench` command: a small dispatcher; each command group lives beside the code it drives."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vulnbench import __version__, runner
from vulnbench.reader import cli as reader_cli
from vulnbench.reader.cli import run_parsed


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(prog="vulnbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vulnbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reader_cli.register(commands)
    runner.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn a VulnbenchError into one line "vulnbench error: …" and exit status 1."""

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # `run` passes the options it does not know on to Snakemake
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.snakemake_args = extra
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_parsed(args)


if __name__ == "__main__":
    sys.exit(main())
