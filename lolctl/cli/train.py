"""`lolctl train` (zoo → checkpoint) and `lolctl eval` (checkpoint × zoo → metrics)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from lolctl.cli.options import Device, DeviceOpt, Format, FormatOpt

MODEL_NAMES = ("glnet", "mlp", "mlp_svd", "mlp_oalign", "mlp_dense", "transformer", "auto")

TRAIN_EPILOG = """
[bold]Examples[/bold]

  lolctl train zoo/ --model glnet --out runs/glnet-s0          [dim]# every task of the zoo's manifest[/dim]
  lolctl train zoo/ --model mlp_svd --task quality --seed 1 --out runs/svd-s1
  lolctl train labels.csv --model glnet --set hidden=64 --set layers=1 --out runs/g64
  lolctl train zoo/ --model transformer --out runs/tf --format json   [dim]# metrics as JSON on stdout[/dim]
  lolctl train zoo/ --model auto --out runs/auto   [dim]# per task, the candidate with the best validation loss[/dim]
"""

EVAL_EPILOG = """
[bold]Examples[/bold]

  lolctl eval runs/glnet-s0 zoo/                 [dim]# test split: the zoo's split column or the recorded ids[/dim]
  lolctl eval runs/glnet-s0 other-zoo/ --split all --format json
  lolctl eval runs/glnet-s0 zoo/ --split test_r8 --store   [dim]# keep the figures in its config.json and card[/dim]
"""

CALIBRATE_EPILOG = """
[bold]Examples[/bold]

  lolctl calibrate runs/glnet-s0 zoo/                [dim]# the zoo's val split: temperatures and 90% intervals[/dim]
  lolctl calibrate runs/glnet-s0 my-heldout.csv --split all   [dim]# your own held-out adapters and labels[/dim]
  lolctl eval runs/glnet-s0 zoo/ --store             [dim]# then refresh the stored test metrics[/dim]
