"""`lolctl zoo build` and `lolctl zoo info`: build a LoRA zoo from a recipe, summarise one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lolctl.cli.options import EngineName, EngineOpt, FormatOpt, RayAddressOpt
from lolctl.errors import LolctlError

zoo_app = typer.Typer(help="Build LoRA zoos (datasets of LoRAs with known properties) and summarise them.",
                      no_args_is_help=True)


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise LolctlError("L180", f"--set {item}", "expected KEY=VALUE", "e.g. --set n_train=200")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


BUILD_EPILOG = """
[bold]Examples[/bold]

  lolctl zoo build zoo/minilm-wordnet -j 2      [dim]# flagship zoo; rerun to resume[/dim]
  lolctl zoo build /tmp/z --limit 50            [dim]# only the first 50 LoRAs[/dim]
  lolctl zoo build /tmp/small --set n_train=100 --limit 50
  lolctl zoo build /tmp/t --recipe tiny --base /tmp/tiny-bert
  lolctl zoo build zoo/minilm-wordnet --split test_r8   [dim]# one split only[/dim]
  lolctl zoo build /shared/zoo --engine ray     [dim]# one Ray task per LoRA (docs/scale.md)[/dim]
"""

INFO_EPILOG = """
[bold]Examples[/bold]

  lolctl zoo info zoo/minilm-wordnet            [dim]# counts, targets, recipe[/dim]
  lolctl zoo info zoo/minilm-wordnet -f json
"""


@zoo_app.command("build", epilog=BUILD_EPILOG)
def build_cmd(
    out: Annotated[Path, typer.Argument(help="The zoo folder (created; an existing one is resumed).")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe name: minilm-wordnet, tiny, ...")] = (
        "minilm-wordnet"),
    base: Annotated[str | None, typer.Option("--base", help="Base model: a Hugging Face folder or Hub id.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed; LoRA i depends on (settings, seed, i).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Worker processes (1 thread each).")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Build only the first N LoRAs of the plan.")] = (
        None),
    sets: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="Override a recipe setting (repeat).")] = None,
    split: Annotated[list[str] | None, typer.Option("--split", help="Build only this split of the plan (repeat), "
                                                    "e.g. test_r8.")] = None,
    skip_packed: Annotated[Path | None, typer.Option("--skip-packed", metavar="PACKED", help="A packed zoo of this "
                           "recipe (`lolctl zoo pack`): its LoRAs are not built again; `zoo pack --append` into it "
                           "afterwards adds the new ones (a build spread over sessions that keep only the pack).")
                           ] = None,
    engine: EngineOpt = EngineName.local,
    ray_address: RayAddressOpt = None,
) -> None:
    """Build (or resume) a zoo. Each LoRA is a PEFT adapter folder; labels.csv and manifest.json describe them."""
    import sys

    from lolctl.report.encode import dumps
    from lolctl.zoo.builder import build
    from lolctl.zoo.recipes import get_recipe

    overrides = _parse_sets(sets or [])
    if base is not None:
        overrides["base_model"] = base
    if seed is not None:
        overrides["seed"] = str(seed)
    if engine is EngineName.ray:
        from lolctl.ray_engine import import_ray

        import_ray()  # not installed: one usage error before any work
    result = build(get_recipe(recipe, overrides), out, workers=workers, limit=limit, splits=split or None,
                   log=lambda m: print(m, file=sys.stderr, flush=True), engine=engine.value, ray_address=ray_address,
                   skip_packed=skip_packed)
    sys.stdout.write(dumps(result) + "\n")


@zoo_app.command("info", epilog=INFO_EPILOG)
def info_cmd(
    zoo: Annotated[Path, typer.Argument(help="A zoo folder (with manifest.json and labels.csv).")],
    fmt: FormatOpt = "table",  # type: ignore[assignment]
) -> None:
    """Summarise a zoo: counts per split and rank, target ranges, recipe and versions."""
    from lolctl.report import Output
    from lolctl.report.reports import Document
    from lolctl.zoo.info import render_table, summarise

    summary = summarise(zoo)
    Output(getattr(fmt, "value", fmt)).emit(Document(summary, [render_table(summary)], csv_records=summary["targets"]))


PACK_EPILOG = """
[bold]Examples[/bold]

  lolctl zoo pack zoo/minilm-wordnet data/mw-test --split test     [dim]# ~19 MB for 256 r=4 LoRAs[/dim]
  lolctl eval minilm-wordnet-glnet data/mw-test                    [dim]# evaluate from the packed file[/dim]
  lolctl zoo pack zoo/minilm-wordnet data/mw-train --split val --split train --append
                                  [dim]# add the LoRAs built since the last pack as a new part file[/dim]
