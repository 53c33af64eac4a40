"""The `tunewiz` command: the wizard with no arguments, headless subcommands otherwise.

Each subcommand lives in its own module with a `register(subparsers)` function
that adds its parser and sets `func`. Modules import nothing heavy at the top:
`tunewiz estimate` must answer without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from tunewiz import __version__
from tunewiz.core.errors import UserError

COMMAND_MODULES = (
    "tunewiz.cli.estimate",
    "tunewiz.cli.data",
    "tunewiz.cli.train",
    "tunewiz.cli.chat",
    "tunewiz.cli.eval",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or just `only` (the one being run: the others' modules stay unimported,
    which keeps `tunewiz estimate` fast)."""
    parser = argparse.ArgumentParser(
        prog="tunewiz",
        description="Fine-tune language models from the terminal. "
        "Run without arguments to open the wizard.",
    )
    parser.add_argument("--version", action="version", version=f"tunewiz {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show debug logs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only and name != f"tunewiz.cli.{only}":
            continue
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["train"], ["resume"]):
        # First thing: a terminal hanging up must not stop a start half-way (the worker it
        # starts is detached; --foreground restores SIGHUP before following the log).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not argv:
        from tunewiz.tui.app import run_app

        return run_app() or 0
    parser = build_parser(only=argv[0] if f"tunewiz.cli.{argv[0]}" in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except UserError as exc:
        print_user_error(exc)
        return 2
    except KeyboardInterrupt:
        return 130


def print_user_error(exc: UserError) -> None:
    from rich.console import Console
    from rich.text import Text

    from tunewiz.core.text import visible

    console = Console(stderr=True)
    text = Text("error: ", style="bold red")
    text.append(visible(str(exc)))  # plain text, never markup; controls shown escaped
    console.print(text)


if __name__ == "__main__":
    sys.exit(main())
