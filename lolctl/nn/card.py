"""The README.md model card of a checkpoint, generated from its config.json."""

from __future__ import annotations

import json
from typing import Any

from lolctl.nn.about import task_descriptions
from lolctl.nn.checkpoint_config import CheckpointConfig


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(task, metric, value) rows, per-label details left out."""
    rows = []
    for task, m in metrics.items():
        for key, value in m.items():
            if key in ("kind", "per_label"):
                continue
            if isinstance(value, dict):  # interval90: coverage and width of the 90 % intervals
                rows += [(task, f"{key} {k}", _fmt(v)) for k, v in value.items()]
                continue
            rows.append((task, key, _fmt(value)))
    return rows


def model_card(config: CheckpointConfig) -> str:
    spec = config.input_spec.modules
    shapes = sorted({m.shape for m in spec})
    data = config.training_data
    lines = [
        "---",
        "library_name: lolctl",
        "tags: [lolctl, lora, weight-space-learning]",
        "---",
        "",
        f"# {config.name or 'lolctl checkpoint'}",
        "",
        f"A `{config.architecture}` model from lolctl {config.extra.get('lolctl_version', '')}: it scores LoRA "
        "adapters from their weights alone (Learning on LoRAs, arXiv 2410.04207).",
        "",
        f"- **Base model of the adapters:** {config.base_model or 'unknown'}",
        f"- **Input:** {len(spec)} LoRA modules, shapes {', '.join(f'{n}x{m}' for n, m in shapes)}; "
        f"ranks seen in training: {config.ood.get('ranks', [])}",
        f"- **Symmetry:** {config.extra.get('invariance', '')}",
        f"- **Training data:** {data.get('adapters', '?')} adapters from `{data.get('labels_file', '?')}` "
        f"(splits: {data.get('splits', {})})",
        "",
        "## Tasks",
        "",
    ]
    about = task_descriptions(config.to_dict())
    for t in config.tasks:
        labels = f" — labels: {', '.join(t.labels)}" if t.labels else ""
        meaning = f": {about[t.name]}" if t.name in about else ""
        lines.append(f"- `{t.name}` ({t.kind}){meaning}{labels}")
    zoo = data.get("recipe") or {}
    recipe = zoo.get("recipe") if isinstance(zoo.get("recipe"), dict) else None
    if recipe:
        base: dict[str, Any] = zoo["base_model"] if isinstance(zoo.get("base_model"), dict) else {}
        lines += [
            "",
            "## Training zoo",
            "",
            f"Built by `lolctl zoo build --recipe {recipe.get('name', '?')}` (deterministic from the "
            f"settings below). Base model `{base.get('id', recipe.get('base_model', '?'))}`"
            + (f" (weights {base['hash']})" if base.get("hash") else "")
            + f"; splits planned: {zoo.get('splits', {})}.",
            "",
            "```json",
            json.dumps(recipe, indent=None, sort_keys=True),
            "```",
        ]
    lines += _members(config)
    lines += ["", "## Metrics (test split)", "", "| task | metric | value |", "|---|---|---|"]
    for task, key, value in metric_rows(config.metrics.get("test", {})):
        lines.append(f"| {task} | {key} | {value} |")
    extra = {k: v for k, v in config.metrics.items() if k not in ("train", "val", "test")}
    if extra:
        tasks = list(next(iter(extra.values())))
        lines += [
            "",
            "## Metrics on extra held-out splits",
            "",
            "R² for regression tasks, accuracy for classification tasks (e.g. `test_r8`: adapters of rank 8, never "
            "seen in training; `test_seed1`: the test split of a zoo built with another seed, stored with "
            "`lolctl eval --store --store-as`).",
            "",
            "| split | n | " + " | ".join(tasks) + " |",
            "|---|---|" + "---|" * len(tasks),
        ]
        for split, metrics in extra.items():
            cells = [
                _fmt(m.get("r2") if m.get("kind") == "regression" else m.get("accuracy"))
                for m in (metrics.get(t, {}) for t in tasks)
            ]
            n = next((m.get("n") for m in metrics.values() if m.get("n") is not None), "?")
            lines.append(f"| {split} | {n} | " + " | ".join(cells) + " |")
    local = any((v or {}).get("method") == "knn-conformal" for v in config.intervals.values())
    calibrated = config.extra.get("calibrated_on")
    if local:
        k = next(v["k"] for v in config.intervals.values() if (v or {}).get("method") == "knn-conformal")
        how = ("Regression intervals are local conformal 90% intervals: the prediction ± q times the mean absolute "
               f"error of the {k} most similar held-out adapters (in the model's own feature space), so their width "
               "follows how hard similar adapters were; probabilities are temperature-scaled on the same adapters.")
    else:
        how = ("Regression intervals are the 5% and 95% quantiles of the validation residuals added to the prediction "
               "(nominal 90% coverage on in-distribution adapters).")
    if calibrated:
        how += (f" Calibrated with `lolctl calibrate` on {calibrated.get('n')} held-out adapters "
                f"({calibrated.get('split')} of `{calibrated.get('zoo')}`).")
    note = config.extra.get("metrics_note")
    lines += [""] + ([f"Note: {note}.", ""] if note else []) + [
        how,
        "",
        "## Use",
        "",
        "```",
        "lolctl score ADAPTER --checkpoint PATH_OR_NAME",
        "```",
        "",
        "## Limitations",
        "",
        "Predictions are only meaningful for adapters like the training zoo: same base model, same target modules, "
        "similar ranks and update magnitudes. `lolctl score` flags adapters outside that range (`ood`).",
        "",
    ]
    return "\n".join(lines)


def _members(config: CheckpointConfig) -> list[str]:
    """A composite's members per task (``lolctl train --model auto``), with its rank fallback."""
    members = config.model_config.get("members") or []
    if not members:
        return []
    how = ("Per task a weighted average of candidates, weighed on held-out training adapters (`lolctl train --model "
           "auto --blend`)." if "blend_select" in config.training_data
           else "Chosen per task by validation loss (`lolctl train --model auto`).")
    lines = ["", "## Members", "", how, "", "| task | member | weight | seeds | for |", "|---|---|---|---|---|"]
    ranks = config.model_config.get("seen_ranks") or []
    seen = ", ".join(str(r) for r in ranks)
    backed = {t for m in members if m.get("fallback") for t in m["tasks"]}

    def route(m: dict[str, Any]) -> tuple[str, bool]:  # the members one prediction averages
        return ", ".join(m["tasks"]), bool(m.get("fallback"))

    totals: dict[tuple[str, bool], float] = {}  # they average with their weights: show each member's share
    rows: dict[tuple[str, bool, str], list[dict[str, Any]]] = {}  # a seed ensemble's copies: one row
    for m in members:
        totals[route(m)] = totals.get(route(m), 0.0) + float(m.get("weight", 1.0))
        rows.setdefault((*route(m), m.get("label") or m["architecture"]), []).append(m)
    for (tasks, fallback, label), copies in rows.items():
        share = sum(float(m.get("weight", 1.0)) for m in copies) / totals[tasks, fallback]
        where = (f"ranks other than {seen}" if fallback else
                 f"rank{'s' if len(ranks) > 1 else ''} {seen}" if set(copies[0]["tasks"]) <= backed else "all ranks")
        seeds = ", ".join(str(m.get("seed", "?")) for m in copies)
        lines.append(f"| {tasks} | {label} | {share:.2f} | {seeds} | {where} |")
    if config.fallback:
        lines += ["", "A fallback member is rank-free (it reads no singular-value slots); the member it stands in for "
                  "reads σ₁…σₖ, which it learned at the training ranks only. The fallback has its own temperatures "
                  "and intervals, fitted on the same held-out adapters."]
    if any(len(copies) > 1 for copies in rows.values()):
        lines += ["", "A member with several seeds is a seed ensemble (`--ensemble`): the copies, trained alike from "
                  "different initialisations and batch orders, share its weight equally."]
    return lines
