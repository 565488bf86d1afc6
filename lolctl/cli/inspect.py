"""`lolctl inspect`: read adapters and report their health (works for every base model, no checkpoint needed)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lolctl.cli.options import FailOnOpt, Format, FormatOpt, SeverityLevel, TrustPickleOpt

SCHEMA = "lolctl.inspect/v1"  # the --format json document
RECORD_SCHEMA = "lolctl.inspect-record/v1"  # each adapter entry (the --format jsonl lines)

EPILOG = """
[bold]Examples[/bold]

  lolctl inspect ./my-adapter                     [dim]# a PEFT folder: summary, findings, modules[/dim]
  lolctl inspect lora.safetensors --modules       [dim]# a kohya/diffusers file, every module listed[/dim]
  lolctl inspect runs/*/adapter --format json     [dim]# machine-readable (schema: docs/schema.md)[/dim]
  lolctl inspect ./adapter --fail-on warning      [dim]# exit 1 on any warning or error finding[/dim]
"""


def inspect(
    sources: Annotated[list[str], typer.Argument(help="Adapter folders, weight files or globs.", show_default=False)],
    fmt: FormatOpt = Format.table,
    fail_on: FailOnOpt = SeverityLevel.error,
    modules: Annotated[bool, typer.Option("--modules", help="List every module instead of layer groups.")] = False,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Read LoRA adapters and report their health: singular values, norms, ranks and coded findings.

    Everything reported is invariant to the GL(r) symmetry of LoRA factors and computed without forming ΔW.
    """
    from rich.markup import escape

    from lolctl.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_NOTHING, LolctlError, printable
    from lolctl.factors import severity_rank
    from lolctl.health import health
    from lolctl.output import Output
    out = Output(fmt.value)
    skipped: list[tuple[Any, str]] = []
    paths = _expand(sources, skipped)
    for path, why in skipped:  # weights files met in folders that are not adapters: never dropped silently
        out.log(escape(printable(f"skipped {path}: {why}")))
    from lolctl.read import read_adapter

    records: list[dict[str, Any]] = []
    worst = -1
    errors = 0
    for path in paths:
        try:
            adapter = read_adapter(path, trust_pickle=trust_pickle)
        except LolctlError as err:
            errors += 1
            out.log(escape(err.one_line()))  # paths and keys come from the input: never Rich markup
            records.append({"schema": RECORD_SCHEMA, "source": str(path), "status": "error", "error": err.to_dict()})
            continue
        report = health(adapter)
        worst = max([worst] + [severity_rank(f.severity) for f in report.findings])
        rec = {"schema": RECORD_SCHEMA, "source": str(path), "status": "ok", **report.to_dict(),
               "meta": _meta(adapter)}
        records.append(rec)
        if out.human:
            _render(out, rec, grouped=not modules)
    if not out.human:
        out.records(records, {"schema": SCHEMA, "adapters": records})
    if not paths or errors == len(paths) and all(r["error"]["exit_code"] == EXIT_NOTHING for r in records):
        raise typer.Exit(EXIT_NOTHING)
    if errors:
        raise typer.Exit(EXIT_INPUT)
    if fail_on != SeverityLevel.never and worst >= severity_rank(fail_on.value):
        out.log(f"findings at or above '{fail_on.value}': exit {EXIT_FINDINGS}")
        raise typer.Exit(EXIT_FINDINGS)


def _expand(sources: list[str], skipped: list[tuple[Any, str]] | None = None) -> list[str]:
    """Local sources: paths as given, globs expanded (sorted); a missing path is an input error.

    A folder is walked as ``score`` and ``scan`` walk it: every adapter in it is inspected (a PEFT folder's named
    adapters beside its default one included) and the weights files that are not adapters go to ``skipped``. A folder
    in which the walk finds no adapter is passed on as it is: reading it explains what it holds."""
    import glob
    from pathlib import Path

    from lolctl.errors import LolctlError

    out: list[str] = []
    for src in sources:
        if Path(src).exists():  # an existing path is itself, even when its name holds glob characters
            out += _walk(src, skipped)
        elif any(c in src for c in "*?["):
            hits = sorted(glob.glob(src))
            if not hits:
                raise LolctlError("L101", src, "the pattern matched nothing", "check the glob; quote it for lolctl")
            for hit in hits:
                out += _walk(hit, skipped)
        else:
            raise LolctlError("L100", src, "no such file or folder", "check the path")
    return list(dict.fromkeys(out))


def _walk(src: str, skipped: list[tuple[Any, str]] | None) -> list[str]:
    from pathlib import Path

    from lolctl.read import discover

    path = Path(src)
    if not path.is_dir():
        return [src]
    found, left_out = discover(path)
    if skipped is not None:
        skipped += left_out
    if not found or found == [path]:
        return [src]  # one adapter (keep the path as typed), or none: reading the folder says what it holds
    return [str(p) for p in found]


def _meta(adapter: Any) -> dict[str, Any]:
    meta = adapter.meta
    return {
        "format": meta.format,
        "files": meta.files,
        "base_model": meta.base_model,
        "base_revision": meta.base_revision,
        "peft_type": meta.peft_type,
        "target_modules": meta.target_modules,
        "config_rank": meta.config_rank,
        "config_alpha": meta.config_alpha,
        "use_rslora": meta.use_rslora,
        "use_dora": meta.use_dora,
        "fan_in_fan_out": meta.fan_in_fan_out,
        "rank_pattern": meta.rank_pattern,
        "alpha_pattern": meta.alpha_pattern,
        "dtypes": meta.dtypes,
        "bytes": meta.nbytes,
        "file_metadata": meta.file_metadata,
        "payload": [
            {"key": p.key, "shape": list(p.shape), "dtype": p.dtype, "bytes": p.nbytes} for p in adapter.payload
        ],
    }


def _render(out: Any, rec: dict[str, Any], grouped: bool) -> None:
    from lolctl.render import findings_table, modules_table, summary_table

    out.print(summary_table(rec["source"], rec["summary"]))
    if rec["findings"]:
        out.print(findings_table(rec["findings"]))
    else:
        out.print("[green]no findings[/green]")
    if rec["modules"]:
        out.print(modules_table(rec["modules"], grouped=grouped))
    out.print("")


def register(app: typer.Typer) -> None:
    app.command("inspect", epilog=EPILOG)(inspect)
