"""Training cost per step of the shipped model's candidates, on MiniLM-shaped adapters (the default checkpoint's input
spec: 12 modules of 384 × 384 at r = 4) with synthetic factors: MLP+SVD with its singular values computed on every
step and once per adapter (``lolctl.nn.train.runner``, what ``fit`` does), MLP+Dense with the dense first layer and
with ``low_rank=16``, and GL-net as in the shipped candidate (anchors, no probes). One AdamW step on a batch of 32
(``TrainConfig``'s default), one torch thread, median of --repeat steps after a warm-up; the two MLP+SVD ways must
give the same outputs (checked). "per 1,000 adapters" is an epoch's worth of steps, without validation.

    benchmarks/paused.sh python -m benchmarks.train_step
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import REPO, header, log, machine_info, markdown_table, seconds, timed
from lolctl.nn import build_model
from lolctl.nn.batch import LoraBatch
from lolctl.nn.spec import InputSpec, TaskSpec
from lolctl.nn.train import TrainConfig, adamw, runner
from lolctl.testing import random_factors

COMMAND = "python -m benchmarks.train_step"
CHECKPOINT = REPO / "models" / "minilm-wordnet-glnet" / "config.json"
CANDIDATES = (  # (label, architecture, settings, cached features)
    ("MLP+SVD, singular values every step", "mlp_svd", {"unit_norm": True}, False),
    ("MLP+SVD, singular values once (lolctl)", "mlp_svd", {"unit_norm": True}, True),
    ("MLP+Dense, dense first layer", "mlp_dense", {"unit_norm": True, "head_hidden": 32}, False),
    ("MLP+Dense, low_rank=16 (lolctl)", "mlp_dense", {"unit_norm": True, "head_hidden": 32, "low_rank": 16}, False),
    ("GL-net (hidden=8, anchors=64)", "glnet",
     {"unit_norm": True, "hidden": 8, "anchors": 64, "equiv_dropout": 0.2}, False),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapters", type=int, default=256, help="synthetic adapters (the features cache covers them)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", default="", help="comma-separated architectures to run (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = machine_info()
    config = json.loads(CHECKPOINT.read_text())
    spec = InputSpec.from_dict(config["input_spec"])
    task = TaskSpec("quality", "regression", ("quality",))
    gen = torch.Generator().manual_seed(0)
    batch = LoraBatch.from_factors(spec, random_factors([m.shape for m in spec.modules], 4, args.adapters,
                                                        generator=gen)).to(dtype=torch.float32)
    target = torch.randn(args.adapters, 1, generator=gen)
    rows, outputs = [], {}
    bs = TrainConfig().batch_size
    for label, arch, values, cached in CANDIDATES:
        if args.only and arch not in args.only.split(","):
            continue
        torch.manual_seed(0)
        model = build_model(arch, values, spec, (task,))
        model.prepare(batch)
        t0 = time.perf_counter()
        run = runner(model, batch) if cached else (lambda idx, model=model: model(batch.select(idx)))
        setup = time.perf_counter() - t0
        opt = adamw(model, TrainConfig())
        model.train()
        steps = iter(range(10**9))

        def step(model=model, run=run, opt=opt, steps=steps) -> None:
            start = next(steps) * bs % max(1, args.adapters - bs + 1)
            idx = torch.arange(start, start + bs)
            opt.zero_grad(set_to_none=True)
            loss = (run(idx)["quality"] - target[idx]).square().mean()
            loss.backward()
            opt.step()

        log(f"timing {label} ...")
        t, _ = timed(step, repeat=args.repeat, warmup=1)
        if arch == "mlp_svd":
            model.eval()
            with torch.no_grad():
                outputs[cached] = run(torch.arange(min(bs, args.adapters)))["quality"]
        weights = sum(p.numel() for p in model.parameters())
        rows.append([label, f"{weights:,}", seconds(t.median), seconds(t.median * 1000 / bs),
                     seconds(setup) if cached else "–"])
    if len(outputs) == 2:  # same weights after the same steps, so the same outputs
        assert torch.allclose(outputs[True], outputs[False], rtol=1e-4, atol=1e-5), "cached features differ"
    print("\n".join([header("Training cost per step of the shipped model's candidates", COMMAND, info),
                     f"One torch thread, batch of {bs} MiniLM-shaped adapters (r = 4, synthetic), one AdamW step; "
                     f"median of {args.repeat} steps after one warm-up. The MLP+SVD rows reach the same outputs "
                     "(checked).\n",
                     markdown_table(["candidate", "weights", "step", "per 1,000 adapters", "one-time features"],
                                    rows)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
