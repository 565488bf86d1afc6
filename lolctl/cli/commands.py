"""Which command modules make up the CLI. Each module exposes ``register(app)``; a module not yet written is
skipped, so command groups can land one at a time."""

from __future__ import annotations

import importlib

import typer

MODULES = [
    "lolctl.cli.inspect",  # lolctl inspect
    "lolctl.cli.score",  # lolctl score
    "lolctl.cli.scan",  # lolctl scan
    "lolctl.cli.gate",  # lolctl gate
    "lolctl.cli.diff",  # lolctl diff
    "lolctl.cli.report",  # lolctl report FILE --html OUT
    "lolctl.cli.train",  # lolctl train / lolctl eval
    "lolctl.cli.zoo",  # lolctl zoo build / info
]


def register(app: typer.Typer) -> None:
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(app)
    _tidy_help(app)


def _tidy_help(app: typer.Typer) -> None:
    """Every command renders its help through :class:`lolctl.cli.options.Command` (no ``<bool>`` type names)."""
    from typer.core import TyperCommand

    from lolctl.cli.options import Command

    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _tidy_help(group.typer_instance)
