"""The two end-to-end jobs behind the CLI: train a model on a zoo into a checkpoint, evaluate a checkpoint on a zoo.

Both return plain dicts (metrics and a description) and take progress callbacks; they never print.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.nn.about import task_descriptions
from lolctl.nn.base import LoraModel
from lolctl.nn.batch import LoraBatch
from lolctl.nn.checkpoint import (
    Checkpoint,
    load_checkpoint,
    resolve_device,
    round_for_storage,
    save_checkpoint,
    write_config,
)
from lolctl.nn.checkpoint_config import FORMAT, CheckpointConfig
from lolctl.nn.composite import DEFAULT_CANDIDATES, Composite, candidate_label, parse_candidates, parse_ensemble
from lolctl.nn.data import assign_splits, load_factors, targets
from lolctl.nn.infer import embeddings, predict, scale_stats
from lolctl.nn.metrics import json_safe, reliability_of
from lolctl.nn.ood import INPUTS_FILE, OOD_REFERENCES, anchors_batch, reference_sample
from lolctl.nn.registry import build_model, model_class
from lolctl.nn.spec import TaskSpec
from lolctl.nn.train import (
    TrainConfig,
    TrainResult,
    evaluate,
    fit,
    intervals,
    normalisation,
    target_tensors,
    task_loss,
)
from lolctl.nn.uncertainty import (
    FALLBACK_PREFIX,
    calibrate,
    coverage_report,
    fit_local_intervals,
    fit_temperatures,
)
from lolctl.zoo.format import Zoo, load_zoo

ReadProgress = Callable[[int, int], None]
EpochProgress = Callable[[int, int, float, float], None]
SPLITS = ("train", "val", "test")


def split_names(split: np.ndarray) -> list[str]:
    """train, val, test first, then extra held-out splits in sorted order."""
    present = {str(s) for s in split}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def _metrics_by_split(tasks, pred, y, split: np.ndarray) -> dict[str, Any]:
    out = {}
    for name in split_names(split):
        rows = np.flatnonzero(split == name)
        if rows.size:
            out[name] = evaluate(tasks, {k: v[rows] for k, v in pred.items()}, {k: v[rows] for k, v in y.items()})
    return out


def train_zoo(
    source: str | Path,
    model_name: str,
    out_dir: str | Path,
    task_names: list[str] | None = None,
    model_values: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    device: str = "auto",
    name: str | None = None,
    base_model: str | None = None,
    base_model_aliases: list[str] | None = None,
    cache: bool = True,
    read_progress: ReadProgress | None = None,
    epoch_progress: EpochProgress | None = None,
    candidates: str | None = None,
    ensemble: int | str = 1,
    blend: int = 1,
) -> dict[str, Any]:
    """Train ``model_name`` on a zoo folder or labels CSV and save a checkpoint in ``out_dir``. ``auto``: per task,
    the candidate (``candidates``, default :data:`DEFAULT_CANDIDATES`) with the lowest validation loss, as a seed
    ensemble of ``ensemble`` copies (a count, or per task "membership=3,pos_mix=3": :func:`parse_ensemble`);
    ``blend`` > 1: a weighted average of up to that many candidates per task, chosen on a held-out share of the
    training adapters (:func:`hold_out_select`, :func:`greedy_blend`)."""
    from lolctl import __version__

    cfg = train_config or TrainConfig()
    dev = resolve_device(device)
    zoo = load_zoo(source)
    tasks = tuple(zoo.task(t) for t in task_names) if task_names else zoo.tasks
    if not tasks:
        raise LolctlError("L175", str(zoo.labels_path), "no target columns to train on", "add targets or --task")
    copies = parse_ensemble(str(ensemble), tuple(t.name for t in tasks))  # before the slow part: a typo fails fast
    batch, info = load_factors(zoo, cache=cache, progress=read_progress)
    y = {t.name: targets(zoo, t) for t in tasks}
    split = assign_splits(zoo, cfg.split_seed, resplit=cfg.resplit)
    if model_name == "auto" and blend > 1:
        split = hold_out_select(split, cfg.split_seed, str(zoo.labels_path))
    train_rows = split == "train"
    if train_rows.sum() < 2:
        raise LolctlError("L175", str(zoo.labels_path), "fewer than 2 training rows", "add adapters or fix 'split'")
    norm = normalisation(tasks, y, train_rows)
    on_dev = batch.to(dev)
    selection, held_out = None, 0
    if model_name == "auto":
        model, result, selection = train_auto(parse_candidates(candidates or DEFAULT_CANDIDATES), on_dev, tasks, y,
                                              split, norm, cfg, epoch_progress, copies, blend)
        model_name = model.name
        if blend > 1:  # the kept members were trained again on them: training adapters from here on
            held_out = int((split == "select").sum())
            split = fold_select(split)
            train_rows = split == "train"
    else:
        torch.manual_seed(cfg.seed)
        values = rank_defaults(model_name, model_values or {}, int(batch.ranks.max()))
        model = build_model(model_name, values, batch.spec, tasks).to(dev)
        result = fit(model, on_dev, y, split, norm, cfg, epoch_progress)
    round_for_storage(model)  # what save_checkpoint stores: measured below as a user will load it
    val = np.flatnonzero(split == "val")
    calib = val if val.size >= 5 else np.flatnonzero(train_rows)
    temperatures, spans, stored, fallback = fit_checkpoint_uncertainty(
        model, on_dev.select(calib), norm, tasks, {k: v[calib] for k, v in y.items()},
        "val" if calib is val else "train")
    scale = scale_stats(model, batch.select(np.flatnonzero(train_rows)))
    bases = info.get("base_models", [])
    base = base_model or zoo.base_model or (bases[0] if len(bases) == 1 else None)
    config = {
        "name": name or Path(out_dir).name,
        "lolctl_version": __version__,
        "architecture": model_name,
        "invariance": model.invariance,
        "model_config": model.config.to_dict(),
        "input_spec": batch.spec.to_dict(),
        "base_model": base,
        "base_model_aliases": sorted(set(base_model_aliases or []) | ({*bases} - {base})),
        "tasks": [t.to_dict() for t in tasks],
        "target_normalisation": norm,
        "intervals": spans,
        "calibration": temperatures,
        "ood": {
            "ranks": sorted({int(r) for r in batch.ranks[torch.as_tensor(train_rows)].unique()}),
            "scale_log_range": [float(scale.min()), float(scale.max())],
            "base_models": bases,
        },
        "training_data": {
            **zoo.describe(),
            "source": str(source),
            "splits": {s: int((split == s).sum()) for s in split_names(split)},
            "split_source": "column" if any(zoo.splits) and not cfg.resplit else f"seeded ({cfg.split_seed})",
            **({"blend_select": {"adapters": held_out, "share": SELECT_SHARE, "seed": cfg.split_seed}}
               if held_out else {}),
            "test_ids": [zoo.ids[i] for i in np.flatnonzero(split == "test")],
        },
        "train_config": asdict(cfg),
        "training": result.to_dict(),
        "metrics": {},
    }
    if fallback:
        config["fallback"] = fallback
    if selection is not None:
        config["selection"] = selection
    about = task_descriptions(config)  # what each task means (scorers show it next to the predictions)
    if about:
        config["task_descriptions"] = about
    folder = save_checkpoint(Path(out_dir), model, config)
    _save_tensors(folder / "calibration.safetensors", stored)
    (folder / INPUTS_FILE).unlink(missing_ok=True)  # an --overwrite'd checkpoint's: rerun calibrate --ood-contrast
    if anchors_batch(model) is None:  # the OOD score's reference adapters (GL-net keeps its anchors instead)
        refs = reference_sample(batch.select(np.flatnonzero(train_rows)), OOD_REFERENCES)
        _save_tensors(folder / "ood.safetensors", {k: v.numpy() for k, v in refs.tensors().items()})
    else:
        (folder / "ood.safetensors").unlink(missing_ok=True)  # a stale file from an --overwrite'd checkpoint
    # measured as `lolctl eval` measures: through the saved checkpoint (its calibration, intervals, rank fallback)
    ckpt = load_checkpoint(str(folder), str(dev))
    pred = ckpt.predict_batch(batch)
    metrics = _metrics_by_split(tasks, pred, y, split)
    _interval_metrics(tasks, metrics, ckpt.interval_batch(batch, pred), y, split)
    config["metrics"] = metrics
    write_config(folder, {"format": FORMAT, "format_version": 1, **config})
    summary = {"checkpoint": str(folder), "model": model_name, "training": result.to_dict(), "metrics": metrics}
    return json_safe(summary)


SELECT_SHARE = 0.1  # --blend: the share of the training adapters held out to weigh each task's candidates
MIN_SELECT = 8


def hold_out_select(split: np.ndarray, seed: int, where: str) -> np.ndarray:
    """A copy of ``split`` with a seeded :data:`SELECT_SHARE` of its "train" rows relabelled "select": adapters no
    candidate is trained or early-stopped on, on which ``--blend`` weighs the candidates. The validation loss cannot
    do it: every candidate chose its best epoch on it, and the more a candidate's validation loss wanders from epoch
    to epoch the more that minimum flatters it (docs/models.md, blending)."""
    train = np.flatnonzero(split == "train")
    n = int(round(SELECT_SHARE * train.size))
    if n < MIN_SELECT or train.size - n < 2:
        raise LolctlError("L175", where, f"{train.size} training adapters are too few to hold out {MIN_SELECT} "
                          "for --blend", "add training adapters, or drop --blend")
    out = split.astype(object, copy=True)
    out[np.random.default_rng(seed).choice(train, n, replace=False)] = "select"
    return out


def fold_select(split: np.ndarray) -> np.ndarray:
    """``split`` with the rows :func:`hold_out_select` set aside back in "train"."""
    return np.where(split == "select", "train", split).astype(object)


@torch.no_grad()
def task_outputs(model: LoraModel, batch: LoraBatch, rows: np.ndarray, task: str, chunk: int = 128) -> torch.Tensor:
    """``model``'s raw output for ``task`` (standardised values or logits) on ``rows``, on the CPU."""
    model.eval()
    parts = [model(batch.select(torch.as_tensor(rows[i : i + chunk])))[task].cpu() for i in range(0, rows.size, chunk)]
    return torch.cat(parts)


