"""``topoipam [--datastore URL] COMMAND ...``: the command-line entry point.

Commands live in modules listed in ``COMMAND_MODULES``; each has
``register(subparsers)`` adding its sub-commands with
``set_defaults(run=function)``, where ``run(args, ctx) -> int``. Adding a
command module is one line in that tuple.

This is the ONE place where errors become exit codes: a ``TopoipamError``
prints its message on stderr and exits with its ``exit_code`` (0 ok, 1
operation failed, 2 usage or validation, 3 datastore unavailable); a usage
error from argparse exits 2. Results go to stdout, errors to stderr. An
unexpected exception (a bug) still shows its traceback.

Global options (``--datastore``, ``-c/--config``) are accepted before or after
the verb, as calicoctl's are; ``cli/datastore.py`` decides which datastore they
name. A mistyped verb, sub-command or kind gets "did you mean".

Start-up stays lean: argparse and the stdlib only here; each command imports
what it needs (PyYAML only for YAML in or out).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from topoipam.cli.datastore import CALICOCTL_CFG
from topoipam.errors import EXIT_USAGE, TopoipamError, ValidationError

COMMAND_MODULES = (
    "topoipam.cli.resources",  # create apply replace delete get patch label
    "topoipam.cli.init",  # init
    "topoipam.cli.agent",  # agent
    "topoipam.cli.ipam",  # ipam show/check/release/configure/split/assign
    "topoipam.cli.insights",  # ipam coverage/explain/headroom/drift (after cli.ipam)
    "topoipam.cli.ipam_map",  # ipam map (after cli.ipam)
    "topoipam.cli.demo",  # demo
    "topoipam.cli.version",  # version, completion
    "topoipam.cli.metrics",  # metrics serve
)


class UsageError(ValidationError):
    """The command line itself is wrong (exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors map to exit codes in one place.

    Every sub-command parser also takes the global options (``suppress`` keeps a sub-command from
    resetting what was given before the verb), so ``topoipam get ippool --datastore URL`` works.
    """

    def __init__(self, *args, global_defaults: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_global_options(self, None if global_defaults else argparse.SUPPRESS)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}. Use '{self.prog} --help' to read about this command.")

    def _check_value(self, action, value):  # argparse's hook for choices: add "did you mean"
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            raise argparse.ArgumentError(action, str(exc).partition(": ")[2] + did_you_mean(value, action.choices))


def add_global_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--datastore", metavar="URL", default=default,
                        help="sqlite:///path, etcd://host:port[,host:port], etcds://... or memory:// (default: "
                             "$TOPOIPAM_DATASTORE, else calicoctl's configuration, else a local SQLite file)")
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help=f"calicoctl's configuration file (CalicoAPIConfig; default {CALICOCTL_CFG} when it exists)")


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'get'?)`` for a close match among ``choices``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices or ()], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Context:
    """What a command needs from the edge: the datastore (opened on first use) and the streams."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._store = None

    def datastore(self, *, allow_default: bool = True):
        """Which datastore the options and environment name (``cli/datastore.py``)."""
        from topoipam.cli.datastore import resolve

        return resolve(self.args.datastore, self.args.config, os.environ, allow_default=allow_default)

    @property
    def store(self):
        if self._store is None:
            from topoipam.cli.datastore import announce_if_new
            from topoipam.store import open_store

            choice = self.datastore()
            announce_if_new(choice, self.err)
            self._store = open_store(choice.url, choice.config)
        return self._store

    @property
    def out(self):
        return sys.stdout

    @property
    def err(self):
        return sys.stderr

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def build_parser() -> Parser:
    from topoipam import __version__

    parser = Parser(prog="topoipam", description="Topology-aware IP address management (calicoctl-compatible).",
                    global_defaults=True)
    parser.add_argument("--version", action="version", version=f"topoipam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script passes it to sys.exit)."""
    ctx = None
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(args)
        return args.run(args, ctx)
    except TopoipamError as err:
        message = err.message.rstrip("\n")
        if message:
            print(message, file=sys.stderr)
        return err.exit_code
    except SystemExit as exc:  # --help, and argparse's own exits
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `topoipam get ippool | head -1`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush does not fail
        return 1
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
