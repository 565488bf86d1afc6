"""OOD check of a checkpoint: an OOD set built for the purpose against the in-distribution test split.

Kinds (each made from, or shaped like, the test split's adapters; seeded):
  random_init   never-trained LoRA, PEFT-style init but with B random too (init_lora_weights=False): A, B uniform
                ±1/√fan_in, scale α/r
  random_match  random Gaussian factors rescaled to the Frobenius norm of a test adapter, module by module
  inert         B = 0 (ΔW = 0: the base model)
  scaled_x10 / scaled_x0.1 / scaled_x100   a test adapter with every ΔW multiplied
  padded_zero   a test adapter at rank 8 with 4 zero columns (ΔW unchanged)
  padded_noise  a test adapter at rank 8, the 4 extra columns random at 1 % of its norm
  other:NAME    adapters of another zoo (--other NAME=ZOO, repeatable: e.g. LoRAs on the other side of the model,
                the v2 recipe); with their own labels, also how well the checkpoint predicts them
Reports, per kind: AUROC of the OOD score against the test split, the share flagged by `check` and the most
common reason; and what `predict` says for one adapter of each kind. LoRAs on other modules never reach the score:
`check` refuses them with L171 (shown too).

    python scripts/ood_check.py CHECKPOINT PACKED_OR_ZOO [--split test] [--other NAME=ZOO2 ...] [--n 64]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter, AdapterMeta, ModuleFactors
from lolctl.nn.batch import LoraBatch
from lolctl.nn.checkpoint import load_checkpoint
from lolctl.nn.data import load_factors
from lolctl.nn.metrics import auroc
from lolctl.nn.workflow import eval_zoo
from lolctl.zoo.format import load_zoo


def to_adapters(batch: LoraBatch, base: str | None, tag: str) -> list[Adapter]:
    mods = batch.factors()
    out = []
    for b in range(batch.size):
        modules = [ModuleFactors(name, U[b, :, : int(batch.ranks[b, i])].float(), V[b, :, : int(batch.ranks[b, i])]
                                 .float(), 2.0, "lora_alpha/r")
                   for i, ((U, V), name) in enumerate(zip(mods, batch.spec.names))]
        out.append(Adapter(f"{tag}-{b}", AdapterMeta("peft", base_model=base), modules))
    return out


def variants(test: list[Adapter], n: int, gen: torch.Generator) -> dict[str, list[Adapter]]:
    def remake(a: Adapter, fn) -> Adapter:
        return Adapter(a.source, a.meta, [ModuleFactors(m.name, *fn(m), m.scale, m.scale_source) for m in a.modules])

    def random_init(m: ModuleFactors):
        n_, m_, r = m.U.shape[0], m.V.shape[0], m.rank
        A = (torch.rand(r, m_, generator=gen) * 2 - 1) / m_ ** 0.5
        B = (torch.rand(n_, r, generator=gen) * 2 - 1) / r ** 0.5
        return 2.0 * B, A.T

    def random_match(m: ModuleFactors):
        U, V = torch.randn(m.U.shape, generator=gen), torch.randn(m.V.shape, generator=gen)
        ratio = (m.U @ m.V.T).norm() / (U @ V.T).norm()
        return U * ratio, V

    def pad_noise(m: ModuleFactors):
        k = float((m.U @ m.V.T).norm()) ** 0.5 * 0.1 / 4
        return (torch.cat([m.U, torch.randn(m.U.shape, generator=gen) * k / m.U.shape[0] ** 0.5], 1),
                torch.cat([m.V, torch.randn(m.V.shape, generator=gen) * k / m.V.shape[0] ** 0.5], 1))

    pick = test[:n]
    return {
        "random_init": [remake(a, random_init) for a in pick],
        "random_match": [remake(a, random_match) for a in pick],
        "inert": [remake(a, lambda m: (m.U * 0, m.V)) for a in pick],
        "scaled_x0.1": [remake(a, lambda m: (m.U * 0.1, m.V)) for a in pick],
        "scaled_x10": [remake(a, lambda m: (m.U * 10, m.V)) for a in pick],
        "scaled_x100": [remake(a, lambda m: (m.U * 100, m.V)) for a in pick],
        "padded_zero": [remake(a, lambda m: (torch.cat([m.U, m.U * 0], 1), torch.cat([m.V, m.V * 0], 1)))
                        for a in pick],
        "padded_noise": [remake(a, pad_noise) for a in pick],
    }


def score(ckpt, adapters: list[Adapter]) -> tuple[np.ndarray, list[list[str]]]:
    batch = LoraBatch.from_adapters(adapters, ckpt.spec, dtype=torch.float64)
    return ckpt.ood_scores(batch), [ckpt.check(a) for a in adapters]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("zoo", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--other", action="append", default=[], metavar="NAME=ZOO",
                    help="another zoo whose adapters count as a shifted distribution (repeatable)")
    ap.add_argument("--n", type=int, default=64, help="adapters per OOD kind")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint, "cpu")
    zoo = load_zoo(args.zoo)
    batch, _ = load_factors(zoo)
    rows = [i for i, s in enumerate(zoo.splits) if s == args.split]
    test = to_adapters(batch.respec(ckpt.spec).select(rows), ckpt.base_model, "test")
    gen = torch.Generator().manual_seed(0)
    kinds = variants(test, args.n, gen)
    accuracy = {}
    for item in args.other:
        name, _, path = item.partition("=")
        ob, _ = load_factors(load_zoo(path))
        kinds[f"other:{name}"] = to_adapters(ob.respec(ckpt.spec).select(range(min(args.n, ob.size))),
                                             ckpt.base_model, "other")
        found = eval_zoo(args.checkpoint, path, split="all", device="cpu")["metrics"]
        accuracy[f"other:{name}"] = {t: round(m.get("r2", m.get("auroc")), 3) for t, m in found.items()
                                     if t in ("quality", "membership", "noise")}
    s_id, why_id = score(ckpt, test)
    report: dict = {"checkpoint": ckpt.name, "in_distribution": {
        "n": len(test), "flagged": round(float(np.mean([bool(w) for w in why_id])), 3),
        "reasons": Counter(r.split(" is ")[0].split(" (")[0] for w in why_id for r in w).most_common(3)}}
    for kind, adapters in kinds.items():
        s, why = score(ckpt, adapters)
        y = np.r_[np.zeros(len(s_id)), np.ones(len(s))]
        pred = ckpt.predict(adapters[:1])[0]
        report[kind] = {
            "n": len(s), "auroc": round(float(auroc(y, np.r_[s_id, s])), 3),
            "flagged": round(float(np.mean([bool(w) for w in why])), 3),
            "top_reason": Counter(r.split(" is ")[0].split(" (")[0] for w in why for r in w).most_common(1),
            "example": {k: (v.get("value") if v["kind"] == "regression" else
                            max(v["probs"].items(), key=lambda kv: kv[1]) if v["probs"] else None)
                        for k, v in pred["tasks"].items()},
        }
        if kind in accuracy:  # quality R², membership / noise AUROC of the checkpoint on these adapters
            report[kind]["predicted_as_well_as"] = accuracy[kind]
    other = Adapter("other-modules", AdapterMeta("peft", base_model=ckpt.base_model),
                    [ModuleFactors(m.name.replace("query", "key"), m.U, m.V, m.scale, m.scale_source)
                     for m in test[0].modules])
    try:
        ckpt.check(other)
        report["other_modules"] = "accepted"
    except LolctlError as err:
        report["other_modules"] = f"refused: error[{err.code}]"
    for key, value in report.items():
        print(json.dumps({key: value}, default=str))


if __name__ == "__main__":
    main()
