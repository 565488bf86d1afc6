"""Options shared by several commands, as Annotated aliases (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


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
