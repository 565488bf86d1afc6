"""Learnability check for a smollm2-wordnet zoo: GL-invariant features + linear models, k-fold cross-validation.

Features per LoRA, all invariant to (U, V) -> (U g, V g^-T): per module log ‖ΔW‖_F and the log singular values of
ΔW (via QR, never the n × m product); and log tr(ΔW Σ_g ΔWᵀ) for Σ_g = the second moment of the module's own
layer input (the frozen base model's hidden states after input_layernorm) over the tokens of group g's texts — each
topic's definitions, words, chat-template and plain prompts — centred over groups and averaged per (q/v, block of
10 layers). Also zero-parameter scores: AUC of a topic's response for membership, of the chat-token response for
format. Usage:
    python scripts/zoo_probe_llama.py ZOO [--folds 5] [--split val]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def group_moments(recipe) -> tuple[list[str], list[list[torch.Tensor]]]:
    """Per group g and layer l: Σ_{g,l}, the second moment of layer l's attention input (the base model's own
    hidden states after input_layernorm) over the tokens of group g's texts."""
    ctx = recipe.load(Path("."))
    llama, tok = ctx["llama"], ctx["tokens"]
    groups: dict[str, list[list[int]]] = {}
    for k, name in enumerate(recipe.settings.topics):
        groups[name] = [tok["def_head"] + tok["gloss_sp"][i] for i in ctx["pools"][k][-48:]]
    groups["words"] = [tok["word_head"] + tok["lemma_sp"][i] for pool in ctx["pools"] for i in pool[-6:]]
    groups["chat"] = [tok["user"] + tok["gloss"][i] + tok["turn"] for i in ctx["pools"][0][-24:]]
    groups["plain"] = [tok["def_head"] + tok["gloss_sp"][i] + tok["word_mid"] for i in ctx["pools"][1][-24:]]
    captured: list[torch.Tensor] = []
    rms = llama._rms

    def spy(x: torch.Tensor, name: str) -> torch.Tensor:
        out = rms(x, name)
        if name.endswith("input_layernorm.weight") or name.endswith("input_layernorm"):
            captured.append(out.detach())
        return out

    llama._rms = spy  # type: ignore[method-assign]
    names, moments = [], []
    with torch.inference_mode():
        for name, seqs in groups.items():
            T = max(len(x) for x in seqs)
            ids = torch.zeros(len(seqs), T, dtype=torch.long)
            keep = torch.zeros(len(seqs), T, dtype=torch.bool)
            for b, x in enumerate(seqs):
                ids[b, :len(x)] = torch.tensor(x)
                keep[b, 1:len(x)] = True  # skip the first token (attention sink)
            captured.clear()
            llama.hidden(ids, None)
            names.append(name)
            moments.append([(h[keep].T.double() @ h[keep].double() / int(keep.sum())).float() for h in captured])
    llama._rms = rms  # type: ignore[method-assign]
    return names, moments