"""


NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the zoo's factor cache.")]
OodContrastOpt = Annotated[Path | None, typer.Option(
    "--ood-contrast", help="A probe file (lolctl zoo probes) of base-model inputs the zoo's adapters were NOT trained "
    "on, e.g. --set adapted=lemma for the minilm-wordnet recipe: the OOD check then flags updates fitted to those "
    "inputs (ood_inputs.safetensors).")]
OodInsideOpt = Annotated[Path | None, typer.Option(
    "--ood-inside", help="With --ood-contrast: a probe file of the inputs they WERE trained on (default: the "
    "checkpoint's own probe basis).")]


def _check_ood_options(contrast: Path | None, inside: Path | None) -> None:
    """--ood-inside without --ood-contrast is refused before any work."""
    if inside is not None and contrast is None:
        from lolctl.errors import LolctlError

        raise LolctlError("L180", "--ood-inside", "only used with --ood-contrast", "add --ood-contrast FILE")


def _set_ood_contrast(out: Any, folder: str | Path, contrast: Path | None, inside: Path | None) -> Any:
    """Give the checkpoint the OOD input contrast (when asked); log and return what was recorded."""
    if contrast is None:
        return None
    from lolctl.nn.workflow import set_input_contrast

    found = set_input_contrast(folder, contrast, inside)
    out.log(f"OOD input contrast ({found['describe']}): reference adapters {found['reference_mean']:+.2f} ± "
            f"{found['reference_std']:.2f}")
    return found
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="CPU threads for torch (0: torch's default). 1 is fastest on a busy machine.")
]


def _threads(n: int) -> None:
    if n > 0:
        import torch

        torch.set_num_threads(n)


def _parse_sets(values: list[str]) -> dict[str, str]:
    from lolctl.errors import LolctlError

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LolctlError("L180", f"--set {item}", "expected KEY=VALUE", "e.g. --set hidden=64")
        out[key.strip()] = value.strip()
    return out


@contextmanager
def _progress(out: Any):
    """(read callback, epoch callback): a Rich progress bar on stderr in human mode, occasional log lines otherwise."""
    if not out.human:  # plain log lines on stderr: stdout stays one JSON document

        def read_log(done: int, total: int) -> None:
            if done == total:
                out.log(f"read {total} adapters")

        def epoch_log(done: int, total: int, train_loss: float, val_loss: float) -> None:
            if done == 1 or done % 25 == 0:
                out.log(f"epoch {done}/{total}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")

        yield read_log, epoch_log
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=out.err,
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def read(done: int, total: int) -> None:
            if "read" not in tasks:
                tasks["read"] = bar.add_task("reading adapters", total=total, info="")
            bar.update(tasks["read"], completed=done)

        def epoch(done: int, total: int, train_loss: float, val_loss: float) -> None:
            if "fit" not in tasks:
                tasks["fit"] = bar.add_task("training", total=total, info="")
            bar.update(tasks["fit"], completed=done, info=f"train {train_loss:.4f} val {val_loss:.4f}")

        yield read, epoch


def train(
    zoo: Annotated[str, typer.Argument(help="A zoo folder (manifest.json + labels.csv) or a labels CSV.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Checkpoint folder to write.")],
    model: Annotated[str, typer.Option("--model", "-m", help=f"One of: {', '.join(MODEL_NAMES)}.")] = "glnet",
    task: Annotated[
        list[str] | None, typer.Option("--task", "-t", help="Task to train (repeat); default all.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation and the batch order.")] = 0,
    split_seed: Annotated[
        int, typer.Option("--split-seed", help="Seed of the 70/15/15 split of rows without a `split` column.")
    ] = 0,
    resplit: Annotated[
        bool, typer.Option("--resplit", help="Ignore the labels' `split` column; split all rows with --split-seed.")
    ] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs.")] = 300,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Adapters per step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.01,
    patience: Annotated[int, typer.Option("--patience", help="Early stopping: epochs without val gain.")] = 30,
    balance: Annotated[
        bool,
        typer.Option(
            "--balance-tasks/--no-balance-tasks",
            help="Divide each task's loss by the loss of predicting its prior, so that no task dominates the "
            "gradient or the early stopping.",
        ),
    ] = True,
    sets: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                    help="Model config field KEY=VALUE (repeat), e.g. hidden=64.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Checkpoint name (default: folder name).")] = None,
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="Base model id to record (default: from the adapters).")
    ] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--base-model-alias", help="Another name of the base model (repeat), e.g. a local copy's path."),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option("--candidates", help="With --model auto: the models tried per task, 'ARCH:KEY=V,KEY=V;ARCH'. "
                     "Default: GL-net hidden=8 with anchors (rank-free), GL-net with singular_values=4, MLP+SVD "
                     "(docs/models.md); add probes=FILE from `lolctl zoo probes` to a GL-net. A candidate's own "
                     "training settings: tasks=A+B (tried only there), epochs=, patience=, lr=, weight_decay=."),
    ] = None,
    ensemble: Annotated[
        str, typer.Option("--ensemble", metavar="N|TASK=N,...", help="With --model auto: train each chosen member "
                          "with N seeds (seed, seed+1, ...) and average them, for every task ('3') or per task "
                          "('membership=3,pos_mix=3', the others 1); costs N times those members.")
    ] = "1",
    blend: Annotated[
        int, typer.Option("--blend", min=1, help="With --model auto: per task, a weighted average of up to N "
                          "candidates instead of the one best, picked greedily on a seeded tenth of the training "
                          "adapters held out of the candidates' training; the kept ones are then trained again with "
                          "them (about twice their cost). 1: the single candidate with the best validation loss.")
    ] = 1,
    ood_contrast: OodContrastOpt = None,
    ood_inside: OodInsideOpt = None,
    no_cache: NoCacheOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty --out folder (its config.json, "
                           "model.safetensors and README.md are replaced; other files are left alone).")
    ] = False,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Train GL-net or a baseline on a zoo of LoRA adapters and save a checkpoint (config.json, model.safetensors,
    README.md). Splits come from the labels' `split` column, else a seeded 70/15/15 split; early stopping on the
    validation loss; metrics of every split are printed and stored in the checkpoint.
    """
    from lolctl.errors import LolctlError
    from lolctl.nn.train import TrainConfig
    from lolctl.nn.workflow import train_zoo
    from lolctl.report import Output
    from lolctl.report.records import TRAIN
    from lolctl.report.reports import Document

    out = Output(fmt.value)
    check_out_dir(out_dir, overwrite)  # before any work: never replace files silently
    _check_ood_options(ood_contrast, ood_inside)
    _threads(threads)
    if model not in MODEL_NAMES:
        raise LolctlError("L180", f"--model {model}", "unknown model", f"choose one of {', '.join(MODEL_NAMES)}")
    if model == "auto" and sets:
        raise LolctlError("L180", f"--set {sets[0]}", "--model auto takes each candidate's settings from --candidates",
                          "e.g. --candidates 'glnet:unit_norm=true,singular_values=4;mlp_svd:unit_norm=true'")
    ensembled = ensemble.strip() != "1"
    if model != "auto" and (candidates or ensembled or blend > 1):
        flag = "--candidates" if candidates else "--ensemble" if ensembled else "--blend"
        raise LolctlError("L180", flag, f"only --model auto takes {flag}",
                          f"add --model auto, or drop {flag} and use --set with --model {model}")
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        seed=seed,
        split_seed=split_seed,
        resplit=resplit,
        balance_tasks=balance,
    )
    with _progress(out) as (read_cb, epoch_cb):
        summary = train_zoo(
            zoo,
            model,
            out_dir,
            task_names=task,
            model_values=_parse_sets(sets or []),
            train_config=cfg,
            device=device.value,
            name=name,
            base_model=base_model,
            base_model_aliases=alias,
            cache=not no_cache,
            read_progress=read_cb,
            epoch_progress=epoch_cb,
            candidates=candidates,
            ensemble=ensemble,
            blend=blend,
        )
    t = summary["training"]
    out.log(f"best epoch {t['best_epoch']} of {t['epochs_run']}; checkpoint written to {summary['checkpoint']}")
    found = _set_ood_contrast(out, summary["checkpoint"], ood_contrast, ood_inside)
    if found is not None:
        summary["ood_input_contrast"] = found
    if model == "auto":
        import json

        config = json.loads((Path(summary["checkpoint"]) / "config.json").read_text())
        ranks = ", ".join(str(r) for r in config["ood"]["ranks"])
        picks = config.get("selection", {})
        fallback = {task: pick["fallback"] for task, pick in picks.items() if pick.get("fallback")}
        exposed = [task for task, pick in picks.items()
                   if not pick.get("rank_free", pick["candidates"][pick["chosen"]].get("rank_free", True))
                   and task not in fallback]
        skipped = {label: why for pick in picks.values() for label, why in pick.get("skipped", {}).items()}
        for label, why in skipped.items():
            out.warn(f"candidate {label!r} skipped: {why}")
        if fallback:
            out.log(f"adapters of ranks other than {ranks} (the training ranks) are predicted by rank-free "
                    f"fallback members for {', '.join(sorted(fallback))}: the chosen members read singular values")
        if exposed:
            out.warn(f"--model auto chose members with singular-value features for {', '.join(sorted(exposed))} "
                     "and no candidate is rank-free (glnet without singular_values, mlp_dense): adapters of ranks "
                     f"other than {ranks} may get poor predictions (docs/models.md); add a rank-free candidate")
    folder = Path(summary["checkpoint"]).resolve()
    out.log(f"score with it: lolctl score ADAPTER -c {folder}, or let score pick it by base model: "
            f"export LOLCTL_MODELS={folder.parent}")
    tables = [metrics_table(metrics, title=f"{model} — {split}") for split, metrics in summary["metrics"].items()]
    out.emit(Document({"schema": TRAIN, **summary}, tables, records=[summary]))


