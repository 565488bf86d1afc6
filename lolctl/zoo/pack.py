"""Packed zoos: some splits of a zoo in one compact file, for shipping test sets in git and evaluating anywhere.

The layout (float16 factors with per-module float32 scales, one stacked block per rank) is
:mod:`lolctl.zoo.format`'s; :func:`lolctl.nn.data.load_factors` reads a packed zoo like any other.

    lolctl zoo pack zoo/minilm-wordnet tests/data/minilm-wordnet-test --split test
    lolctl zoo pack zoo/minilm-wordnet data/minilm-wordnet-train --split val --split train --append   # as it grows
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.nn.batch import LoraBatch
from lolctl.nn.data import load_factors
from lolctl.zoo.format import MANIFEST, Zoo, load_zoo, split_counts, write_packed
from lolctl.zoo.recipes.base import grows


def pack(zoo_dir: str | Path, out: str | Path, splits: Sequence[str], overwrite: bool = False,
         append: bool = False) -> dict[str, Any]:
    """Write the rows of ``splits`` of the zoo at ``zoo_dir`` as a packed zoo at ``out``; returns a summary.

    ``append``: ``out`` may already hold a packed zoo of the same recipe; the rows it lacks go to a new part file
    (none: nothing is written), so a zoo that is still building can be packed, and committed, as it grows."""
    zoo = load_zoo(zoo_dir)
    if zoo.packed:
        raise LolctlError("L176", str(zoo_dir), "this zoo is already packed", "pack the original zoo folder")
    keep = _rows_of(zoo, splits)
    out = Path(out)
    previous = None
    if append and (out / MANIFEST).is_file():
        previous = load_zoo(out)
        if not previous.packed or not grows(previous.manifest.get("recipe"), zoo.manifest.get("recipe")):
            raise LolctlError("L176", str(out), "not a packed zoo of the same recipe",
                              "append to a folder packed from this zoo, or pack into a new folder")
        have = set(previous.ids)
        keep = [i for i in keep if zoo.ids[i] not in have]
        if not keep:
            return {"out": str(out), "adapters": 0, "splits": {}, "ranks": [], "bytes": 0, "file": None,
                    "total": len(previous.rows)}
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise LolctlError("L176", str(out), "the output folder is not empty",
                              "pass --overwrite, --append (to add the rows it lacks) or another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    by_rank: dict[int, list[int]] = {}
    for i in keep:  # one stacked block per rank, so low ranks are not padded to the highest (0: rank unknown)
        text = str(zoo.rows[i].get("rank") or "0").strip()
        by_rank.setdefault(int(text) if text.isdigit() else 0, []).append(i)
    blocks: dict[int, tuple[list[str], LoraBatch]] = {}
    infos = []
    for rank, members in sorted(by_rank.items()):
        part = replace(zoo, rows=[zoo.rows[i] for i in members])
        batch, info = load_factors(part, cache=False)
        infos.append(info)
        blocks[rank] = (part.ids, batch)
    info = {"base_models": sorted({b for i in infos for b in i["base_models"]}),
            "scales": sorted({s for i in infos for s in i["scales"]})}
    rows = [zoo.rows[i] for i in keep]
    name = write_packed(out, zoo, str(zoo_dir), rows, blocks, info, previous)
    return {"out": str(out), "adapters": len(rows), "splits": split_counts(row["split"] for row in rows),
            "ranks": sorted(by_rank), "bytes": (out / name).stat().st_size, "file": name,
            "total": len(rows) + (len(previous.rows) if previous is not None else 0)}


def _rows_of(zoo: Zoo, splits: Sequence[str]) -> list[int]:
    """Indices of the rows of ``splits`` (L176 naming the splits there are when one has no rows)."""
    wanted = set(splits)
    keep = [i for i, s in enumerate(zoo.splits) if s in wanted]
    missing = sorted(wanted - {zoo.splits[i] for i in keep})
    if missing:
        raise LolctlError("L176", str(zoo.labels_path), f"no rows of split {missing[0]!r}",
                          f"choose from {', '.join(sorted({s for s in zoo.splits if s}))}")
    return keep
