"""One AdamW step over MLP+Dense's first layer for MiniLM (32 hidden units × 12 modules × 384 × 384 = 57 M weights),
unfused (torch's default) and fused (what ``lolctl.nn.train.adamw`` picks where torch has the kernel); the fused
parameters must end equal to the unfused ones (checked). One torch thread, median of --repeat steps after a warm-up.

    benchmarks/paused.sh python -m benchmarks.dense_optimizer
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import header, log, machine_info, markdown_table, seconds, timed

COMMAND = "python -m benchmarks.dense_optimizer"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=12 * 384 * 384, help="first-layer inputs per hidden unit")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = machine_info()
    start = torch.randn(args.hidden, args.inputs, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(args.hidden, args.inputs, generator=torch.Generator().manual_seed(1))
    rows, ends = [], []
    for label, options in (("unfused (torch default)", {}), ("fused (lolctl)", {"fused": True})):
        weight = torch.nn.Parameter(start.clone())
        weight.grad = grad
        opt = torch.optim.AdamW([weight], lr=1e-3, weight_decay=0.01, **options)
        log(f"timing {label} ...")
        t, _ = timed(opt.step, repeat=args.repeat, warmup=1)
        rows.append([label, f"{weight.numel():,}", seconds(t.median)])
        ends.append(weight.detach())
    assert torch.allclose(ends[0], ends[1], rtol=1e-5, atol=1e-6), "fused and unfused AdamW steps differ"
    print("\n".join([header("MLP+Dense: one AdamW step over the first layer", COMMAND, info),
                     f"One torch thread, median of {args.repeat} steps after one warm-up step; the same gradient "
                     "every step. Same parameters after the steps both ways (checked).\n",
                     markdown_table(["optimizer", "weights", "step"], rows)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