def check_out_dir(out_dir: str, overwrite: bool) -> None:
    """--out must be a new or empty folder, unless --overwrite (as `zoo pack`); never a file."""
    from pathlib import Path

    from lolctl.errors import LolctlError

    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise LolctlError("L180", f"--out {out_dir}", "exists and is not a folder",
                          "choose a folder for the checkpoint")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        names = sorted(p.name for p in path.iterdir())
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise LolctlError("L180", f"--out {out_dir}", f"the folder is not empty ({shown})",
                          "choose a new folder, or pass --overwrite to replace the checkpoint files in it")


def evaluate(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint folder, built-in name or Hub repo id.")],
    zoo: Annotated[str, typer.Argument(help="A zoo folder or labels CSV with the checkpoint's target columns.")],
    split: Annotated[
        str,
        typer.Option(
            "--split", help="Rows to evaluate: test, val, train, an extra split of the zoo (e.g. test_r8) or all."
        ),
    ] = "test",
    per_label: Annotated[
        bool, typer.Option("--per-label", help="Also show per-label classification metrics.")
    ] = False,
    store: Annotated[
        bool, typer.Option("--store", help="Write these metrics into the checkpoint's config.json and model card "
                           "(a local checkpoint folder), replacing that split's stored figures.")
    ] = False,
    store_as: Annotated[
        str | None, typer.Option("--store-as", metavar="NAME", help="With --store: keep them under this name instead "
                                 "of the split's, e.g. test_seed1 for the test split of another zoo.")
    ] = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Evaluate a checkpoint on a zoo: R², Kendall τ and MAE for regression; accuracy, AUROC and expected
    calibration error for classification (mean and, with --per-label, per label).
    """
    from lolctl.errors import LolctlError
    from lolctl.nn.workflow import eval_zoo
    from lolctl.report import Output
    from lolctl.report.records import EVAL
    from lolctl.report.reports import Document

    out = Output(fmt.value)
    if store_as is not None and not store:  # before any work
        raise LolctlError("L180", f"--store-as {store_as}", "names the stored metrics of --store", "add --store")
    if store_as is not None and (store_as in ("train", "val") or not store_as.replace("_", "").isalnum()):
        raise LolctlError("L180", f"--store-as {store_as}", "not a name for held-out metrics",
                          "letters, digits and _, not train or val, e.g. test_seed1")
    if store and not (Path(checkpoint) / "config.json").is_file():
        raise LolctlError("L180", f"--store {checkpoint}", "only a local checkpoint folder can be updated",
                          "pass the folder lolctl train wrote")
    _threads(threads)
    with _progress(out) as (read_cb, _):
        result = eval_zoo(checkpoint, zoo, split, device=device.value, cache=not no_cache, read_progress=read_cb)
    out.log(f"{result['n']} adapters ({result['rows']})")
    for name in result["skipped_tasks"]:
        out.warn(f"task {name} skipped: its columns are not in the labels")
    if store:
        from lolctl.nn.workflow import store_metrics

        name = store_as or split
        store_metrics(checkpoint, {name: result["metrics"]})
        out.log(f"stored as the {name} metrics of {checkpoint} (config.json, README.md)")
    tables = [metrics_table(result["metrics"], title=f"{result['checkpoint']} on {zoo} — {split}")]
    if per_label:
        tables += [metrics_table(m["per_label"], title=f"{task} per label", first="label")
                   for task, m in result["metrics"].items() if "per_label" in m]
    out.emit(Document({"schema": EVAL, **result}, tables, records=[result]))


def calibrate(
    checkpoint: Annotated[str, typer.Argument(help="A local checkpoint folder (written by lolctl train).")],
    zoo: Annotated[str, typer.Argument(help="A zoo folder or labels CSV of held-out adapters with the targets.")],
    split: Annotated[str, typer.Option("--split", help="Held-out rows: val (default), an extra split or all; "
                                       "never the checkpoint's training or test adapters.")] = "val",
    ood_contrast: OodContrastOpt = None,
    ood_inside: OodInsideOpt = None,
    no_cache: NoCacheOpt = False,
    device: DeviceOpt = Device.auto,
    threads: ThreadsOpt = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """Refit a checkpoint's uncertainty on held-out adapters: temperature-scaled probabilities and local 90%
    intervals whose width follows how hard similar adapters were. Point predictions do not change.

    The checkpoint folder is updated in place (config.json, calibration.safetensors, README.md); its stored metrics
    are marked as measured before the calibration until `lolctl eval ... --store` refreshes them. With
    --ood-contrast the out-of-distribution check also learns which base-model inputs the training adapters were
    fitted to.
    """
    from rich.table import Table

    from lolctl.nn.workflow import calibrate_zoo
    from lolctl.report import Output
    from lolctl.report.records import CALIBRATE
    from lolctl.report.reports import Document

    _check_ood_options(ood_contrast, ood_inside)
    out = Output(fmt.value)
    _threads(threads)
    with _progress(out) as (read_cb, _):
        result = calibrate_zoo(checkpoint, zoo, split, device.value, not no_cache, read_cb)
    found = _set_ood_contrast(out, checkpoint, ood_contrast, ood_inside)
    if found is not None:
        result["ood_input_contrast"] = found
    out.log(f"calibrated {checkpoint} on {result['n']} adapters ({result['rows']}); refresh its stored metrics with "
            f"lolctl eval {checkpoint} ZOO --store")
    rows = [{"task": k, "temperature": v["temperature"], "ece_before": v["ece_before"], "ece_after": v["ece_after"]}
            for k, v in result["temperatures"].items()]
    rows += [{"task": k, "interval": v.get("method", "global"), "q": v.get("q", "")}
             for k, v in result["intervals"].items()]
    table = Table(title=f"uncertainty of {checkpoint}, fitted on {result['n']} held-out adapters")
    for name in ("task", "calibration", "before", "after"):
        table.add_column(name)
    for k, v in result["temperatures"].items():
        table.add_row(k, f"temperature {v['temperature']:.3g}", f"ECE {v['ece_before']:.3f}",
                      f"ECE {v['ece_after']:.3f}")
    for k, v in result["intervals"].items():
        q = ", ".join(f"{x:.2f}" for x in v.get("q", []))
        table.add_row(k, "90% interval: " + (f"local (k={v['k']}, q={q})" if v.get("method") else "global"), "", "")
    out.emit(Document({"schema": CALIBRATE, **result}, [table], records=rows))


COMPARE_EPILOG = """
[bold]Examples[/bold]

  lolctl compare runs/*/                          [dim]# test metrics, mean ± std over seeds per model[/dim]
  lolctl compare runs/*/ --markdown > table.md    [dim]# a Markdown table for a report[/dim]
  lolctl compare runs/*/ --split test_r8 --format json
"""


def compare(
    checkpoints: Annotated[list[str], typer.Argument(help="Checkpoint folders written by lolctl train.")],
    split: Annotated[
        str, typer.Option("--split", help="Which stored metrics: test, val, train or an extra split.")
    ] = ("test"),
    as_markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table on stdout.")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Compare trained checkpoints: the metrics `lolctl train` stored, grouped by model (architecture and
    non-default config), mean ± std over seeds. Nothing is re-run; use `lolctl eval` for another zoo.
    """
    from lolctl.nn.compare import aggregate, collect, markdown, mixed_zoos_warning
    from lolctl.report import Output
    from lolctl.report.records import COMPARE
    from lolctl.report.reports import Document

    out = Output(fmt.value)
    records = collect(checkpoints, split)
    warning = mixed_zoos_warning(records)
    if warning:
        out.warn(warning)
    rows = aggregate(records)
    if as_markdown:
        out.stdout.write(markdown(rows))
        return
    out.emit(Document({"schema": COMPARE, "split": split, "models": rows}, compare_tables(rows, split),
                      records=rows))


def compare_tables(rows: list[dict[str, Any]], split: str) -> list[Any]:
    """One table per task (fits 80 columns): mean ± std over seeds per model."""
    from rich.table import Table

    from lolctl.nn.compare import cell

    columns = list(dict.fromkeys(k for row in rows for k in row if "." in k))
    tables = []
    for task in dict.fromkeys(c.split(".")[0] for c in columns):
        mine = [c for c in columns if c.split(".")[0] == task]
        table = Table(title=f"{task} — {split}, mean ± std over seeds", title_justify="left")
        table.add_column("model")
        table.add_column("seeds", justify="right")
        for col in mine:
            table.add_column(col.split(".", 1)[1], justify="right")
        for row in rows:
            table.add_row(row["model"], str(row["seeds"]), *(cell(row.get(c)) for c in mine))
        tables.append(table)
    return tables


COLUMNS = (
    ("n", "n"),
    ("r2", "R²"),
    ("kendall_tau", "Kendall τ"),
    ("mae", "MAE"),
    ("accuracy", "accuracy"),
    ("auroc", "AUROC"),
    ("ece", "ECE"),
)


def _metric_cell(present: bool, v: Any) -> str:
    if not present:
        return ""
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"  # undefined on this data, e.g. AUROC with one class
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def metrics_table(metrics: dict[str, Any], title: str = "", first: str = "task") -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(first)
    used = [(k, label) for k, label in COLUMNS if any(k in m for m in metrics.values())]
    for _, label in used:
        table.add_column(label, justify="right")
    for task, m in metrics.items():
        cells = []
        for key, _ in used:
            v = m.get(key)
            cells.append(_metric_cell(key in m, v))
        table.add_row(task, *cells)
    return table


def register(app: typer.Typer) -> None:
    app.command("train", epilog=TRAIN_EPILOG)(train)
    app.command("eval", epilog=EVAL_EPILOG)(evaluate)
    app.command("calibrate", epilog=CALIBRATE_EPILOG)(calibrate)
    app.command("compare", epilog=COMPARE_EPILOG)(compare)