"""


@zoo_app.command("pack", epilog=PACK_EPILOG)
def pack_cmd(
    zoo: Annotated[Path, typer.Argument(help="A zoo folder (manifest.json + labels.csv + adapters).")],
    out: Annotated[Path, typer.Argument(help="The packed zoo folder to write.")],
    split: Annotated[list[str], typer.Option("--split", help="Split to pack (repeat), e.g. test, test_r8.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
    append: Annotated[bool, typer.Option(
        "--append", help="Add the rows the packed folder lacks as a new part file (same recipe; for a growing zoo)."
    )] = False,
    fmt: FormatOpt = "table",  # type: ignore[assignment]
) -> None:
    """Pack some splits of a zoo into one compact file (float16 with per-module scales; half of float32).

    The packed folder works wherever a zoo does (`lolctl eval`, `lolctl train`), so a test set can be shipped in
    git and evaluated without the adapter folders.
    """
    from lolctl.report import Output
    from lolctl.report.reports import Document
    from lolctl.zoo.pack import pack

    if overwrite and append:
        raise typer.BadParameter("--append adds to the packed folder; --overwrite replaces it: pass one")
    result = pack(zoo, out, split, overwrite=overwrite, append=append)
    counts = ", ".join(f"{k}: {v}" for k, v in result["splits"].items())
    if not result["adapters"]:
        line = f"nothing to add: {result['out']} already holds every LoRA of those splits ({result['total']})"
    else:
        line = (f"packed {result['adapters']} adapters ({counts}) into {result['out']}/{result['file']} "
                f"({result['bytes'] / 2**20:.1f} MiB; {result['total']} in the folder)")
    flat = {k: v for k, v in result.items() if k not in ("splits", "ranks")}
    Output(getattr(fmt, "value", fmt)).emit(Document(result, [line], csv_records=[flat]))


PROBES_EPILOG = """
[bold]Examples[/bold]

  lolctl zoo probes data/minilm-wordnet-probes.safetensors       [dim]# recipe minilm-wordnet, k = 32[/dim]
  lolctl train ZOO --model glnet --set probes=data/minilm-wordnet-probes.safetensors --out runs/g
"""


@zoo_app.command("probes", epilog=PROBES_EPILOG)
def probes_cmd(
    out: Annotated[Path, typer.Argument(help="The probe file to write (safetensors).")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe whose base model and data define the "
                                        "groups.")] = "minilm-wordnet",
    k: Annotated[int, typer.Option("--k", min=1, help="Basis columns kept per group (top eigenvectors).")] = 32,
    sets: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="Override a recipe setting (repeat).")] = None,
    fmt: FormatOpt = "table",  # type: ignore[assignment]
) -> None:
    """Write base-model probes for GL-net (`--set probes=FILE`): per input group of the recipe (each topic's texts,
    short / long definitions, verbs), the top-k square root of the second moment of layer 0's input. GL-net then
    feeds its head how strongly each module's ΔW acts on each group (invariant, rank-free); the basis is stored in
    the checkpoint, so scoring needs no probe file."""
    from lolctl.nn.glnet import write_probes
    from lolctl.report import Output
    from lolctl.report.reports import Document
    from lolctl.zoo.recipes import get_recipe

    chosen = get_recipe(recipe, _parse_sets(sets or []))
    if not hasattr(chosen, "probe_moments"):
        raise LolctlError("L180", f"--recipe {recipe}", "this recipe defines no probe groups",
                          "use minilm-wordnet or minilm-wordnet-v2")
    names, moments = chosen.probe_moments()
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = "".join(f" --set {v}" for v in sets or [])
    write_probes(out, names, moments, k, f"lolctl zoo probes --recipe {recipe} --k {k}{settings}")
    result = {"out": str(out), "groups": names, "dim": int(moments[0].shape[0]), "k": k,
              "bytes": out.stat().st_size}
    line = f"wrote {len(names)} probe groups ({', '.join(names)}) of width {result['dim']}, k = {k}, to {out}"
    Output(getattr(fmt, "value", fmt)).emit(Document(result, [line], csv_records=[{**result, "groups": len(names)}]))


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
