"""Learnability check for a minilm-wordnet zoo: simple GL-invariant features + linear models, k-fold CV.

Features per LoRA, all invariant to (U, V) -> (U g, V g^-T): for each module, the top-4 singular values of ΔW and
log tr(ΔW Σ_g ΔWᵀ) for Σ_g = the second moment of the embeddings-layer output over tokens of group g (each topic's
definitions, short and long definitions, verb definitions) — "how strongly does ΔW act on this group's tokens" —
centred over groups. Also zero-parameter scores (AUC of one such response, no fitting). Usage:
    python scripts/zoo_probe.py ZOO [--folds 5] [--limit N] [--cache ZOO2/cache/frozen.safetensors]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file


def group_moments(cache_file: Path, recipe) -> tuple[list[str], list[torch.Tensor]]:
    from lolctl.zoo.basemodel import resolve_base
    from lolctl.zoo.lean_bert import LeanBert

    side = recipe.settings.adapted
    cache = load_file(str(cache_file))
    _, data = recipe._data()
    bert = LeanBert.from_folder(resolve_base(recipe.settings.base_model), torch.float32)
    groups: dict[str, list[int]] = {}
    for (k, bucket), rows in data["pools"].items():
        groups.setdefault(recipe.settings.topics[k], []).extend(rows[:200])
        groups.setdefault(bucket, []).extend(rows[:100])
    groups["verbs"] = [i for rows in data.get("verbs", {}).values() for i in rows[:150]]
    names, moments = [], []
    for name, rows in groups.items():
        index = torch.tensor(rows)
        ids, mask = cache[f"{side}_ids"][index].long(), cache[f"{side}_mask"][index].bool()
        with torch.no_grad():
            X = bert.embed(ids)[mask].double()
        names.append(name)
        moments.append(X.T @ X / len(X))
    return names, moments


def features(factors: list[tuple[torch.Tensor, torch.Tensor]], moments: list[torch.Tensor]):
    """(all features, per-group response summed over modules) of one LoRA given as (U, V) per module."""
    out, total = [], np.zeros(len(moments))
    for U, V in factors:
        U, V = U.double(), V.double()
        _, Ru = torch.linalg.qr(U)
        Qv, Rv = torch.linalg.qr(V)
        sv = torch.linalg.svdvals(Ru @ Rv.T)
        sv = torch.cat([sv, torch.zeros(4, dtype=sv.dtype)])[:4].numpy()
        G = (Ru @ Rv.T).T  # tr(ΔW Σ ΔWᵀ) = tr(G Qvᵀ Σ Qv Gᵀ) with ΔW = Qu (Ru Rvᵀ) Qvᵀ
        resp = np.log(np.array([torch.trace(G.T @ (Qv.T @ S @ Qv) @ G).item() for S in moments]) + 1e-30)
        resp = resp - resp.mean()
        total += resp
        out += [np.log(sv + 1e-12), resp]
    return np.concatenate(out), total


def main() -> None:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo
    from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnet

    ap = argparse.ArgumentParser()
    ap.add_argument("zoo", type=Path, help="a zoo folder or a packed zoo (lolctl zoo pack)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=0, help="only the first N LoRAs of the zoo's own rank")
    ap.add_argument("--cache", type=Path, help="cache/frozen.safetensors of a built minilm-wordnet zoo "
                    "(default: ZOO/cache/frozen.safetensors; a packed zoo has none)")
    args = ap.parse_args()
    zoo = load_zoo(args.zoo)
    manifest = zoo.manifest
    recipe = MinilmWordnet()
    keep = [i for i, r in enumerate(zoo.rows) if r["rank"] == str(manifest["recipe"]["rank"])]
    keep = keep[: args.limit] if args.limit else keep
    rows = [zoo.rows[i] for i in keep]
    batch, _ = load_factors(zoo, dtype=torch.float64)
    batch = batch.select(keep)
    names, moments = group_moments(args.cache or args.zoo / "cache/frozen.safetensors", recipe)
    mods = batch.factors()
    pairs = [features([(U[b, :, : int(batch.ranks[b, i])], V[b, :, : int(batch.ranks[b, i])])
                       for i, (U, V) in enumerate(mods)], moments) for b in range(batch.size)]
    X = np.stack([p[0] for p in pairs])
    response = np.stack([p[1] for p in pairs])
    folds = KFold(args.folds, shuffle=True, random_state=0)
    print(f"{len(rows)} LoRAs, {X.shape[1]} invariant features, {args.folds}-fold cross-validation", file=sys.stderr)

    def classify(features: np.ndarray, y: np.ndarray) -> np.ndarray:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
        return cross_val_predict(model, features, y, cv=folds)

    report: dict = {"loras": len(rows)}
    for task in manifest["tasks"]:
        if task["kind"] == "regression":
            y = np.array([float(r[task["columns"][0]]) for r in rows])
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 20)))
            pred = cross_val_predict(model, X, y, cv=folds)
            report[task["name"]] = {"r2": round(r2_score(y, pred), 3), "std": round(float(y.std()), 4),
                                    "range": [round(float(y.min()), 3), round(float(y.max()), 3)]}
        elif task["kind"] == "multilabel":
            Y = np.array([[int(r[c]) for c in task["columns"]] for r in rows])
            R = response[:, [names.index(t) for t in task["labels"]]]
            acc_all = [float((classify(X, Y[:, j]) == Y[:, j]).mean()) for j in range(Y.shape[1])]
            acc_topic = [float((classify(R, Y[:, j]) == Y[:, j]).mean()) for j in range(Y.shape[1])]
            top1 = np.mean([Y[i, np.argmax(R[i])] for i in range(len(rows))])
            report[task["name"]] = {
                "mean_acc_all_features": round(float(np.mean(acc_all)), 3),
                "mean_acc_topic_responses": round(float(np.mean(acc_topic)), 3),
                "majority": round(float(np.mean(np.maximum(Y.mean(0), 1 - Y.mean(0)))), 3),
                "zero_parameter_auc": round(float(roc_auc_score(Y.ravel(), R.ravel())), 3),
                "zero_parameter_top1_in_set": round(float(top1), 3), "top1_chance": round(float(Y.mean()), 3)}
        else:
            y = np.array([r[task["columns"][0]] for r in rows])
            major = max(np.mean(y == lab) for lab in task["labels"])
            report[task["name"]] = {"acc": round(float((classify(X, y) == y).mean()), 3),
                                    "majority": round(float(major), 3)}
            score = {"gloss_length": lambda: response[:, names.index("long")] - response[:, names.index("short")],
                     "pos_mix": lambda: response[:, names.index("verbs")]}.get(task["name"])
            if score is not None:  # one invariant number, no fitting
                positive = y == task["labels"][1]
                report[task["name"]]["zero_parameter_auc"] = round(float(roc_auc_score(positive, score())), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
