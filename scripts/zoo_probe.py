"""Learnability check for a minilm-wordnet zoo: simple GL-invariant features + linear models, train/test split.

Features per LoRA, all invariant to (U, V) -> (U g, V g^-T): for each module, the top-4 singular values of ΔW and
log tr(ΔW Σ_g ΔWᵀ) for Σ_g = the second moment of the embeddings-layer output over tokens of group g (each topic's
definitions, short and long definitions) — "how strongly does ΔW act on this group's tokens" — centred over groups.
Also a zero-parameter membership score (AUC of the summed topic responses). Usage:
    python scripts/zoo_probe.py ZOO [--test-fraction 0.3]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file


def group_moments(zoo: Path, recipe) -> tuple[list[str], list[torch.Tensor]]:
    from lolctl.zoo.basemodel import resolve_base
    from lolctl.zoo.lean_bert import LeanBert

    side = recipe.settings.adapted
    cache = load_file(str(zoo / "cache/frozen.safetensors"))
    _, data = recipe._data()
    bert = LeanBert.from_folder(resolve_base(recipe.settings.base_model), torch.float32)
    groups: dict[str, list[int]] = {}
    for (k, bucket), rows in data["pools"].items():
        groups.setdefault(recipe.settings.topics[k], []).extend(rows[:200])
        groups.setdefault(bucket, []).extend(rows[:100])
    names, moments = [], []
    for name, rows in groups.items():
        index = torch.tensor(rows)
        ids, mask = cache[f"{side}_ids"][index].long(), cache[f"{side}_mask"][index].bool()
        with torch.no_grad():
            X = bert.embed(ids)[mask].double()
        names.append(name)
        moments.append(X.T @ X / len(X))
    return names, moments


def features(zoo: Path, row: dict, moments: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(all features, per-group response summed over modules)."""
    state = load_file(str(zoo / row["path"] / "adapter_model.safetensors"))
    config = json.loads((zoo / row["path"] / "adapter_config.json").read_text())
    s = config["lora_alpha"] / config["r"]
    out, total = [], np.zeros(len(moments))
    for key in sorted(k for k in state if k.endswith("lora_A.weight")):
        U = s * state[key.replace("lora_A", "lora_B")].double()
        V = state[key].double().T
        _, Ru = torch.linalg.qr(U)
        _, Rv = torch.linalg.qr(V)
        sv = torch.linalg.svdvals(Ru @ Rv.T)
        sv = torch.cat([sv, torch.zeros(4, dtype=sv.dtype)])[:4].numpy()
        G = (Ru @ Rv.T).T  # tr(ΔW Σ ΔWᵀ) = tr(G Qvᵀ Σ Qv Gᵀ) with ΔW = Qu (Ru Rvᵀ) Qvᵀ
        Qv = torch.linalg.qr(V)[0]
        resp = np.log(np.array([torch.trace(G.T @ (Qv.T @ S @ Qv) @ G).item() for S in moments]) + 1e-30)
        resp = resp - resp.mean()
        total += resp
        out += [np.log(sv + 1e-12), resp]
    return np.concatenate(out), total


def main() -> None:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnet

    ap = argparse.ArgumentParser()
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--test-fraction", type=float, default=0.3)
    args = ap.parse_args()
    zoo = args.zoo
    manifest = json.loads((zoo / "manifest.json").read_text())
    recipe = MinilmWordnet()
    with open(zoo / "labels.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["rank"] == str(manifest["recipe"]["rank"])]
    names, moments = group_moments(zoo, recipe)
    pairs = [features(zoo, r, moments) for r in rows]
    X = np.stack([p[0] for p in pairs])
    response = np.stack([p[1] for p in pairs])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(rows))
    n_test = int(len(rows) * args.test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    scaler = StandardScaler().fit(X[tr])
    Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
    print(f"{len(rows)} LoRAs, {X.shape[1]} invariant features, {len(tr)} train / {len(te)} test", file=sys.stderr)
    report = {}
    for task in manifest["tasks"]:
        if task["kind"] == "regression":
            y = np.array([float(r[task["columns"][0]]) for r in rows])
            model = RidgeCV(alphas=np.logspace(-2, 4, 20)).fit(Xtr, y[tr])
            report[task["name"]] = {"r2": round(r2_score(y[te], model.predict(Xte)), 3),
                                    "std": round(float(y.std()), 4), "range": [round(float(y.min()), 3),
                                                                               round(float(y.max()), 3)]}
        elif task["kind"] == "multilabel":
            accs = []
            for col in task["columns"]:
                y = np.array([int(r[col]) for r in rows])
                model = LogisticRegression(C=0.05, max_iter=3000).fit(Xtr, y[tr])
                accs.append(float((model.predict(Xte) == y[te]).mean()))
            base = np.mean([max(np.mean([int(r[c]) for r in rows]), 1 - np.mean([int(r[c]) for r in rows]))
                            for c in task["columns"]])
            report[task["name"]] = {"mean_acc": round(float(np.mean(accs)), 3), "majority": round(float(base), 3),
                                    "per_label": [round(a, 2) for a in accs]}
        else:
            y = np.array([r[task["columns"][0]] for r in rows])
            model = LogisticRegression(C=0.05, max_iter=3000).fit(Xtr, y[tr])
            major = max(np.mean(y == lab) for lab in task["labels"])
            report[task["name"]] = {"acc": round(float((model.predict(Xte) == y[te]).mean()), 3),
                                    "majority": round(float(major), 3)}
    from sklearn.metrics import roc_auc_score

    topics = [t for t in manifest["tasks"] if t["name"] == "membership"][0]["labels"]
    Y = np.array([[int(r[f"membership[{t}]"]) for t in topics] for r in rows])
    R = response[:, [names.index(t) for t in topics]]
    top1 = np.mean([Y[i, np.argmax(R[i])] for i in range(len(rows))])
    report["membership_zero_parameter"] = {"auc": round(float(roc_auc_score(Y.ravel(), R.ravel())), 3),
                                           "top1_in_set": round(float(top1), 3),
                                           "top1_chance": round(float(Y.mean()), 3)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
