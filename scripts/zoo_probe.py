"""Learnability check for a minilm-wordnet zoo: simple GL-invariant features + linear models, train/test split.

Features per LoRA (all invariant to (U, V) -> (U g, V g^-T)): the singular values of each module's ΔW, and the norm
of ΔW e for e = the mean embeddings-layer output of each topic's lemma tokens and of single-/multi-word lemmas.
Usage: python scripts/zoo_probe.py ZOO [--test-fraction 0.3]
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


def directions(zoo: Path, recipe) -> tuple[list[str], torch.Tensor]:
    from lolctl.zoo.basemodel import resolve_base
    from lolctl.zoo.lean_bert import LeanBert

    cache = load_file(str(zoo / "cache/frozen.safetensors"))
    _, data = recipe._data()
    bert = LeanBert.from_folder(resolve_base(recipe.settings.base_model), torch.float32)
    names, vecs = [], []
    groups = {}
    for (k, form), rows in data["pools"].items():
        groups.setdefault(recipe.settings.topics[k], []).extend(rows)
        groups.setdefault(form, []).extend(rows)
    for name, rows in groups.items():
        rows = torch.tensor(rows[:400])
        ids, mask = cache["lemma_ids"][rows].long(), cache["lemma_mask"][rows].bool()
        with torch.no_grad():
            emb = bert.embed(ids)
        inner = mask.clone()
        inner[:, 0] = False
        inner &= ids != 102  # drop [CLS] and [SEP]
        vecs.append(emb[inner].mean(0))
        names.append(name)
    E = torch.stack(vecs)
    return names, E - E.mean(0, keepdim=True)  # centred: what distinguishes the groups


def features(zoo: Path, row: dict, E: torch.Tensor) -> np.ndarray:
    state = load_file(str(zoo / row["path"] / "adapter_model.safetensors"))
    config = json.loads((zoo / row["path"] / "adapter_config.json").read_text())
    s = config["lora_alpha"] / config["r"]
    out = []
    for key in sorted(k for k in state if k.endswith("lora_A.weight")):
        A = state[key].double()
        B = state[key.replace("lora_A", "lora_B")].double()
        U, V = s * B, A.T
        _, Ru = torch.linalg.qr(U)
        _, Rv = torch.linalg.qr(V)
        sv = torch.linalg.svdvals(Ru @ Rv.T)
        sv = torch.cat([sv, torch.zeros(16 - len(sv), dtype=sv.dtype)])[:4]  # top 4 (rank-independent size)
        resp = (U @ (V.T @ E.double().T)).norm(dim=0)  # ‖ΔW e‖ per direction
        out += [sv, resp, resp / (sv[0] + 1e-12)]
    return torch.cat(out).numpy()


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
    names, E = directions(zoo, recipe)
    X = np.stack([features(zoo, r, E) for r in rows])
    X = np.log1p(np.abs(X) * 1e2)
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
                model = LogisticRegression(C=1.0, max_iter=2000).fit(Xtr, y[tr])
                accs.append(float((model.predict(Xte) == y[te]).mean()))
            base = np.mean([max(np.mean([int(r[c]) for r in rows]), 1 - np.mean([int(r[c]) for r in rows]))
                            for c in task["columns"]])
            report[task["name"]] = {"mean_acc": round(float(np.mean(accs)), 3), "majority": round(float(base), 3),
                                    "per_label": [round(a, 2) for a in accs]}
        else:
            y = np.array([r[task["columns"][0]] for r in rows])
            model = LogisticRegression(C=1.0, max_iter=2000).fit(Xtr, y[tr])
            major = max(np.mean(y == lab) for lab in task["labels"])
            report[task["name"]] = {"acc": round(float((model.predict(Xte) == y[te]).mean()), 3),
                                    "majority": round(float(major), 3)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