def features(factors: list[tuple[str, torch.Tensor, torch.Tensor]], moments: list[torch.Tensor]):
    norms, svals, resp = [], [], {}
    for name, U, V in factors:
        U, V = U.double(), V.double()
        _, Ru = torch.linalg.qr(U)
        Qv, Rv = torch.linalg.qr(V)
        core = Ru @ Rv.T  # ΔW = Qu core Qvᵀ
        sv = torch.linalg.svdvals(core)
        norms.append(float(torch.log(sv.norm() + 1e-30)))
        svals.append(np.log(sv.numpy()[:4] + 1e-12))
        G = core.T
        layer = int(name.split(".layers.")[1].split(".")[0])
        r = np.log(np.array([torch.trace(G.T @ (Qv.T @ S[layer].double() @ Qv) @ G).item() for S in moments]) + 1e-30)
        key = (name.rsplit(".", 1)[-1], layer // 10)
        resp.setdefault(key, []).append(r - r.mean())
    blocks = [np.mean(v, axis=0) for _, v in sorted(resp.items())]
    total = np.mean(blocks, axis=0)
    return np.concatenate([norms, np.concatenate(svals), *blocks]), total


def main() -> None:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lolctl.zoo.format import labels_text, read_metas
    from lolctl.zoo.recipes import get_recipe

    ap = argparse.ArgumentParser()
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--split", action="append", help="only these splits (default: every r = 8 row)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import csv
    import io

    from safetensors.torch import load_file

    manifest = json.loads((args.zoo / "manifest.json").read_text())
    # rows from the per-LoRA meta.json files: up to date even while the build runs (labels.csv lags by ≤ 25)
    all_rows = list(csv.DictReader(io.StringIO(labels_text(read_metas(args.zoo), manifest["tasks"]))))
    recipe = get_recipe("smollm2-wordnet", {"seed": str(manifest["recipe"]["seed"])})
    rows = [r for r in all_rows if r["rank"] == str(manifest["recipe"]["rank"])
            and (not args.split or r["split"] in args.split)]
    names, moments = group_moments(recipe)
    pairs = []
    for r in rows:
        state = load_file(str(args.zoo / r["path"] / "adapter_model.safetensors"))
        config = json.loads((args.zoo / r["path"] / "adapter_config.json").read_text())
        s = config["lora_alpha"] / config["r"]
        mods = sorted({k.rsplit(".lora_", 1)[0] for k in state})
        pairs.append(features([(m, s * state[f"{m}.lora_B.weight"], state[f"{m}.lora_A.weight"].T) for m in mods],
                              moments))
    X = np.stack([p[0] for p in pairs])
    response = np.stack([p[1] for p in pairs])
    folds = KFold(args.folds, shuffle=True, random_state=0)
    print(f"{len(rows)} LoRAs, {X.shape[1]} invariant features, {args.folds}-fold cross-validation", file=sys.stderr)

    def classify(F: np.ndarray, y: np.ndarray) -> np.ndarray:
        return cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)), F, y,
                                 cv=StratifiedKFold(args.folds, shuffle=True, random_state=0))

    report: dict = {"loras": len(rows), "features": int(X.shape[1])}
    for task in manifest["tasks"]:
        if task["kind"] == "regression":
            y = np.array([float(r[task["columns"][0]]) for r in rows])
            ok = np.isfinite(y)
            pred = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 20))),
                                     X[ok], y[ok], cv=folds)
            report[task["name"]] = {"r2": round(r2_score(y[ok], pred), 3), "std": round(float(y[ok].std()), 4),
                                    "range": [round(float(y[ok].min()), 3), round(float(y[ok].max()), 3)]}
        elif task["kind"] == "multilabel":
            Y = np.array([[int(r[c]) for c in task["columns"]] for r in rows])
            R = response[:, [names.index(t) for t in task["labels"]]]
            fit = [j for j in range(Y.shape[1]) if args.folds <= Y[:, j].sum() <= len(Y) - args.folds]
            acc = [float((classify(X, Y[:, j]) == Y[:, j]).mean()) for j in fit]
            base = [float(max(Y[:, j].mean(), 1 - Y[:, j].mean())) for j in fit]
            top1 = np.mean([Y[i, np.argmax(R[i])] for i in range(len(rows))])
            report[task["name"]] = {
                "mean_acc_logistic": round(float(np.mean(acc)), 3) if acc else None,
                "majority_of_those_labels": round(float(np.mean(base)), 3) if base else None,
                "labels_fitted": len(fit),
                "zero_parameter_auc": round(float(roc_auc_score(Y.ravel(), R.ravel())), 3),
                "zero_parameter_top1_in_set": round(float(top1), 3), "top1_chance": round(float(Y.mean()), 3)}
        else:
            y = np.array([r[task["columns"][0]] for r in rows])
            major = max(np.mean(y == lab) for lab in task["labels"])
            enough = min(np.sum(y == lab) for lab in task["labels"]) >= args.folds
            report[task["name"]] = {"acc": round(float((classify(X, y) == y).mean()), 3) if enough else None,
                                    "majority": round(float(major), 3)}
            if task["name"] == "format":
                score = response[:, names.index("chat")] - response[:, names.index("plain")]
                report["format"]["zero_parameter_auc"] = round(float(roc_auc_score(y == "chat", score)), 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
