"""Options shared by several commands, as Annotated aliases (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class EngineName(str, Enum):
    local = "local"
    ray = "ray"


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
HealthOnlyOpt = Annotated[
    bool, typer.Option("--health-only", help="Skip predictions: the health report only (no checkpoint is loaded).")
]
MaxBytesOpt = Annotated[
    str | None,
    typer.Option("--max-bytes", metavar="SIZE", help="Refuse adapters whose tensors exceed this size: a number of "
                 "bytes or a size with a unit (10MB, 1.5GiB; kB/MB/GB/TB: powers of 1000, KiB/MiB/GiB/TiB: 1024)."),
]
EngineOpt = Annotated[
    EngineName, typer.Option("--engine", help="Where the work runs: threads/processes of this machine (local), or a "
                             "Ray cluster (ray; needs lolctl[ray], docs/scale.md).")
]
RayAddressOpt = Annotated[
    str | None, typer.Option("--ray-address", metavar="ADDR", envvar="RAY_ADDRESS", help="With --engine ray: the "
                             "cluster to join (host:port, ray://host:10001); none starts a local Ray for the run.")
]
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | None, option: str = "--max-bytes") -> int | None:
    """``"10MB"`` → 10_000_000, ``"1.5GiB"`` → 1_610_612_736, ``"4096"`` → 4096; None stays None. Zero, negative
    and malformed sizes are usage errors (L180)."""
    if text is None:
        return None
    import math
    import re

    from lolctl.errors import LolctlError

    m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise LolctlError("L180", f"{option} {text}", "not a size",
                          "give a positive number of bytes, or a size with a unit: 10MB, 512MiB, 1.5GiB")
    value = float(m.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise LolctlError("L180", f"{option} {text}", "the size must be at least 1 byte", "e.g. 10MB or 1.5GiB")
    return int(value)


HtmlOpt = Annotated[
    Path | None,
    typer.Option("--html", metavar="FILE", help="Also write a self-contained HTML report here (opens offline in a "
                 "browser: summary, findings, predictions, spectra, duplicates)."),
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
        _tidy_params(self.get_params(ctx))
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """The same for ``lolctl --help`` itself (``--version``, ``--install-completion``, ``--show-completion``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _tidy_params(self.get_params(ctx))
        super().format_help(ctx, formatter)


def _tidy_params(params: list[Any]) -> None:
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif getattr(param, "param_type_name", "") == "argument":
            if param.metavar is None and param.name:
                name = param.name.upper()
                param.metavar = name[:-1] if name.endswith("S") and param.nargs != 1 else name
            param.display_type_rich = _no_type  # type: ignore[method-assign, union-attr]
        elif getattr(param, "multiple", False) and param.metavar is None and param.name:
            param.metavar = param.name.upper()  # a repeatable option: its value, not list[str]


def _no_type(ctx: Any = None) -> None:
    return None
TriageOpt = Annotated[
    bool,
    typer.Option("--triage/--no-triage", help="Hub: read safetensors headers (ranged reads) before downloading."),
]
