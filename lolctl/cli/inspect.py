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
  lolctl inspect someuser/my-lora@v1.0            [dim]# a Hub repo (only its adapter files are fetched)[/dim]
"""


def inspect(
    sources: Annotated[list[str], typer.Argument(help="Adapter folders, weight files, globs or Hub repos "
                                                 "(user/repo@rev, user/prefix*).", show_default=False)],
    fmt: FormatOpt = Format.table,
    fail_on: FailOnOpt = SeverityLevel.error,
    modules: Annotated[bool, typer.Option("--modules", help="List every module instead of layer groups.")] = False,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Read LoRA adapters and report their health: singular values, norms, ranks and coded findings.

    Everything reported is invariant to the GL(r) symmetry of LoRA factors and computed without forming ΔW.
    """
    from rich.markup import escape

    from lolctl.cli.score import nothing_found
    from lolctl.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_NOTHING, LolctlError, printable
    from lolctl.factors import severity_rank
    from lolctl.health import health
    from lolctl.output import Output
    out = Output(fmt.value)
    skipped: list[tuple[Any, str]] = []
    hub = _hub()
    items = _expand(sources, hub, skipped)
    nothing_found(items, sources, skipped)
    for path, why in skipped:  # weights files met in folders that are not adapters: never dropped silently
        out.log(escape(printable(f"skipped {path}: {why}")))
    from lolctl.read import read_adapter

    records: list[dict[str, Any]] = []
    worst = -1
    errors = 0
    for source, path, err in _paths(items, hub, trust_pickle):
        if err is None:
            try:
                adapter = read_adapter(path, trust_pickle=trust_pickle)
            except LolctlError as exc:
                err = exc
        if err is not None:
            errors += 1
            out.log(escape(err.one_line()))  # paths and keys come from the input: never Rich markup
            records.append({"schema": RECORD_SCHEMA, "source": source, "status": "error", "error": err.to_dict()})
            continue
        report = health(adapter)
        worst = max([worst] + [severity_rank(f.severity) for f in report.findings])
        rec = {"schema": RECORD_SCHEMA, **report.to_dict(), "source": source, "status": "ok", "meta": _meta(adapter)}
        records.append(rec)
        if out.human:
            _render(out, rec, grouped=not modules)
    for note in hub.notes if hub is not None else []:
        out.log(f"[cyan]note:[/cyan] {escape(note)}")
    if not out.human:
        out.records(records, {"schema": SCHEMA, "adapters": records})
    if errors == len(records) and all(r["error"]["exit_code"] == EXIT_NOTHING for r in records):
        raise typer.Exit(EXIT_NOTHING)
    if errors:
        raise typer.Exit(EXIT_INPUT)
    if fail_on != SeverityLevel.never and worst >= severity_rank(fail_on.value):
        out.log(f"findings at or above '{fail_on.value}': exit {EXIT_FINDINGS}")
        raise typer.Exit(EXIT_FINDINGS)


def _hub() -> Any:
    """A quiet Hub client (see lolctl.cli.score.cli_hub), or None when huggingface_hub is not installed."""
    try:
        from lolctl.cli.score import cli_hub

        return cli_hub()
    except ImportError:
        return None


def _expand(sources: list[str], hub: Any, skipped: list[tuple[Any, str]] | None = None) -> list[Any]:
    """The items of the sources, expanded exactly as ``score`` and ``scan`` expand them (lolctl.sources.resolve):
    paths, globs, folders walked (a PEFT folder's named adapters beside its default one included; weights files that
    are not adapters go to ``skipped``), Hub repos and patterns. A local source in which the walk finds no adapter
    is passed on as it is: reading it explains what it holds."""
    from pathlib import Path

    from lolctl.sources import Item, resolve

    items: list[Item] = []
    for src in sources:
        found = resolve([src], hub=hub, skipped=skipped)
        if not found and Path(src).exists():
            found = [Item(str(Path(src).resolve()), src, path=Path(src))]
        items += found
    return list({item.id: item for item in items}.values())


def _paths(items: list[Any], hub: Any, trust_pickle: bool):
    """(source, local path, None) per adapter to read; a Hub repo that cannot be fetched gives (source, None, error).
    Hub repos are downloaded (only their adapter files) into the HF cache, as ``score`` does."""
    from lolctl.errors import LolctlError

    for item in items:
        if item.hub is None:
            yield str(item.path), item.path, None
            continue
        try:
            paths, _ = hub.fetch(item.hub, trust_pickle=trust_pickle)
        except LolctlError as err:
            yield item.display, None, err
            continue
        for path in paths:
            yield (item.display if len(paths) == 1 else f"{item.display}:{path.name}"), path, None


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
