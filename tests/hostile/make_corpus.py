"""Generate the hostile corpus: bad adapters, each with the outcome lolctl must produce.

    python tests/hostile/make_corpus.py OUT_DIR [--outside DIR]

writes one folder per case under OUT_DIR and ``OUT_DIR/expected.json`` (the table of expected outcomes: kind, code,
exit status of ``lolctl inspect``, target, extra args). The ``--outside`` folder (default ``OUT_DIR-outside``) gets
the targets of escaping symlinks and ``markers/``, where planted code would leave a file if anything ever ran it.
A correct lolctl never reads or writes anything in that folder. ``OUT_DIR/_importable/`` holds the planted module
(``lolctl_hostile_marker``); put it on PYTHONPATH to prove that nothing imports it.

Every case is written from code (``cases_*.py``, ``writers.py``): there are no binary fixtures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hostile` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hostile import cases_adapter, cases_st  # noqa: E402,F401  (importing registers the cases)
from hostile import writers as w  # noqa: E402
from hostile.registry import CASES, IMPORTABLE, MARKER_MODULE, Case, Ctx  # noqa: E402


def build_corpus(root: Path, outside: Path | None = None, only: list[str] | None = None) -> list[Case]:
    """Write every case (or those named in ``only``) under ``root``; return the cases with their targets."""
    root = Path(root).resolve()
    outside = Path(outside).resolve() if outside else root.with_name(root.name + "-outside")
    root.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(root, outside)
    ctx.markers.mkdir(parents=True, exist_ok=True)
    (root / IMPORTABLE).mkdir(exist_ok=True)
    (root / IMPORTABLE / f"{MARKER_MODULE}.py").write_text(w.marker_module_source(ctx.markers, "pythonpath"))
    out: list[Case] = []
    for template, builder in CASES:
        if only is not None and template.name not in only:
            continue
        folder = root / template.name
        rel = builder(ctx, folder)
        c = Case(**template.expected)  # a copy: the registry stays untouched
        c.target = template.name + (f"/{rel}" if rel else "")
        out.append(c)
    table = {"outside": str(outside), "markers": str(ctx.markers), "cases": [c.expected for c in out]}
    (root / "expected.json").write_text(json.dumps(table, indent=1) + "\n")
    return out


def load_expected(root: Path) -> list[Case]:
    return [Case(**c) for c in json.loads((Path(root) / "expected.json").read_text())["cases"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write the corpus into (created)")
    p.add_argument("--outside", type=Path, default=None, help="sentinel folder outside the corpus")
    p.add_argument("--only", nargs="*", default=None, help="case names to write (default: all)")
    args = p.parse_args(argv)
    cases = build_corpus(args.out, args.outside, args.only)
    bad = sum(c.kind != "ok" for c in cases)
    print(f"wrote {len(cases)} cases ({bad} hostile) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
