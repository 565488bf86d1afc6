"""The default checkpoint's predictions on the committed test split, with and without shared member features.

The shipped checkpoint is a composite of GL-nets with the same anchor adapters and probe basis. ``load_checkpoint``
makes those equal buffers one tensor, so ``LoraBatch.cached`` computes the parameter-free features once per batch for
all members; "separate" clones every buffer after loading, so each member computes its own (as before the change).
Both must give the same predictions (checked). One torch thread, median of --repeat runs after a warm-up.

    benchmarks/paused.sh python -m benchmarks.composite_predict
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from benchmarks.common import REPO, header, log, machine_info, markdown_table, seconds, timed

COMMAND = "python -m benchmarks.composite_predict"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapters", type=int, default=200, help="test adapters per batch")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    from lolctl.nn.checkpoint import load_checkpoint
    from lolctl.nn.data import load_factors
    from lolctl.zoo.format import load_zoo

    torch.set_num_threads(1)
    info = machine_info()
    ckpt = load_checkpoint(str(REPO / "models" / "minilm-wordnet-glnet"), device="cpu")
    batch, _ = load_factors(load_zoo(REPO / "tests" / "data" / "minilm-wordnet-test"), cache=False)
    batch = batch.respec(ckpt.spec).select(np.arange(min(args.adapters, batch.size)))
    rows, outputs = [], {}
    for label in ("shared (load_checkpoint)", "separate (every buffer cloned)"):
        if label.startswith("separate"):
            for mod in ckpt.model.modules():
                for name, buf in mod._buffers.items():
                    if buf is not None:
                        mod._buffers[name] = buf.clone()
        log(f"timing {label} ...")
        t, outputs[label] = timed(lambda: ckpt.predict_batch(replace(batch, memo={})),  # a new memo per run
                                  repeat=args.repeat, warmup=1)
        rows.append([label, batch.size, seconds(t.median), f"{1e3 * t.median / batch.size:.2f} ms"])
    a, b = outputs.values()
    assert all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a), "shared and separate predictions differ"
    print("\n".join([header("Default checkpoint: predictions with shared member features", COMMAND, info),
                     f"`Checkpoint.predict_batch` of the first {batch.size} adapters of the committed test split, "
                     f"one torch thread, median of {args.repeat}. Same predictions both ways (checked).\n",
                     markdown_table(["member features", "adapters", "predict_batch", "per adapter"], rows)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