@torch.no_grad()
def greedy_blend(task: TaskSpec, outputs: list[torch.Tensor], target: torch.Tensor, steps: int
                 ) -> tuple[dict[int, float], float, list[float]]:
    """Ensemble selection (Caruana et al., 2004) on held-out adapters: start from the candidate whose ``outputs``
    (standardised values or logits) have the lowest loss against ``target``, then add, with replacement, the
    candidate whose addition most lowers the loss of the averaged outputs, for at most ``steps`` picks; stop when no
    addition helps. Returns ({candidate index: weight}, the blend's loss, each candidate's own loss)."""
    own = [float(task_loss(task, o, target)) for o in outputs]
    first = int(np.argmin(own))
    counts = {first: 1}
    total, best = outputs[first].clone(), own[first]
    for k in range(2, steps + 1):
        trials = [float(task_loss(task, (total + o) / k, target)) for o in outputs]
        i = int(np.argmin(trials))
        if not trials[i] < best - 1e-9:
            break
        counts[i] = counts.get(i, 0) + 1
        total += outputs[i]
        best = trials[i]
    picks = sum(counts.values())
    return {i: c / picks for i, c in counts.items()}, best, own


def train_auto(
    candidates: list[tuple[str, dict[str, Any]]],
    batch: LoraBatch,
    tasks: tuple[TaskSpec, ...],
    y: dict[str, np.ndarray],
    split: np.ndarray,
    norm: dict[str, Any],
    cfg: TrainConfig,
    progress: EpochProgress | None = None,
    ensemble: int | dict[str, int] = 1,
    blend: int = 1,
) -> tuple[LoraModel, TrainResult, dict[str, Any]]:
    """Per task, train every candidate on that task alone (its own early stop) and keep the one with the lowest
    validation loss; when that one is rank-specific, keep the best rank-free candidate too as the task's fallback
    for ranks the training set lacks (:mod:`lolctl.nn.composite`). A candidate too large for the adapters (L173,
    e.g. MLP+Dense on a big base model) is skipped and recorded. ``blend`` > 1: keep instead the weighted average
    of candidates :func:`greedy_blend` picks on the "select" rows (:func:`hold_out_select`), and for the fallback
    the same over the rank-free candidates; each kept candidate is then trained again from its seed on the training
    and select rows together, for as many epochs as its first pass's best (early-stopped on validation within
    them), so the held-out tenth is lost to no member. ``ensemble`` n > 1 (for every task, or per task name): each
    kept member is trained again with seeds seed+1 … seed+n−1 and the copies' outputs are averaged. Returns the
    composite of the kept members, a summary TrainResult and the selection record."""
    R = int(batch.ranks.max())
    select = np.flatnonzero(split == "select")
    final = fold_select(split)  # the kept members' last training: with the select rows
    train_rows = np.flatnonzero(final == "train")
    if blend > 1 and not select.size:
        raise LolctlError("L180", "--blend", "no held-out \"select\" adapters to weigh the candidates on",
                          "train through train_zoo, which holds them out")
    seen = sorted({int(r) for r in batch.ranks[torch.as_tensor(train_rows)].unique() if int(r) > 0})
    members, kept, epochs_run = [], [], 0
    selection: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}  # candidate label -> why it could not be built for these adapters (L173)
    plans = [(arch, *candidate_training(arch, values, cfg, tasks)) for arch, values in candidates]
    for t in tasks:
        scores: dict[str, Any] = {}
        trained = []  # (val loss, arch, model, label, model settings, training settings)
        for arch, values, run_cfg, only, label in plans:
            if only is not None and t.name not in only:
                continue
            if label in skipped:
                continue
            torch.manual_seed(run_cfg.seed)
            try:
                model = build_model(arch, rank_defaults(arch, values, R), batch.spec, (t,)).to(batch.device)
            except LolctlError as err:  # too large for these adapters: the other candidates still compete
                if err.code != "L173":
                    raise
                skipped[label] = f"{err.reason} ({err.code})"
                continue
            res = fit(model, batch, {t.name: y[t.name]}, split, norm, run_cfg, progress)
            epochs_run += res.epochs_run
            scores[label] = {"val_loss": res.best_val_loss, "best_epoch": res.best_epoch, "rank_free": model.rank_free}
            trained.append((res.best_val_loss, arch, model, label, values, run_cfg))
        if not trained:
            if skipped:
                raise LolctlError("L173", "--candidates", f"every candidate for task {t.name!r} is too large: "
                                  + "; ".join(f"{k}: {v}" for k, v in skipped.items()),
                                  "add a smaller candidate, e.g. glnet or mlp_svd")
            raise LolctlError("L180", "--candidates", f"no candidate is given task {t.name!r}",
                              "leave tasks= off one candidate, or name the task in it")
        record: dict[str, Any] = {"candidates": scores}
        if skipped:
            record["skipped"] = dict(skipped)
        if blend > 1:
            target = target_tensors((t,), y, norm)[t.name][torch.as_tensor(select)]
            outs = [task_outputs(c[2], batch, select, t.name) for c in trained]
            weights, loss, own = greedy_blend(t, outs, target, blend)
            for c, o in zip(trained, own):
                scores[c[3]]["select_loss"] = o
            primary = [(trained[i], w) for i, w in weights.items()]
            record.update(blend={c[3]: w for c, w in primary}, blend_select_loss=loss)
            fallback = []
            if not all(c[2].rank_free for c, _ in primary):
                free = [i for i, c in enumerate(trained) if c[2].rank_free]
                if free:
                    fw, floss, _ = greedy_blend(t, [outs[i] for i in free], target, blend)
                    fallback = [(trained[free[i]], w) for i, w in fw.items()]
                    record.update(fallback_blend={c[3]: w for c, w in fallback}, fallback_select_loss=floss)
        else:
            primary = [(min(trained, key=lambda c: c[0]), 1.0)]
            free_models = [c for c in trained if c[2].rank_free]
            fallback = ([(min(free_models, key=lambda c: c[0]), 1.0)]
                        if free_models and not primary[0][0][2].rank_free else [])
        record["chosen"] = primary[0][0][3]
        record["rank_free"] = all(c[2].rank_free for c, _ in primary)
        if fallback:
            record["fallback"] = fallback[0][0][3]
        selection[t.name] = record
        n = ensemble.get(t.name, 1) if isinstance(ensemble, dict) else ensemble
        copies: dict[tuple[str, int], LoraModel] = {}  # (label, seed) -> its trained model, once per task
        for group, is_fallback in ((primary, False), (fallback, True)):
            for (_, arch, model, label, values, run_cfg), weight in group:
                for seed in range(run_cfg.seed, run_cfg.seed + n):
                    if (label, seed) in copies:  # the same candidate as primary and fallback: trained once
                        pass
                    elif seed == run_cfg.seed and blend <= 1:
                        copies[label, seed] = model
                    else:  # a seed copy, or (blend) the candidate again with the select rows, for its best epochs
                        again = replace(run_cfg, seed=seed)
                        if blend > 1:
                            again = replace(again, epochs=max(1, scores[label]["best_epoch"]))
                        torch.manual_seed(seed)
                        copy = build_model(arch, rank_defaults(arch, values, R), batch.spec, (t,)).to(batch.device)
                        epochs_run += fit(copy, batch, {t.name: y[t.name]}, final, norm, again, progress).epochs_run
                        copies[label, seed] = copy
                    members.append({"architecture": arch, "model_config": copies[label, seed].config.to_dict(),
                                    "tasks": [t.name], "label": label, "fallback": is_fallback, "seed": seed,
                                    "weight": weight / n})
                    kept.append(copies[label, seed])
        if n > 1:
            record["ensemble"] = n
    composite = build_model("composite", {"members": members, "seen_ranks": seen}, batch.spec, tasks)
    assert isinstance(composite, Composite)
    composite.to(batch.device)
    LoraModel.prepare(composite, batch.select(train_rows))  # its own input scale (OOD range)
    for slot, model in zip(composite.models, kept):
        slot.load_state_dict(model.state_dict())
    composite.eval()
    winners = [selection[t.name]["candidates"][selection[t.name]["chosen"]] for t in tasks]
    result = TrainResult(max(w["best_epoch"] for w in winners), epochs_run,
                         float(sum(w["val_loss"] for w in winners)))
    return composite, result, selection


