"""The `lolctl` command line. Commands stay thin: one module per command group, heavy imports inside commands.

`lolctl --help` imports neither torch nor any model code.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

from lolctl.cli.options import Group
from lolctl.errors import EXIT_INPUT, LolctlError

app = typer.Typer(
    name="lolctl",
    help=(
        "Score LoRA adapters from their weights alone: a health report for any adapter, and GL-equivariant "
        "predictions of quality, training-data attributes and membership (Learning on LoRAs, arXiv 2410.04207).\n\n"
        "stdout carries data only; progress, logs and hints go to stderr. Exit codes: 0 ok, 1 gate failed or "
        "findings at/above --fail-on, 2 usage or input error, 3 nothing scannable. Set LOLCTL_DEBUG=1 for tracebacks."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=True,  # --install-completion / --show-completion: typer imports its completion code anyway
    cls=Group,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from lolctl import __version__

        typer.echo(f"lolctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """lolctl"""


def _register() -> None:
    from lolctl.cli import commands

    commands.register(app)


def interrupted(message: str) -> NoReturn:
    """Ctrl-C: one line on stderr, exit 130. ``os._exit`` after flushing, without interpreter shutdown: worker
    threads may still be inside torch, and tearing the runtime down under them can abort the process (exit 134,
    "terminate called without an active exception"). Everything worth keeping is written and fsync'd before."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        print(message, file=sys.stderr, flush=True)
    finally:
        os._exit(130)


def main() -> None:
    _register()
    try:
        app(prog_name="lolctl")
    except LolctlError as err:
        if os.environ.get("LOLCTL_DEBUG"):
            raise
        print(err.one_line(), file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        interrupted("interrupted")
    except Exception as err:  # a bug: one line unless debugging
        if os.environ.get("LOLCTL_DEBUG"):
            raise
        print(
            f"error[L199 internal] {type(err).__name__}: {err} "
            "(this is a bug in lolctl; rerun with LOLCTL_DEBUG=1 for the traceback and report it)",
            file=sys.stderr,
        )
        sys.exit(EXIT_INPUT)
