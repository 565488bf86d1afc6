"""Shared helpers for in-process CLI tests."""

from __future__ import annotations

from typer.testing import CliRunner

from lolctl.errors import LolctlError


def cli_app():
    """The `lolctl` Typer app with every command registered."""
    from lolctl.cli import _register, app

    _register()
    return app


def invoke(args: list[str]):
    """Run `lolctl ARGS` in-process: (exit code as `main()` would give it, result)."""
    res = CliRunner().invoke(cli_app(), args)
    if isinstance(res.exception, LolctlError):
        return res.exception.exit_code, res
    return res.exit_code, res