def fit_checkpoint_uncertainty(
    model: LoraModel, batch: LoraBatch, norm: dict[str, Any], tasks: tuple[TaskSpec, ...], y: dict[str, np.ndarray],
    source: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(temperatures, interval spans, stored tensors, fallback entry) fitted on held-out adapters ``batch`` (of the
    split ``source``) with targets ``y``. A composite with rank-fallback members is calibrated twice: as it predicts
    these adapters, and as its fallback members would (own temperatures and residuals, for adapters of unseen
    ranks)."""
    def sourced(part: dict[str, Any]) -> dict[str, Any]:
        return {k: {**v, "source": source} for k, v in part.items()}

    h = embeddings(model, batch)
    temperatures, spans, stored = fit_uncertainty(tasks, predict(model, batch, norm), y, h)
    fallback: dict[str, Any] = {}
    if isinstance(model, Composite) and model.has_fallback:
        model.force_route = "fallback"
        try:
            raw = predict(model, batch, norm)
        finally:
            model.force_route = None
        temps_fb, spans_fb, stored_fb = fit_uncertainty(tasks, raw, y, h)
        fallback = {"seen_ranks": list(model.config.seen_ranks), "tasks": sorted(model.fallback_route),
                    "calibration": sourced(temps_fb), "intervals": sourced(spans_fb)}
        stored.update({f"{FALLBACK_PREFIX}{k}": v for k, v in stored_fb.items() if k.startswith("abs_res.")})
    return sourced(temperatures), sourced(spans), stored, fallback


def fit_uncertainty(
    tasks: tuple[TaskSpec, ...], raw: dict[str, np.ndarray], y: dict[str, np.ndarray], h: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """(temperatures, interval spans, the local intervals' tensors) fitted on held-out rows: their uncalibrated
    predictions ``raw``, targets ``y`` and head features ``h`` (``lolctl train`` on val, ``lolctl calibrate``)."""
    temperatures = fit_temperatures(tasks, raw, y)
    pred = calibrate(tasks, raw, temperatures)
    spans = intervals(tasks, pred, y)
    local, stored = fit_local_intervals(tasks, h, pred, y)
    for task_name, entry in local.items():
        spans[task_name].update(entry)
    return temperatures, spans, stored


def _as_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _save_tensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.torch import save_file

    save_file(_as_tensors(arrays), str(path))
    path.chmod(0o644)


def _interval_metrics(tasks, metrics: dict[str, Any], iv: dict[str, np.ndarray], y, split: np.ndarray) -> None:
    """Add ``interval90`` (coverage, mean width, 10th/90th width percentiles) to each regression column's metrics."""
    for name in split_names(split):
        rows = np.flatnonzero(split == name)
        for t in tasks:
            if t.name not in iv or not rows.size:
                continue
            for j, col in enumerate(t.columns):
                key = t.name if len(t.columns) == 1 else f"{t.name}.{col}"
                metrics[name][key]["interval90"] = coverage_report(y[t.name][rows, j], iv[t.name][rows, j])


def candidate_training(arch: str, values: dict[str, Any], cfg: TrainConfig, tasks: tuple[TaskSpec, ...]
                       ) -> tuple[dict[str, Any], TrainConfig, set[str] | None, str]:
    """Split an ``auto`` candidate's settings into (model settings, its training config, the task names it is tried
    on — None for all —, its label): ``tasks=noise+pos_mix``, ``epochs=40``, ``patience=8``, ``lr=3e-4`` and
    ``weight_decay=0.1`` are the candidate's own, e.g. an expensive model tried only where it may win, with a shorter
    schedule."""
    values = dict(values)
    label = candidate_label(arch, values)
    only = None
    if "tasks" in values:
        only = {name.strip() for name in str(values.pop("tasks")).split("+") if name.strip()}
        unknown = sorted(only - {t.name for t in tasks})
        if unknown or not only:
            raise LolctlError("L180", f"--candidates {label}", f"no task {unknown[0]!r}" if unknown else "no tasks",
                              f"tasks=NAME+NAME of {', '.join(t.name for t in tasks)}")
    run: dict[str, Any] = {}
    for key in ("epochs", "patience"):
        if key in values:
            text = str(values.pop(key))
            if not text.isdigit() or int(text) < 1:
                raise LolctlError("L180", f"--candidates {label}", f"{key}={text} is not a positive integer",
                                  f"e.g. {key}=40")
            run[key] = int(text)
    for key in ("lr", "weight_decay"):
        if key in values:
            text = str(values.pop(key))
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and (value > 0 if key == "lr" else value >= 0)):
                raise LolctlError("L180", f"--candidates {label}", f"{key}={text} is not a "
                                  f"{'positive' if key == 'lr' else 'non-negative'} number", f"e.g. {key}=3e-4")
            run[key] = value
    return values, replace(cfg, **run) if run else cfg, only, label


def rank_defaults(model_name: str, values: dict[str, Any], top: int) -> dict[str, Any]:
    """Fixed-rank models default to the zoo's largest rank: ``rank`` = top, ``max_rank`` = max(its default, top)."""
    cls = model_class(model_name).config_class
    names = {f.name for f in fields(cls)}
    out = dict(values)
    if "rank" in names and "rank" not in out:
        out["rank"] = top
    if "max_rank" in names and "max_rank" not in out:
        out["max_rank"] = max(int(cls().max_rank), top)  # type: ignore[attr-defined]
    return out


@dataclass
class ZooPredictions:
    """A checkpoint's predictions on a zoo's split, with the targets: what eval_zoo measures, per adapter."""

    checkpoint: Checkpoint
    tasks: tuple[TaskSpec, ...]  # the checkpoint's tasks whose columns the zoo has
    skipped: list[str]  # the others
    rows: np.ndarray  # indices into the zoo's rows
    how: str  # how the rows were chosen ("split column = test")
    pred: dict[str, np.ndarray]  # calibrated, in the targets' units
    intervals: dict[str, np.ndarray]  # regression tasks: (n, columns, 2)
    y: dict[str, np.ndarray]


def predict_zoo(
    ref: str,
    source: str | Path,
    split: str = "test",
    device: str = "auto",
    cache: bool = True,
    read_progress: ReadProgress | None = None,
) -> ZooPredictions:
    """Run a checkpoint on a zoo's ``split`` rows and pair its predictions with the zoo's targets."""
    ckpt = load_checkpoint(ref, device)
    zoo = load_zoo(source)
    header = zoo.rows[0]
    tasks = tuple(t for t in ckpt.tasks if all(c in header for c in t.columns))
    skipped = [t.name for t in ckpt.tasks if t not in tasks]
    if not tasks:
        raise LolctlError(
            "L175",
            str(zoo.labels_path),
            "none of the checkpoint's target columns are in the labels",
            f"the checkpoint predicts {', '.join(t.name for t in ckpt.tasks)}",
        )
    rows, how = _eval_rows(zoo, ckpt.config, split)
    batch, _ = load_factors(zoo, cache=cache, progress=read_progress)
    batch = batch.respec(ckpt.spec).select(rows)
    pred = ckpt.predict_batch(batch)
    y = {t.name: targets(zoo, t)[rows] for t in tasks}
    return ZooPredictions(ckpt, tasks, skipped, rows, how, pred, ckpt.interval_batch(batch, pred), y)


def eval_zoo(ref: str, source: str | Path, split: str = "test", **options: Any) -> dict[str, Any]:
    """Metrics of a checkpoint on a zoo's ``split`` rows ("test", "val", "train" or "all"); ``options`` are
    :func:`predict_zoo`'s (device, cache, read_progress)."""
    ev = predict_zoo(ref, source, split, **options)
    found = evaluate(ev.tasks, ev.pred, ev.y)
    _interval_metrics(ev.tasks, {split: found}, {k: v for k, v in ev.intervals.items() if k in ev.y}, ev.y,
                      np.full(len(ev.rows), split))
    result = {
        "checkpoint": ev.checkpoint.name,
        "architecture": ev.checkpoint.config.architecture,
        "zoo": str(source),
        "split": split,
        "rows": ev.how,
        "n": int(len(ev.rows)),
        "skipped_tasks": ev.skipped,
        "metrics": found,
        # per classification task: probability bins against observed frequency (docs/models.md, calibration)
        "reliability": {t.name: reliability_of(t.kind, ev.pred[t.name], ev.y[t.name]) for t in ev.tasks
                        if t.kind != "regression"},
    }
    return json_safe(result)


def calibrate_zoo(
    folder: str | Path,
    source: str | Path,
    split: str = "val",
    device: str = "auto",
    cache: bool = True,
    read_progress: ReadProgress | None = None,
) -> dict[str, Any]:
    """Refit a local checkpoint's uncertainty on held-out adapters of a zoo (``split`` rows; never its training rows):
    temperatures of the classification tasks, 90 % intervals (global residual quantiles and local knn-conformal
    widths, as ``lolctl train`` fits them on val), written into ``folder`` (config.json, calibration.safetensors,
    the model card). Point predictions do not change; stored metrics of every split are marked as measured before
    this calibration (rerun ``lolctl eval`` to refresh them). Returns what changed."""
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise LolctlError("L172", str(folder), "not a local checkpoint folder", "pass the folder lolctl train wrote")
    ckpt = load_checkpoint(str(path), device)
    zoo = load_zoo(source)
    missing = [c for t in ckpt.tasks for c in t.columns if c not in zoo.rows[0]]
    if missing:
        raise LolctlError("L175", str(zoo.labels_path), f"no column {missing[0]} for the checkpoint's tasks",
                          "calibrate on a zoo built with the checkpoint's recipe")
    rows, how = _eval_rows(zoo, ckpt.config, split)
    scored_on = set(ckpt.config.training_data.get("test_ids", []))  # its test rows (train ids are not recorded)
    if split == "train" or scored_on & {zoo.ids[i] for i in rows}:
        raise LolctlError("L180", f"--split {split}", "these rows are the checkpoint's training or test adapters: "
                          "calibrating on them would make its measured coverage meaningless",
                          "use val or another held-out split")
    if rows.size < 20:
        raise LolctlError("L175", str(zoo.labels_path), f"{rows.size} rows with split={split}; 20 or more are "
                          "needed for stable intervals", "build more held-out adapters")
    batch, _ = load_factors(zoo, cache=cache, progress=read_progress)
    batch = batch.respec(ckpt.spec).select(rows)
    tasks = ckpt.tasks
    on_dev = batch.to(ckpt.device, torch.float32)
    y = {t.name: targets(zoo, t)[rows] for t in tasks}
    temperatures, spans, stored, fallback = fit_checkpoint_uncertainty(
        ckpt.model, on_dev, ckpt.config.target_normalisation, tasks, y, split)
    where = {"zoo": str(source), "split": split, "rows": how, "n": int(rows.size)}
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config["intervals"], config["calibration"] = spans, temperatures
    if fallback:
        config["fallback"] = fallback
    config["calibrated_on"] = where
    config["metrics_note"] = (f"metrics measured before the calibration on {source} ({split}); point-prediction "
                              "metrics (R², τ, AUROC) do not change with it, accuracy, ECE and interval coverage do")
    _save_tensors(path / "calibration.safetensors", stored)
    write_config(path, config)
    return json_safe({"checkpoint": str(path), **where, "temperatures": temperatures,
                      "intervals": config["intervals"]})


def set_input_contrast(folder: str | Path, contrast: str | Path, inside: str | Path | None = None) -> dict[str, Any]:
    """Give a local checkpoint the OOD feature ``input_contrast`` (:class:`lolctl.nn.ood.InputContrast`): which
    inputs of the base model an update was fitted to. ``contrast`` is a probe file (``lolctl zoo probes``) of inputs
    the training zoo's adapters were not trained on; ``inside`` one of the inputs they were (default: the checkpoint's
    own probe basis, a GL-net member trained with ``probes=``). Writes ``ood_inputs.safetensors`` and records it in
    config.json's ``ood``; returns the new feature's reference mean and std."""
    from lolctl.nn.glnet import read_probe_file, read_probes
    from lolctl.nn.ood import InputContrast, OODReference

    path = Path(folder)
    ckpt = load_checkpoint(str(path), "cpu")
    if inside is not None:
        inner = read_probes(inside)[1]
    else:
        found = [m.probe_basis for m in (*getattr(ckpt.model, "models", []), ckpt.model)
                 if isinstance(getattr(m, "probe_basis", None), torch.Tensor)]
        if not found:
            raise LolctlError("L180", "--ood-contrast", f"{folder} keeps no probe basis of its training inputs",
                              "pass --ood-inside FILE (lolctl zoo probes for the training zoo's recipe)")
        inner = found[0].detach().cpu()
    contrast_names, outer, source = read_probe_file(contrast)
    inputs = InputContrast.from_probes(inner, outer, source or Path(contrast).name)
    refs = ckpt.reference_adapters()
    if refs is None or refs.size < 8:
        raise LolctlError("L180", "--ood-contrast", f"{folder} keeps fewer than 8 reference adapters",
                          "retrain it (lolctl train keeps reference adapters)")
    ref = OODReference.fit(refs, inputs=inputs)
    inputs.save(path / INPUTS_FILE)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config.setdefault("ood", {})["input_contrast"] = {"describe": inputs.describe, "groups": contrast_names,
                                                      "reference_mean": ref.mean["input_contrast"],
                                                      "reference_std": ref.std["input_contrast"]}
    write_config(path, config)
    return json_safe({"checkpoint": str(path), **config["ood"]["input_contrast"]})


def store_metrics(folder: str | Path, found: dict[str, dict[str, Any]]) -> None:
    """Replace the stored metrics of the given splits (``lolctl eval`` results) in a local checkpoint's config.json
    and card; a ``metrics_note`` of an earlier calibration is kept only for the splits not refreshed."""
    path = Path(folder)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    config.setdefault("metrics", {}).update(found)
    if "metrics_note" in config:
        stale = sorted(set(config["metrics"]) - set(found) - set(config.get("metrics_refreshed", [])))
        config["metrics_refreshed"] = sorted(set(config.get("metrics_refreshed", [])) | set(found))
        if stale:
            config["metrics_note"] = (f"{', '.join(stale)}: measured before the calibration on "
                                      f"{config['calibrated_on']['zoo']} ({config['calibrated_on']['split']}); "
                                      "R², τ and AUROC do not change with it, accuracy, ECE and coverage do")
        else:
            del config["metrics_note"]
    write_config(path, config)


def _eval_rows(zoo: Zoo, config: CheckpointConfig, split: str) -> tuple[np.ndarray, str]:
    n = len(zoo.rows)
    if split == "all":
        return np.arange(n), "all rows"
    given = zoo.splits
    known = set(SPLITS) | {s for s in given if s}
    if split not in known:
        raise LolctlError("L180", f"--split {split}", "unknown split", f"use all or one of {', '.join(sorted(known))}")
    data = config.training_data
    seeded = str(data.get("split_source", "")).startswith("seeded")
    if split == "test" and (seeded or not any(given)):  # the checkpoint drew its own test set: use the same rows
        ids = set(data.get("test_ids", []))
        rows = np.array([i for i, k in enumerate(zoo.ids) if k in ids], dtype=np.int64)
        if rows.size:
            return rows, "the checkpoint's recorded test ids"
    if any(given):
        rows = np.array([i for i, s in enumerate(given) if s == split], dtype=np.int64)
        if not rows.size:
            raise LolctlError("L175", str(zoo.labels_path), f"no rows with split={split}", "use --split all")
        return rows, f"split column = {split}"
    return np.arange(n), "all rows (the zoo has no split column)"
