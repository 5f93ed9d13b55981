"""`vulnbench reader-study …`: build, serve, simulate and analyse a reader study from the command line."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from vulnbench.core.errors import ConfigError, DataError, VulnbenchError
from vulnbench.reader.analysis import analyse_study, simulate_readers
from vulnbench.reader.app import run
from vulnbench.reader.study import build_study

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `reader-study` command group to a parent parser (the top-level `vulnbench` command)."""
    group = subparsers.add_parser("reader-study", help="blinded dermatologist reader study (build/serve/analyse)",
                                  description="Blinded reader study of clean vs adversarial dermoscopy images.")
    _add_commands(group)


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="reader_command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="sample, shuffle and anonymise images into a study directory")
    build.add_argument("--clean", required=True, type=Path, metavar="LIST",
                       help="CSV/TSV with columns path,label (label: melanoma or nevus)")
    build.add_argument("--adversarial", action="append", default=[], metavar="ATTACK=LIST",
                       help="attacked images of one attack, same format (repeatable)")
    build.add_argument("--out", required=True, type=Path,
                       help="study directory to create; one that holds readers' answers is never replaced")
    build.add_argument("--n-per-condition", required=True, type=int)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--image-size", type=int, default=None, help="resize every image to a square of this size")
    build.set_defaults(handler=_build)

    serve = commands.add_parser("serve", help="run the reader web app; prints each reader's personal link")
    serve.add_argument("study", type=Path, help="study directory (made by build) or the pipeline's study.json")
    serve.add_argument("--reader", required=True, action="append",
                       help="reader name: letters, digits, '_' or '-' (repeatable: one link per reader)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    serve.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    serve.add_argument("--answers", type=Path, default=None, help="answers directory (default STUDY/answers)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="another host name browsers use for this server (repeatable; checked in every request)")
    serve.add_argument("--request-timeout", type=float, default=20.0, metavar="SECONDS",
                       help="time a browser has to send a whole request (default 20)")
    serve.set_defaults(handler=_serve)

    simulate = commands.add_parser("simulate", help="write answers of simulated readers")
    simulate.add_argument("study", type=Path)
    simulate.add_argument("--answers", required=True, type=Path,
                          help="a folder of its own for the simulated readers (one holding real answers is refused)")
    simulate.add_argument("--readers", type=int, default=5)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--sensitivity", type=float, default=0.8)
    simulate.add_argument("--specificity", type=float, default=0.75)
    simulate.add_argument("--adversarial-effect", type=float, default=0.0,
                          help="shift of the log-odds of a correct answer on adversarial images")
    simulate.set_defaults(handler=_simulate)

    analyse = commands.add_parser("analyse", help="reader AUCs, effect test and figure")
    analyse.add_argument("study", type=Path)
    analyse.add_argument("--answers", required=True, type=Path)
    analyse.add_argument("--out", required=True, type=Path)
    analyse.add_argument("--n-boot", type=int, default=2000)
    analyse.add_argument("--seed", type=int, default=0)
    analyse.set_defaults(handler=_analyse)


def _read_image_list(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read image list {path}: {exc.strerror or exc}") from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix in (".tsv", ".tab") else ","))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DataError(f"image list {path} needs a header with columns path and label")
    base = path.parent
    return [(str(base / row["path"]), row["label"]) for row in rows]


def _build(args: argparse.Namespace) -> None:

    adversarial = {}
    for item in args.adversarial:
        name, sep, list_path = item.partition("=")
        if not sep or not name or not list_path:
            raise ConfigError(f"--adversarial expects ATTACK=LIST, got {item!r}")
        adversarial[name] = _read_image_list(Path(list_path))
    out = build_study(_read_image_list(args.clean), adversarial, args.out, args.n_per_condition, args.seed,
                      image_size=args.image_size)
    print(out)


def _serve(args: argparse.Namespace) -> None:

    run(args.study, args.reader, host=args.host, port=args.port, answers_dir=args.answers,
        allowed_hosts=args.allowed_host, request_timeout=args.request_timeout)


def _simulate(args: argparse.Namespace) -> None:

    simulate_readers(args.study, args.answers, n_readers=args.readers, seed=args.seed, sensitivity=args.sensitivity,
                     specificity=args.specificity, adversarial_effect=args.adversarial_effect)


def _analyse(args: argparse.Namespace) -> None:

    out = args.out
    table, test = analyse_study(args.study, args.answers, out / "reader_auc.tsv", out / "effect_test.tsv",
                                out / "effect_test.json", out / "reader_auc.png", out_answers=out / "answers.tsv",
                                n_boot=args.n_boot, seed=args.seed)
    pooled = table[(table["reader"] == "pooled")].set_index("condition_set")
    for condition_set in pooled.index:
        row = pooled.loc[condition_set]
        print(f"pooled {condition_set}: AUC {row['auc']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
              f"(n={row['n']})")
    print(f"adversarial: coef {test.coef_adversarial:+.3f}, p = {test.p_adversarial:.3g} ({test.n} answers, "
          f"{test.n_readers} readers)")


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command; expected errors become one line on stderr and exit status 1."""
    try:
        args.handler(args)
    except VulnbenchError as error:
        print(f"vulnbench error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`vulnbench-reader-study`-style entry point (the same commands as `vulnbench reader-study`)."""
    parser = argparse.ArgumentParser(prog="vulnbench reader-study", description=__doc__)
    _add_commands(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_parsed(args)


if __name__ == "__main__":
    sys.exit(main())
