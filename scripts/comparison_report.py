"""Write docs/comparison.md and docs/rank_generalization.png from the checkpoints of scripts/comparison.sh.

Per checkpoint and split: the metrics `lolctl train`/`lolctl eval --store` stored in its config.json, else
`lolctl eval` on the test zoo (cached in the checkpoint folder); mean ± std over seeds per model. With --second, the
same test table on a test zoo built with another seed, and each model's drop.

    python scripts/comparison_report.py runs/comparison --zoo tests/data/minilm-wordnet-test --second /work/zoos/mw-s1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.nn.compare import aggregate, collect

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("unit_norm=True",)  # passed to every model by scripts/comparison.sh
ORDER = ["composite", "mlp", "mlp_svd", "mlp_oalign", "mlp_dense", "transformer", "glnet"]
NAMES = {"mlp": "MLP", "mlp_svd": "MLP+SVD", "mlp_oalign": "MLP+O-Align", "mlp_dense": "MLP+Dense",
         "transformer": "Transformer", "glnet": "GL-net", "composite": "**lolctl default**"}
# (column, title, higher is better)
HEADLINE = [
    ("quality.r2", "quality R²", True), ("quality.kendall_tau", "quality τ", True),
    ("own_quality.r2", "own-topic quality R²", True), ("log_size.r2", "log size R²", True),
    ("membership.accuracy", "membership acc", True), ("membership.auroc", "membership AUROC", True),
    ("noise.accuracy", "noise acc", True), ("gloss_length.accuracy", "gloss length acc", True),
    ("pos_mix.accuracy", "POS mix acc", True),
]
RANK_METRICS = [("quality.r2", "quality R²"), ("membership.auroc", "membership AUROC"),
                ("noise.accuracy", "noise acc"), ("gloss_length.accuracy", "gloss length acc")]
MEMBERSHIP = [("membership.auroc", "AUROC"), ("membership.macro_f1", "macro-F1"),
              ("membership.exact_set", "exact set"), ("membership.accuracy", "per-label acc"),
              ("membership.ece", "ECE (lower is better)")]
# (column, target, text): issue #11's goals for the shipped model (mean of 3 seeds on test)
GOALS = [("quality.r2", 0.90, "quality R² ≥ 0.90"), ("membership.auroc", 0.97, "membership AUROC ≥ 0.97"),
         ("noise.accuracy", 0.90, "noise accuracy ≥ 0.90"),
         ("gloss_length.accuracy", 0.90, "gloss length accuracy ≥ 0.90"),
         ("pos_mix.accuracy", 0.90, "POS mix accuracy ≥ 0.90"), ("log_size.r2", 0.80, "log size R² ≥ 0.80")]


def arch(variant: str) -> str:
    return variant.split()[0]


REFUSED: dict[str, set[str]] = {}  # split -> model variants that refused its adapters (L171)


def records(folders: list[Path], split: str, zoo: Path, stored: bool = True) -> list[dict]:
    """One record per checkpoint for ``split``: the metrics stored in the checkpoint (``stored``: they were measured
    on ``zoo``), else `lolctl eval` on ``zoo`` (cached in the checkpoint folder as eval-<zoo>-<split>.json)."""
    from lolctl.nn.compare import record, variant
    from lolctl.nn.workflow import eval_zoo

    out = []
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        if stored and split in config.get("metrics", {}):
            out += collect([folder], split)
            continue
        cached = folder / f"eval-{zoo.name}-{split}.json"
        if not cached.is_file():
            print(f"evaluating {folder.name} on {split}", file=sys.stderr)
            try:
                cached.write_text(json.dumps(eval_zoo(str(folder), zoo, split=split, device="cpu")))
            except LolctlError as err:
                print(f"  skipped: {err}", file=sys.stderr)
                if err.code != "L171":
                    continue
                cached.write_text(json.dumps({"error": str(err)}))  # the model cannot take these adapters
        result = json.loads(cached.read_text())
        if "error" in result:
            REFUSED.setdefault(split, set()).add(variant(config))
            continue
        out.append(record(config, result["metrics"], folder))
    return out


def table(folders: list[Path], split: str, zoo: Path, stored: bool = True) -> dict[str, dict]:
    """Aggregated rows keyed by model variant (architecture + non-default config, e.g. "glnet anchors=64")."""
    recs = records(folders, split, zoo, stored)
    rows = aggregate(recs)
    for row in rows:
        row["n"] = next((r["n"] for r in recs if r["model"] == row["model"] and r.get("n")), None)
    return {r["model"]: r for r in rows}


def rank_splits(zoo: Path) -> dict[int, str]:
    """Rank -> split name of the test splits in ``zoo``: 4 -> "test", 1 -> "test_r1", ..."""
    from lolctl.zoo.format import load_zoo

    names = {row["split"] for row in load_zoo(zoo).rows}
    out = {4: "test"} if "test" in names else {}
    out |= {int(n[len("test_r"):]): n for n in names if n.startswith("test_r") and n[len("test_r"):].isdigit()}
    return dict(sorted(out.items()))


def label(variant: str) -> str:
    """Display name: "GL-net", "GL-net (anchors=64)"; the settings every model shares are left out."""
    if arch(variant) == "composite":
        return NAMES["composite"]
    parts = [p for p in variant.split()[1:] if p not in SHARED]
    return NAMES.get(arch(variant), arch(variant)) + (f" ({', '.join(parts)})" if parts else "")


def order(variant: str) -> tuple[int, str]:
    a = arch(variant)
    return (ORDER.index(a) if a in ORDER else len(ORDER), variant)


def fmt(cell: dict | None, bold: bool = False) -> str:
    if cell is None or not math.isfinite(cell["mean"]):
        return "n/a"
    text = f"{cell['mean']:.3f}" if cell.get("std") is None else f"{cell['mean']:.3f} ± {cell['std']:.3f}"
    return f"**{text}**" if bold else text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--zoo", type=Path, default=ROOT / "tests/data/minilm-wordnet-test",
                    help="Test zoo (packed or built) with the test and test_r* splits")
    ap.add_argument("--second", type=Path, default=None, help="A test zoo built with another --seed")
    ap.add_argument("--more-ranks", type=Path, default=ROOT / "data/minilm-wordnet-test-r8r16",
                    help="Another zoo with test_r* splits (larger ranks, packed apart from --zoo); skipped if absent")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/comparison.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs/rank_generalization.png")
    ap.add_argument("--keep", type=Path, default=None,
                    help="Also write each run's results (config.json without the packed zoo's file list, and its "
                    "eval caches) here: committed, they let a later session redo this report without retraining")
    args = ap.parse_args()
    folders = sorted(p for p in args.runs.iterdir() if (p / "config.json").is_file())
    if not folders:
        print(f"no checkpoints in {args.runs}", file=sys.stderr)
        return 2
    ranks = {r: (split, args.zoo) for r, split in rank_splits(args.zoo).items()}
    if args.more_ranks and args.more_ranks.is_dir():
        ranks |= {r: (split, args.more_ranks) for r, split in rank_splits(args.more_ranks).items() if r not in ranks}
    ranks = dict(sorted(ranks.items()))
    by_split = {r: table(folders, split, zoo) for r, (split, zoo) in ranks.items()}
    test = by_split[4]
    models = sorted(test, key=order)
    seeds = {m: test[m]["seeds"] for m in models}
    from lolctl.nn.compare import variant

    configs = {}
    for f in folders:
        cfg = json.loads((f / "config.json").read_text())
        configs.setdefault(variant(cfg), cfg)
    stored = json.loads((folders[0] / "config.json").read_text())["metrics"]
    n = {s: next(iter(stored[s].values()))["n"] for s in ("train", "val")}
    n["test"] = next(r["n"] for r in test.values() if r.get("n"))
    others = ", ".join(f"`{split}`" for r, (split, _) in ranks.items() if r != 4)

    lines = ["# The comparison table: every model on the MiniLM-WordNet zoo", "",
             "Generated by `scripts/comparison_report.py` from the checkpoints of `./scripts/comparison.sh` (which "
             "retrains everything from the committed training data: ~4 CPU-hours at 2,048 training LoRAs; each run's "
             "results are kept in docs/comparison-runs). Do not edit by hand.", "",
             f"Trained on the r = 4 `train` split of the flagship zoo ({n['train']} LoRAs, committed in "
             f"data/minilm-wordnet-train), early stopping on `val` ({n['val']}), scored on `test` ({n['test']}, "
             f"`{shown(args.zoo)}`) and on the rank splits {others} (never seen in training). Mean ± std over seeds "
             f"({', '.join(f'{label(m)} {seeds[m]}' for m in models)}); the best mean per column in bold. "
             "**lolctl default** is the shipped model (scripts/train_default_checkpoint.sh; its seed 0 is "
             "models/minilm-wordnet-glnet itself).", "",
             "Settings per model, from each checkpoint's config.json (`unit_norm`: each module's ΔW scaled to unit "
             "Frobenius norm and its log-norm given to the head, GL-invariant; `balance_tasks`: each task's loss "
             "divided by the loss of predicting its prior):", ""]
    for m in models:
        cfg = configs[m]
        tc = cfg["train_config"]
        if arch(m) == "composite":
            lines.append(f"- {label(m)} (`--model auto`): one model per task, {variant_members(m)}; epochs ≤ "
                         f"{tc['epochs']} each, early-stopped on its own task's validation loss, patience "
                         f"{tc['patience']}, lr {tc['lr']}, batch {tc['batch_size']}")
            continue
        mc = {k: v for k, v in cfg["model_config"].items() if k not in ("rank", "max_rank")}
        lines.append(f"- {label(m)} (`{arch(m)}`): {json.dumps(mc)}; epochs ≤ {tc['epochs']}, "
                     f"patience {tc['patience']}, lr {tc['lr']}, batch {tc['batch_size']}, "
                     f"balance_tasks {tc.get('balance_tasks', False)}")
    lines += ["", "## Test metrics (r = 4)", ""]
    lines.append("| model | " + " | ".join(t for _, t, _ in HEADLINE) + " |")
    lines.append("|---|" + "---|" * len(HEADLINE))
    best = {}
    for col, _, higher in HEADLINE:
        means = [(test[m].get(col) or {}).get("mean", math.nan) for m in models]
        finite = [v for v in means if math.isfinite(v)]
        best[col] = (max(finite) if higher else min(finite)) if finite else None
    for m in models:
        cells = [fmt(test[m].get(col), bold=test[m].get(col) is not None and test[m][col]["mean"] == best[col])
                 for col, _, _ in HEADLINE]
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    lines += ["", "Chance levels: membership accuracy ≈ 0.82 by always answering 'not a member' (each topic is in "
              "about 18% of the LoRAs), AUROC 0.5; the three attributes are balanced two-way labels (0.5)."]
    lines += membership_table(test, models)
    for gl in (m for m in models if arch(m) == "composite"):
        lines += ["", f"### {label(gl)} against the goals of issue #11", "", "| goal | measured | met |",
                  "|---|---|---|"]
        for col, target, text in GOALS:
            cell = test[gl].get(col)
            ok = cell is not None and cell["mean"] >= target
            lines.append(f"| {text} | {fmt(cell)} | {'yes' if ok else 'NO'} |")
        for r, (split, _) in sorted(ranks.items(), key=lambda item: item[0] != 4):  # test first
            cell = by_split[r].get(gl, {}).get("quality.coverage90")
            target = "0.88-0.92" if r == 4 else "≥ 0.85"
            ok = cell is not None and (0.88 <= cell["mean"] <= 0.92 if r == 4 else cell["mean"] >= 0.85)
            lines.append(f"| quality 90 % interval coverage on `{split}` {target} | {fmt(cell)} | "
                         f"{'yes' if ok else 'NO'} |")
        beaten = []
        for col, title, higher in HEADLINE:
            g = (test[gl].get(col) or {}).get("mean", math.nan)
            for m in models:
                other = (test[m].get(col) or {}).get("mean", math.nan)
                if m != gl and math.isfinite(other) and (other > g if higher else other < g):
                    beaten.append(f"{title}: {label(m)} {other:.3f} > {g:.3f}")
        lines += ["", f"{label(gl)} at or above every baseline on every headline metric: "
                  + ("yes." if not beaten else "NO — " + "; ".join(beaten) + ".")]
    if args.second is not None:
        lines += second_zoo(folders, args.second, test, models)

    lines += ["", "## Rank generalisation", "",
              "Models trained on r = 4 only, evaluated on LoRAs of other ranks trained with the same recipe "
              "(α = 2r). Goal (issue #4): within 5 points of the r = 4 figure for r ≥ 2.", ""]
    for col, title in RANK_METRICS:
        head = "| model | " + " | ".join(f"r = {r}" for r in ranks) + " | worst r ≥ 2 vs r = 4 |"
        lines += [f"**{title}**", "", head, "|---|" + "---|" * (len(ranks) + 1)]
        for m in models:
            cells, ref, worst = [], (test[m].get(col) or {}).get("mean", math.nan), 0.0
            for r in ranks:
                cell = by_split[r].get(m, {}).get(col) if m in by_split[r] else None
                cells.append(fmt(cell))
                if r >= 2 and cell is not None and math.isfinite(cell["mean"]) and math.isfinite(ref):
                    worst = min(worst, cell["mean"] - ref)
            lines.append(f"| {label(m)} | " + " | ".join(cells) + f" | {100 * worst:+.1f} points |")
        lines.append("")
    for split, variants in sorted(REFUSED.items()):
        lines.append(f"n/a on `{split}`: {', '.join(label(v) for v in sorted(variants))} refuse these adapters "
                     "(L171: a fixed-rank input layer cannot take a higher rank).")
    lines += ["", f"![rank generalisation]({args.plot.name})", ""]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    plot(by_split, models, args.plot)
    if args.keep:
        keep(folders, args.keep)
    return 0


def keep(folders: list[Path], where: Path) -> None:
    """The results of each run, without its weights: enough for :func:`records` to rebuild every table."""
    for folder in folders:
        out = where / folder.name
        out.mkdir(parents=True, exist_ok=True)
        config = json.loads((folder / "config.json").read_text())
        recipe = config.get("training_data", {}).get("recipe")
        if isinstance(recipe, dict):
            recipe.pop("packed", None)  # every adapter's file and hash: ~200 KB per run
        (out / "config.json").write_text(json.dumps(config, indent=1))
        for cached in folder.glob("eval-*.json"):
            (out / cached.name).write_text(cached.read_text())
    print(f"kept the results of {len(folders)} runs in {where}", file=sys.stderr)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def variant_members(variant: str) -> str:
    """The member models of a composite variant "composite [glnet a=1 | mlp_svd]" as inline code."""
    inner = variant[variant.index("[") + 1:variant.rindex("]")]
    return " or ".join(f"`{m}`" for m in inner.split(" | "))


def membership_table(test: dict[str, dict], models: list[str]) -> list[str]:
    """Membership the way users read it: ranking, per-topic decisions, whole sets, calibration."""
    lines = ["", "## Membership", "",
             "AUROC over all (adapter, topic) pairs; macro-F1 over topics at p ≥ 0.5; exact set: the predicted set "
             "of topics equals the true one; ECE of the per-topic probabilities (10 bins).", "",
             "| model | " + " | ".join(t for _, t in MEMBERSHIP) + " |", "|---|" + "---|" * len(MEMBERSHIP)]
    for m in models:
        lines.append(f"| {label(m)} | " + " | ".join(fmt(test[m].get(c)) for c, _ in MEMBERSHIP) + " |")
    return lines


def second_zoo(folders: list[Path], zoo: Path, test: dict[str, dict], models: list[str]) -> list[str]:
    """The test table on a test zoo built with another seed, and each model's change against the first."""
    seed = json.loads((zoo / "manifest.json").read_text()).get("recipe", {}).get("seed", "?")
    other = table(folders, "test", zoo, stored=False)
    n = next((r["n"] for r in other.values() if r.get("n")), "?")
    lines = ["", f"## A second test zoo (`--seed {seed}`)", "",
             f"The same checkpoints on the `test` split ({n} LoRAs) of a zoo built with `lolctl zoo build --seed "
             f"{seed} --split test`: other words, other sizes, other training runs, the same recipe. Each cell: "
             "mean ± std over seeds, and the change against the first test zoo in points (goal: a drop ≤ 3).", "",
             "| model | " + " | ".join(t for _, t, _ in HEADLINE) + " |", "|---|" + "---|" * len(HEADLINE)]
    for m in models:
        cells = []
        for col, _, _ in HEADLINE:
            a, b = (test[m].get(col) or {}), (other.get(m, {}).get(col) or {})
            delta = (f" ({100 * (b['mean'] - a['mean']):+.1f})" if a and b and math.isfinite(a["mean"])
                     and math.isfinite(b["mean"]) else "")
            cells.append(fmt(b or None) + delta)
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None (saying so) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e .[dev]): no plot", file=sys.stderr)
        return None
    return plt


def plot(by_split: dict[int, dict], models: list[str], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(RANK_METRICS), figsize=(4.2 * len(RANK_METRICS), 3.6))
    for ax, (col, title) in zip(axes, RANK_METRICS):
        for m in models:
            xs, ys, es = [], [], []
            for r in by_split:
                cell = by_split[r].get(m, {}).get(col)
                if cell is not None and math.isfinite(cell["mean"]):
                    xs.append(r)
                    ys.append(cell["mean"])
                    es.append(cell.get("std") or 0.0)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label(m),
                        linewidth=2.5 if arch(m) == "composite" else 1.2)
        if col.endswith(".r2"):  # one baseline's R² far below zero would flatten every other line
            low = min(line.get_ydata().min() for line in ax.get_lines() if len(line.get_ydata()))
            if low < -0.5:
                ax.set_ylim(bottom=-0.5)
                ax.set_title(f"{title} (clipped at −0.5)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(by_split), [str(r) for r in by_split])
        ax.axvline(4, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("LoRA rank (trained on r = 4)")
        if not ax.get_title():
            ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
