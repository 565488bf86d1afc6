"""Packed zoos: some splits of a zoo in one compact file, for shipping test sets in git and evaluating anywhere.

A packed zoo is a folder with ``manifest.json`` (the zoo's, with a ``"packed"`` entry), ``labels.csv`` (the chosen
rows; ``path`` is ``factors.safetensors#<id>``) and ``factors.safetensors``: for every rank present, the stacked
factors of its adapters in :class:`~lolctl.nn.batch.LoraBatch` layout, stored as float16 after dividing each module's
U and V by their largest magnitude (kept in float32 beside them). That keeps float16's 11-bit precision for every
module however small its update (low-learning-rate LoRAs have entries far below float16's normal range), at half
the size of float32. :func:`lolctl.nn.data.load_factors` reads a packed zoo like any other.

    lolctl zoo pack zoo/minilm-wordnet tests/data/minilm-wordnet-test --split test
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lolctl.errors import LolctlError

FORMAT = "lolctl-packed/1"
FACTORS = "factors.safetensors"


def _scaled(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, n, R) → float16 values in [-1, 1] and the float32 (B, L) scale that restores them."""
    scale = t.abs().amax(dim=(2, 3)).float()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (t / safe[:, :, None, None]).to(torch.float16).contiguous(), scale.contiguous()


def pack(zoo_dir: str | Path, out: str | Path, splits: Sequence[str], overwrite: bool = False) -> dict[str, Any]:
    """Write the rows of ``splits`` of the zoo at ``zoo_dir`` as a packed zoo at ``out``; returns a summary."""
    from safetensors.torch import save

    from lolctl.nn.data import load_factors, load_zoo
    from lolctl.zoo.builder import LABELS, MANIFEST

    zoo = load_zoo(zoo_dir)
    if zoo.manifest.get("packed"):
        raise LolctlError("L176", str(zoo_dir), "this zoo is already packed", "pack the original zoo folder")
    wanted = set(splits)
    keep = [i for i, s in enumerate(zoo.splits) if s in wanted]
    missing = sorted(wanted - {zoo.splits[i] for i in keep})
    if missing:
        raise LolctlError("L176", str(zoo.labels_path), f"no rows of split {missing[0]!r}",
                          f"choose from {', '.join(sorted({s for s in zoo.splits if s}))}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise LolctlError("L176", str(out), "the output folder is not empty", "pass --overwrite or another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    rows = [zoo.rows[i] for i in keep]
    by_rank: dict[int, list[int]] = {}
    for i in keep:  # one stacked block per rank, so low ranks are not padded to the highest (0: rank unknown)
        text = str(zoo.rows[i].get("rank") or "0").strip()
        by_rank.setdefault(int(text) if text.isdigit() else 0, []).append(i)
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, list[str]] = {}
    infos = []
    for rank, members in sorted(by_rank.items()):
        part = _subset(zoo, members)
        batch, info = load_factors(part, cache=False)
        infos.append(info)
        index[str(rank)] = part.ids
        tensors[f"r{rank}.ranks"] = batch.ranks.contiguous()
        for k, g in enumerate(batch.groups):
            for name, t in (("U", g.U), ("V", g.V)):
                values, scale = _scaled(t)
                tensors[f"r{rank}.group{k}.{name}"] = values
                tensors[f"r{rank}.group{k}.{name}_scale"] = scale
        spec = batch.spec
    info = {"base_models": sorted({b for i in infos for b in i["base_models"]}),
            "scales": sorted({s for i in infos for s in i["scales"]})}
    meta = {"format": FORMAT, "spec": json.dumps(spec.to_dict()), "ids": json.dumps(index), "info": json.dumps(info)}
    (out / FACTORS).write_bytes(save(tensors, metadata=meta))  # save_file would make it 0600

    columns = list(rows[0])
    with (out / LABELS).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": f"{FACTORS}#{row.get('id') or row['path']}"})
    manifest = {k: v for k, v in zoo.manifest.items() if k != "adapters"}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["split"]] = counts.get(row["split"], 0) + 1
    manifest["packed"] = {"format": FORMAT, "file": FACTORS, "dtype": "float16 (per-module scale in float32)",
                          "from": str(zoo_dir), "splits": counts,
                          "adapters": {r.get("id"): zoo.manifest.get("adapters", {}).get(r.get("id")) for r in rows}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "adapters": len(rows), "splits": counts, "ranks": sorted(by_rank),
            "bytes": (out / FACTORS).stat().st_size}


def _subset(zoo: Any, members: list[int]) -> Any:
    from dataclasses import replace

    return replace(zoo, rows=[zoo.rows[i] for i in members])


def is_packed(zoo: Any) -> bool:
    return bool(zoo.manifest.get("packed"))


def load_packed(zoo: Any, dtype: torch.dtype = torch.float32) -> tuple[Any, dict[str, Any]]:
    """The factors of a packed zoo's rows (in row order) as one LoraBatch, and the reader info."""
    from safetensors import SafetensorError, safe_open

    from lolctl.nn.batch import GroupFactors, LoraBatch, laid_out
    from lolctl.nn.spec import InputSpec

    name = str((zoo.manifest.get("packed") or {}).get("file") or FACTORS)
    if Path(name).name != name or name in (".", ".."):  # the manifest must not point outside the zoo folder
        raise LolctlError("L176", f"{zoo.root / 'manifest.json'}: packed.file", f"{name!r} is not a file name",
                          "repack with lolctl zoo pack")
    path = zoo.root / name
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT:
                raise LolctlError("L176", str(path), f"not a {FORMAT} file", "repack with lolctl zoo pack")
            spec = InputSpec.from_dict(json.loads(meta["spec"]))
            index = json.loads(meta["ids"])
            info = json.loads(meta["info"])
            parts: list[LoraBatch] = []
            where: dict[str, int] = {}
            for rank, ids in index.items():
                groups = []
                for k, g in enumerate(spec.groups):
                    UV = []
                    for name in ("U", "V"):
                        values = fh.get_tensor(f"r{rank}.group{k}.{name}").to(dtype)
                        scale = fh.get_tensor(f"r{rank}.group{k}.{name}_scale").to(dtype)
                        UV.append(laid_out(values * scale[:, :, None, None]))
                    groups.append(GroupFactors(g.indices, UV[0], UV[1]))
                offset = sum(p.size for p in parts)
                parts.append(LoraBatch(spec, tuple(groups), fh.get_tensor(f"r{rank}.ranks")))
                where.update({lora_id: offset + j for j, lora_id in enumerate(ids)})
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise LolctlError("L176", str(path), f"cannot read the packed factors ({err})",
                          "repack with lolctl zoo pack") from err
    batch = LoraBatch.cat(parts)
    order = []
    for i, lora_id in enumerate(zoo.ids):
        if lora_id not in where:
            raise LolctlError("L176", f"{zoo.labels_path}: row {i + 2}", f"{lora_id!r} is not in {path.name}",
                              "use the labels.csv written with the packed file")
        order.append(where[lora_id])
    return batch.select(order), info
