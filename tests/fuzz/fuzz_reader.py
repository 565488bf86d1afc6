"""Long-run fuzzing of the reader with hypothesis (the same targets as tests/test_hostile_fuzz.py, many more inputs).

    python tests/fuzz/fuzz_reader.py --examples 20000            # per target; prints counts per outcome
    python tests/fuzz/fuzz_reader.py --examples 2000 --seed 7 --targets mutated configs

Exit status 0 when every input gave an Adapter or a LolctlError; 1 (with the shrunk failing input) otherwise.
Peak RSS is printed: with a 16 MiB ``max_bytes`` budget it must stay near the interpreter's own footprint.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import writers as w  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fuzz import targets as t  # noqa: E402

CONFIG = json.dumps(w.peft_config(rank=2)).encode()


def _inputs(name: str):
    """(strategy, function that writes one drawn input and returns (source, trust_pickle))."""
    if name == "bytes":
        return st.tuples(st.binary(max_size=512), st.booleans()), lambda d, x: (
            t.write_case(d, x[0], CONFIG if x[1] else None, "adapter_model.safetensors"), False)
    if name == "mutated":
        return t.mutated_safetensors(), lambda d, x: (
            t.write_case(d, x[1], CONFIG if x[0] == "peft" else None,
                         "adapter_model.safetensors" if x[0] == "peft" else "lora.safetensors"), False)
    if name == "configs":
        return t.configs(), lambda d, x: (t.write_case(d, t.BASES[0][1], x, "adapter_model.safetensors"), False)
    if name == "pickles":
        return st.binary(max_size=256), lambda d, x: (t.write_case(d, x, CONFIG, "adapter_model.bin"), True)
    if name == "mutated-pickles":
        return t.mutated_pickles(), lambda d, x: (t.write_case(d, x, CONFIG, "adapter_model.bin"), True)
    raise SystemExit(f"unknown target {name}")


def run(name: str, examples: int, rng_seed: int, folder: Path, counts: Counter) -> str | None:
    strategy, write = _inputs(name)

    @seed(rng_seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def target(x):
        source, trust = write(folder, x)
        counts[(name, t.check(source, trust_pickle=trust))] += 1

    try:
        target()
    except Exception:
        return traceback.format_exc()
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000, help="inputs per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--targets", nargs="*", default=["bytes", "mutated", "configs", "pickles", "mutated-pickles"])
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # torch warns about odd pickle protocols
    counts: Counter = Counter()
    failures = {}
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="lolctl-fuzz-") as d:
        for name in args.targets:
            failure = run(name, args.examples, args.seed, Path(d), counts)
            if failure:
                failures[name] = failure
    total = sum(counts.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"inputs tried: {total} in {time.time() - start:.0f} s, seed {args.seed}, peak RSS {rss:.0f} MiB")
    for name in args.targets:
        outcomes = {code: n for (tgt, code), n in sorted(counts.items()) if tgt == name}
        print(f"  {name:15} {sum(outcomes.values()):7d}  " + ", ".join(f"{c} {n}" for c, n in outcomes.items()))
    for name, failure in failures.items():
        print(f"\nFAILURE in target {name}:\n{failure}")
    print("result:", "FAILED" if failures else "no crash")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
