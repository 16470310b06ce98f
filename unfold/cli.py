"""The ``unfold`` command line: one subcommand per module in :mod:`unfold.commands`.

Each command module exposes ``add_parser(subparsers)`` (which sets ``func`` on its parser)
and raises the library's exceptions for user mistakes; :func:`main` turns those (and argparse's
own) into one line on stderr and exit status 2, never a traceback. SIGTERM, what batch systems
send, is handled like Ctrl-C: the command stops, its temporary files go, it says so and exits
128 + the signal's number.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import typing
from collections.abc import Sequence
from importlib.metadata import version

from encoders.errors import EncoderError
from recon.errors import ReconError
from recon.event_topology import TopologyError
from unfold.errors import UnfoldError

__all__ = ["main"]

# In the order `unfold --help` lists them; a module missing here is a command not built yet.
COMMANDS = ("generate", "inspect", "train", "evaluate", "predict", "export", "sample", "report", "closure", "reweight", "unbias", "merge",
            "acceptance")


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line (``unfold CMD: error: ...``), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C."""


_signals: list[int] = []  # the signals this run received (Lightning turns ours into its own exit)


def _terminate(signum: int, frame: object) -> None:
    _signals.append(signum)
    raise _Terminated


def _user_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [UnfoldError, TopologyError, ReconError, EncoderError, FileNotFoundError]
    try:
        from evaluation.errors import ReportError

        errors.append(ReportError)
    except ImportError:
        pass
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unfold",
        description="Jet-parton assignment and generative unfolding of collider events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('unfold-suite')}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"unfold.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"unfold.commands.{name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _signals.clear()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "train" and not argv[1].startswith("-"):
        # `unfold train TASK ...` is parsed by the task's own jsonargparse parser (its --help too).
        from unfold.commands.train import run_task

        command, run = f"train {argv[1]}", lambda: run_task(argv[1], argv[2:])
    else:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:
            if done.code:  # a usage error, already printed as one line
                return int(done.code)
            raise  # --help and --version end the program as argparse means them to
        command, run = args.command, lambda: args.func(args)
    try:
        return int(run() or 0)
    except _user_errors() as error:
        print(f"unfold {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the system refused a path (name too long, disk full, read-only)
        where = f"{error.filename}: " if error.filename else ""
        print(f"unfold {command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # A training says which checkpoint to resume from (TrainingInterrupted's message).
        detail = f"; {interrupt}" if str(interrupt) else ""
        number = signal.SIGTERM if _signals else signal.SIGINT
        print(f"unfold {command}: interrupted by {signal.Signals(number).name}{detail}", file=sys.stderr)
        return 128 + number


if __name__ == "__main__":
    sys.exit(main())
