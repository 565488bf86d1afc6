"""The learning-curve table of scripts/learning_curve.sh: test metrics per model and train-split size (markdown on
stdout), with the shipped checkpoint (trained on 1,024 LoRAs) as a reference row when its eval is given.

    python scripts/learning_curve_report.py runs/learning-curve [--shipped runs/learning-curve/shipped.test.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

COLUMNS = (  # (header, task, metric)
    ("quality R²", "quality", "r2"),
    ("own-topic R²", "own_quality", "r2"),
    ("log size R²", "log_size", "r2"),
    ("membership AUROC", "membership", "auroc"),
    ("membership macro-F1", "membership", "macro_f1"),
    ("noise acc", "noise", "accuracy"),
    ("gloss length acc", "gloss_length", "accuracy"),
    ("POS mix acc", "pos_mix", "accuracy"),
    ("quality 90% coverage", "quality", "interval90.coverage"),
)
RUN = re.compile(r"^(?P<model>.+)-n(?P<n>\d+)-s(?P<seed>\d+)\.(?P<split>test(?:_r\d+)?)\.json$")


def metric(metrics: dict, task: str, key: str) -> float | None:
    value: object = metrics.get(task, {})
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: dict[tuple[str, int], list[dict]], shipped: dict | None) -> str:
    head = "| model | train LoRAs | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for (model, n), runs in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        vals = [cell([v for v in (metric(r, t, k) for r in runs) if v is not None]) for _, t, k in COLUMNS]
        lines.append(f"| {model} ({len(runs)} seed{'s' if len(runs) > 1 else ''}) | {n} | " + " | ".join(vals) + " |")
    if shipped is not None:
        vals = [cell([v] if (v := metric(shipped, t, k)) is not None else []) for _, t, k in COLUMNS]
        lines.append("| shipped minilm-wordnet-glnet (GL-net, anchors=64) | 1024 | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--shipped", type=Path, help="lolctl eval --format json of the shipped checkpoint")
    args = parser.parse_args()
    by_split: dict[str, dict[tuple[str, int], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(args.runs.glob("*.json")):
        m = RUN.match(path.name)
        if m:
            by_split[m["split"]][(m["model"], int(m["n"]))].append(json.loads(path.read_text())["metrics"])
    shipped = {}
    if args.shipped:
        for split in by_split:
            p = args.shipped.with_name(args.shipped.name.replace(".test.", f".{split}."))
            if p.is_file():
                shipped[split] = json.loads(p.read_text())["metrics"]
    for split in sorted(by_split, key=lambda s: (s != "test", s)):
        print(f"\n### {split}\n")
        print(table(by_split[split], shipped.get(split)))


if __name__ == "__main__":
    main()
