"""The `saereg` command line: the entry point and its error boundary.

Exit codes: 0 ok, 1 failure, 2 bad usage or a reference/value that names nothing.

Commands live in one module per group (`saereg.cli.lookup`, `.weights`, ...), each adding
its parsers through a `PARSERS` table. Only the module of the command being run is
imported (as pip does with its commands table), so `saereg resolve` stays a short-lived
process that imports neither torch, yaml nor the plugins, and `saereg --help` imports no
command at all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from saereg.base.errors import SaeregError
from saereg.base.version import __version__
from saereg.catalogue.refs import close_matches
from saereg.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

#: command → (module of saereg.cli that implements it, the one line `--help` shows).
COMMANDS: dict[str, tuple[str, str]] = {
    "resolve": ("lookup", "print everything the catalogue knows about one SAE"),
    "fetch": ("weights", "download and convert one SAE; print the canonical file's path"),
    "export": ("weights", "write an SAE in another library's layout"),
    "inspect": ("weights", "config and tensor shapes of a canonical file"),
    "list": ("lookup", "list SAEs of the whole catalogue, filtered"),
    "info": ("lookup", "summarise one release"),
    "models": ("lookup", "list the models the catalogue knows: names, hub ids, families, shapes"),
    "validate": ("release_files", "check release files: schema, then a reviewer's lints"),
    "docs": ("publish", "regenerate the markdown catalogue from the release files"),
    "detect": ("detect", "which format a folder, file or hub repository holds; a release snippet"),
    "new": ("publish", "scaffold a release file from a repository's file listing"),
    "sync-check": ("publish", "compare releases with their repositories"),
    "migrate": ("release_files", "rewrite release files in the current schema version"),
    "cache": ("cache", "list, verify, prune or remove saereg's cached SAEs"),
    "plugins": ("plugins", "list installed plugins and their formats"),
    "import": ("publish", "import an upstream catalogue into release files"),
    "refresh": ("refresh", "merge a newer upstream catalogue into the release files"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (argparse prints the whole usage block otherwise)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of a command line: the first argument that is not an option
    (the top-level options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for `argv`: only the command `argv` names, with its arguments (and only
    its module imported); without one (``--help``, a typo), every command is listed."""
    parser = _Parser(
        prog="saereg",
        description="Registry and format-conversion hub for pretrained sparse autoencoders.",
        epilog="References: RELEASE/SAE_ID, a Neuronpedia id (gpt2-small/8-res-jb), "
        "hf:ORG/REPO[@REVISION]/PATH (any repository), or a local folder or file (./x, /x, "
        "~/x). Exit codes: 0 ok, 1 failure, 2 bad usage or unknown reference.",
    )
    parser.add_argument("--version", action="version", version=f"saereg {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of a failure (also {DEBUG_ENV}=1); may be given "
        "anywhere on the command line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = _command_in(argv)
    if chosen in COMMANDS:
        # Only that command's parser: the others would never run, and each costs argparse
        # ~0.5 ms of gettext lookups (a tenth of `saereg resolve`).
        module, summary = COMMANDS[chosen]
        importlib.import_module(f"saereg.cli.{module}").PARSERS[chosen](sub, summary)
        return parser
    if chosen is not None:  # a word that names no command: say which ones are close
        near = close_matches(chosen, COMMANDS)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        parser.error(f"no command {chosen!r}.{hint} Commands: {', '.join(COMMANDS)}")
    for name, (_, summary) in COMMANDS.items():  # --help, or no command at all
        sub.add_parser(name, help=summary)
    return parser


# --------------------------------------------------------------------------- errors

DEBUG_ENV = "SAEREG_DEBUG"
#: The longest message printed; the rest is cut (a one-line message stays readable).
MAX_MESSAGE = 2000


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The message and exit code for a failure that reached the top of a command."""
    if isinstance(exc, SaeregError):
        return str(exc), exc.exit_code
    if isinstance(exc, NotImplementedError):
        return str(exc) or "not supported yet", EXIT_FAILURE
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = " (check SAEREG_CACHE, SAEREG_RELEASES and the paths given)" if where else ""
        return (f"{where}: {reason}{hint}" if where else reason), EXIT_FAILURE
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8",
            EXIT_FAILURE,
        )
    if isinstance(exc, MemoryError):
        return "out of memory", EXIT_FAILURE
    if isinstance(exc, RecursionError):
        return "input nested too deeply to process", EXIT_FAILURE
    return (
        f"internal error: {type(exc).__name__}: {exc}. Run with --debug (or {DEBUG_ENV}=1) "
        "for the traceback, and please report it",
        EXIT_FAILURE,
    )


@contextmanager
def _warnings_as_lines(prefix: str) -> Iterator[None]:
    """Warnings (e.g. a release file left out of the catalogue) as one line each."""

    def show(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"{prefix}: warning: {one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():  # the filters stay as they are; only the printing changes
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends in one line on stderr and an exit code
    (0 ok, 1 failure, 2 bad usage or unknown reference); --debug shows the traceback."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    args_list = [a for a in args_list if a != "--debug"]
    chosen = _command_in(args_list)
    prefix = f"saereg {chosen}" if chosen else "saereg"
    try:
        # Inside the boundary: building the parser imports the command's module.
        args = build_parser(args_list).parse_args(args_list)
        with _warnings_as_lines(prefix):
            return int(args.func(args))
    except BrokenPipeError:  # `saereg list | head`
        return EXIT_OK
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message, code = describe_failure(exc)
        print(f"{prefix}: {one_line(message)}", file=sys.stderr)
        return code
