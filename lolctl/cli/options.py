"""Options shared by several commands, as Annotated aliases (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer
from typer.core import TyperCommand


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class SeverityLevel(str, Enum):
    info = "info"
    warning = "warning"
    error = "error"
    never = "never"


FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="Output on stdout: a Rich table, or data (json, jsonl, csv).")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where models run: auto picks cuda when available.")]
TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle",
        help="Allow legacy .bin (pickle) weights, loaded with torch.load(weights_only=True). Off by default.",
    ),
]
FailOnOpt = Annotated[
    SeverityLevel,
    typer.Option("--fail-on", help="Exit 1 when any finding is at or above this severity ('never' to disable)."),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="A checkpoint folder, a built-in name under models/, or a Hub repo id. Default: chosen by base model.",
    ),
]


class Command(TyperCommand):
    """Help without Python type names: recent Typer prints ``<bool>`` beside every flag (``--help`` included) and
    ``<list[str]>`` beside list arguments. Flags get an empty metavar, arguments an upper-case name (``SOURCE...``)
    and no type column. Only documented attributes are set (``metavar``); on Typer versions that show no type
    column the override is simply unused."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif getattr(param, "param_type_name", "") == "argument":
                if param.metavar is None and param.name:
                    name = param.name.upper()
                    param.metavar = name[:-1] if name.endswith("S") and param.nargs != 1 else name
                param.display_type_rich = _no_type  # type: ignore[method-assign, union-attr]
            elif getattr(param, "multiple", False) and param.metavar is None and param.name:
                param.metavar = param.name.upper()  # a repeatable option: its value, not list[str]
        super().format_help(ctx, formatter)


def _no_type(ctx: Any = None) -> None:
    return None
