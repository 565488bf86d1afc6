"""The zoo on disk, read and written here only: manifest, labels (``labels.csv`` and each LoRA's ``meta.json``), the
adapter folders and the packed layout. The builder writes through it, :mod:`lolctl.nn.data` and :mod:`lolctl.zoo.info`
read through it, :mod:`lolctl.zoo.pack` packs through it (docs/zoo.md describes the format for users).

A built zoo::

    ZOO/manifest.json         format, status, tasks, recipe settings, versions, base model id + hash, facts, planned
                              splits, adapter hashes (of the LoRAs finished so far)
    ZOO/labels.csv            id, path, split, rank, targets..., hp.* (one row per finished LoRA; ``path`` is
                              relative to ZOO)
    ZOO/adapters/lora-00012/  adapter_config.json, adapter_model.safetensors (a standard PEFT LoRA), meta.json
    ZOO/cache/                frozen work from the recipe's prepare step

``manifest.json["tasks"]`` lists ``{"name", "kind", "columns", "labels"}``. The per-LoRA ``meta.json`` files are the
truth: ``labels.csv`` is rebuilt from them. A bare labels CSV without a manifest works too: tasks are inferred
(numeric column → regression, ``name[label]`` column groups → multilabel, a text column with few values →
multiclass), and paths are relative to the CSV's folder.

A packed zoo (``lolctl zoo pack``) is a folder with ``manifest.json`` (the zoo's, with a ``"packed"`` entry),
``labels.csv`` (the chosen rows; ``path`` is ``factors.safetensors#<id>``) and ``factors.safetensors``: for every rank
present, the stacked factors of its adapters in :class:`~lolctl.nn.batch.LoraBatch` layout, stored as float16 after
dividing each module's U and V by their largest magnitude (kept in float32 beside them). That keeps float16's 11-bit
precision for every module however small its update, at half the size of float32. A packed zoo grows by parts
(``lolctl zoo pack --append``: the rows not yet packed go to ``factors-1.safetensors``, ``factors-2…``; the manifest
lists the files and each row's ``path`` names its own), so a zoo that is still building can be packed as it grows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lolctl.errors import LolctlError
from lolctl.nn.spec import InputSpec, TaskSpec

if TYPE_CHECKING:
    import torch

    from lolctl.nn.batch import LoraBatch
    from lolctl.zoo.recipes.base import Job, Trained

ZOO_FORMAT = "lolctl-zoo/1"
PACKED_FORMAT = "lolctl-packed/1"
MANIFEST = "manifest.json"
LABELS = "labels.csv"
ADAPTERS = "adapters"
META = "meta.json"
FACTORS = "factors.safetensors"
RESERVED = ("id", "path", "split", "rank")
HYPERPARAMETER_PREFIX = "hp."
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
_LABEL_COL = re.compile(r"^(?P<task>[^\[\]]+)\[(?P<label>[^\[\]]+)\]$")


@dataclass
class Zoo:
    root: Path  # adapter paths are relative to this folder
    labels_path: Path
    tasks: tuple[TaskSpec, ...]
    rows: list[dict[str, str]]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [row.get("id") or row["path"] for row in self.rows]

    @property
    def paths(self) -> list[Path]:
        return [self.root / row["path"] for row in self.rows]

    @property
    def splits(self) -> list[str | None]:
        """Split per row: train / val / test (synonyms mapped), any other name kept as-is (an extra held-out set,
        e.g. ``test_r8``, never trained on), None where empty."""
        out: list[str | None] = []
        for row in self.rows:
            value = (row.get("split") or "").strip()
            out.append(SPLIT_NAMES.get(value.lower(), value) if value else None)
        return out

    @property
    def packed(self) -> bool:
        return bool(self.manifest.get("packed"))

    @property
    def base_model(self) -> str | None:
        """The manifest's base model id (``"base_model"``: a string or {"id": ...}; else ``recipe.base_model``)."""
        for value in (self.manifest.get("base_model"), self.manifest.get("recipe", {}).get("base_model")):
            if isinstance(value, dict):
                value = value.get("id")
            if isinstance(value, str) and value:
                return value
        return None

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise LolctlError(
            "L180", f"--task {name}", "no such task in the zoo", f"choose from {', '.join(t.name for t in self.tasks)}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "labels_file": str(self.labels_path),
            "adapters": len(self.rows),
            "labels_sha256": hashlib.sha256(self.labels_path.read_bytes()).hexdigest(),
            # the manifest without its per-adapter hashes (1,696 lines for the flagship zoo; labels_sha256 pins it)
            "recipe": {k: v for k, v in self.manifest.items() if k not in ("tasks", "adapters")},
        }


# -- reading ------------------------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict[str, Any]:
    """A zoo's manifest.json (L176 when it is not a JSON object)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LolctlError("L176", str(path), f"not valid JSON ({err})", "rebuild the zoo") from err
    if not isinstance(manifest, dict):
        raise LolctlError("L176", str(path), "the manifest is not a JSON object", "rebuild the zoo")
    return manifest


def read_labels(path: Path, empty_ok: bool = False) -> list[dict[str, str]]:
    """The rows of a labels CSV (L175 when unreadable, or without rows or a ``path`` column unless ``empty_ok``)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LolctlError("L175", str(path), f"cannot read the labels file ({err})", "pass a UTF-8 CSV") from err
    if not empty_ok and (not rows or "path" not in rows[0]):
        raise LolctlError("L175", str(path), "the labels file needs a 'path' column and at least one row",
                          "add a header line with id,path,split,rank and target columns")
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def infer_tasks(rows: list[dict[str, str]]) -> tuple[TaskSpec, ...]:
    """Tasks of a bare labels CSV: name[label] groups → multilabel, numeric → regression, few strings → multiclass.
    ``hp.*`` columns are the build's hyperparameters (inputs, some restating a target exactly): never targets."""
    groups: dict[str, list[str]] = {}
    tasks: list[TaskSpec] = []
    for col in rows[0]:
        if col in RESERVED or col.startswith(HYPERPARAMETER_PREFIX):
            continue
        match = _LABEL_COL.match(col)
        if match:
            groups.setdefault(match["task"], []).append(match["label"])
            continue
        values = [row[col] for row in rows if row[col] not in ("", None)]
        if values and all(_is_number(v) for v in values):
            tasks.append(TaskSpec(col, "regression", (col,)))
        elif values and len(set(values)) <= min(50, max(2, len(values) // 2)):
            tasks.append(TaskSpec(col, "multiclass", (col,), tuple(sorted(set(values)))))
    for name, labels in groups.items():
        tasks.append(TaskSpec(name, "multilabel", tuple(f"{name}[{lab}]" for lab in labels), tuple(labels)))
    return tuple(tasks)


def manifest_tasks(manifest: dict[str, Any], path: Path) -> tuple[TaskSpec, ...]:
    tasks = []
    for i, t in enumerate(manifest.get("tasks") or []):
        try:
            kind, name = t["kind"], t["name"]
            labels = tuple(t.get("labels") or ())
            default = [f"{name}[{lab}]" for lab in labels] if kind == "multilabel" else [name]
            tasks.append(TaskSpec(name, kind, tuple(t.get("columns") or default), labels))
        except (KeyError, TypeError) as err:
            raise LolctlError("L176", f"{path}: tasks[{i}]", f"malformed task ({err})", "see docs/models.md") from err
    return tuple(tasks)


def load_zoo(source: str | Path) -> Zoo:
    """A zoo folder (manifest.json + labels.csv), a packed zoo, or a labels CSV (inside a zoo folder or bare)."""
    path = Path(source)
    if not path.exists():
        raise LolctlError("L100", str(path), "no such zoo folder or labels file", "check the path")
    if path.is_dir():
        labels = path / LABELS
        if not labels.is_file():
            raise LolctlError("L176", str(path), "the zoo folder has no labels.csv", "build the zoo or pass a CSV")
        root = path
    else:
        labels, root = path, path.parent
    rows = read_labels(labels)
    manifest_path = root / MANIFEST
    # a zoo folder, or a labels CSV inside one (e.g. a subset of its rows)
    manifest = read_manifest(manifest_path) if manifest_path.is_file() else {}
    tasks = manifest_tasks(manifest, manifest_path) if manifest.get("tasks") else infer_tasks(rows)
    missing = [c for t in tasks for c in t.columns if c not in rows[0]]
    if missing:
        raise LolctlError("L175", str(labels), f"column {missing[0]!r} named by a task is missing", "fix the labels")
    return Zoo(root, labels, tasks, rows, manifest)


def built_rows(zoo: Path, manifest: dict[str, Any]) -> list[dict[str, str]]:
    """The label rows of the LoRAs on disk: from their meta.json files where the zoo has adapter folders (labels.csv
    may lag a running build), else labels.csv's (a packed zoo); [] when there are neither."""
    if (zoo / ADAPTERS).is_dir():
        return list(csv.DictReader(io.StringIO(labels_text(read_metas(zoo), manifest["tasks"]))))
    return read_labels(zoo / LABELS, empty_ok=True) if (zoo / LABELS).exists() else []


# -- writing (the builder) ----------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def adapter_files(trained: Trained, base_model: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config dict, state dict) exactly as PEFT saves a LoRA: lora_A = Vᵀ (r × m), lora_B = U / s (n × r)."""
    scale = trained.alpha / trained.rank
    state = {}
    modules = []
    for path, (U, V) in trained.factors.items():
        state[f"{path}.lora_A.weight"] = V.T.contiguous().float()
        state[f"{path}.lora_B.weight"] = (U / scale).contiguous().float()
        modules.append(path.rsplit(".", 1)[-1])
    config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model, "revision": None,
        "r": trained.rank, "lora_alpha": trained.alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(set(modules)), "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None, "layers_to_transform": None,
        "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, **trained.peft,
    }
    return config, state


def write_lora(zoo: Path, job: Job, trained: Trained, base_model: str) -> dict[str, Any]:
    """Write one LoRA folder atomically (tmp folder + rename) and return its meta record."""
    from safetensors.torch import save

    config, state = adapter_files(trained, base_model)
    blob = save(state, metadata={"format": "pt"})
    meta = {"id": job.id, "index": job.index, "path": f"{ADAPTERS}/{job.id}", "split": job.split, "rank": job.rank,
            "targets": trained.targets, "hp": trained.hp, "sha256": hashlib.sha256(blob).hexdigest()}
    final = zoo / ADAPTERS / job.id
    tmp = zoo / ADAPTERS / f".tmp-{job.id}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "adapter_model.safetensors").write_bytes(blob)
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / META).write_text(json.dumps(meta, indent=2, allow_nan=True) + "\n")
    try:
        tmp.rename(final)
    except OSError:  # another process finished the same LoRA first; the content is identical by construction
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def remove_partial(zoo: Path) -> None:
    """Delete the temporary folders of LoRAs a killed build left half-written."""
    for stale in (zoo / ADAPTERS).glob(".tmp-*") if (zoo / ADAPTERS).exists() else []:
        shutil.rmtree(stale, ignore_errors=True)


def done_ids(zoo: Path) -> set[str]:
    root = zoo / ADAPTERS
    return {p.name for p in root.iterdir() if (p / META).exists()} if root.exists() else set()


def read_metas(zoo: Path) -> list[dict[str, Any]]:
    metas = [json.loads((p / META).read_text()) for p in sorted((zoo / ADAPTERS).glob("lora-*"))
             if (p / META).exists()]
    return sorted(metas, key=lambda m: m["index"])


def labels_text(metas: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> str:
    """labels.csv: id, path, split, rank, every task column, then hp.* columns (union over rows, sorted)."""
    target_cols = [c for t in tasks for c in t["columns"]]
    hp_cols = sorted({k for m in metas for k in m["hp"]})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "path", "split", "rank", *target_cols, *[f"{HYPERPARAMETER_PREFIX}{k}" for k in hp_cols]])
    for m in metas:
        writer.writerow([m["id"], m["path"], m["split"], m["rank"], *[m["targets"].get(c, "") for c in target_cols],
                         *[m["hp"].get(k, "") for k in hp_cols]])
    return buf.getvalue()


def write_labels(zoo: Path, metas: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
    write_atomic(zoo / LABELS, labels_text(metas, tasks))


def write_manifest(zoo: Path, *, status: str, recipe: dict[str, Any], tasks: list[dict[str, Any]],
                   base_model: dict[str, Any], versions: dict[str, str], facts: dict[str, Any],
                   splits: dict[str, int], metas: list[dict[str, Any]]) -> None:
    manifest = {
        "format": ZOO_FORMAT, "status": status, "recipe": recipe, "tasks": tasks, "base_model": base_model,
        "versions": versions, "facts": facts, "splits": splits,
        "adapters": {m["id"]: "sha256:" + m["sha256"] for m in metas},
    }
    write_atomic(zoo / MANIFEST, json.dumps(manifest, indent=2) + "\n")


# -- the packed layout --------------------------------------------------------------------------------------------
def _scaled(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, n, R) → float16 values in [-1, 1] and the float32 (B, L) scale that restores them."""
    import torch

    scale = t.abs().amax(dim=(2, 3)).float()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (t / safe[:, :, None, None]).to(torch.float16).contiguous(), scale.contiguous()


def packed_files(manifest: dict[str, Any], where: str) -> list[str]:
    """The factor files a packed zoo's manifest lists (``packed.files``; ``packed.file`` for a one-part zoo), each a
    bare file name: the manifest must not point outside the zoo folder (L176 naming ``where``)."""
    packed = manifest.get("packed") or {}
    names = packed.get("files") or [packed.get("file") or FACTORS]
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise LolctlError("L176", f"{where}: packed.files", f"{name!r} is not a file name",
                              "repack with lolctl zoo pack")
    return list(names)


def write_packed(out: Path, zoo: Zoo, source: str, rows: Sequence[dict[str, str]],
                 blocks: dict[int, tuple[list[str], LoraBatch]], info: dict[str, Any],
                 previous: Zoo | None = None) -> str:
    """Write ``rows`` of ``zoo`` (read from ``source``) as a packed zoo in the empty folder ``out``, or with
    ``previous`` (the packed zoo already at ``out``) as its next part; returns the factor file's name. ``blocks``
    holds per rank the ids and stacked factors of its adapters; ``info`` is the reader info (base models, scales)."""
    from safetensors.torch import save

    files = packed_files(previous.manifest, str(out / MANIFEST)) if previous is not None else []
    name = f"factors-{len(files)}.safetensors" if files else FACTORS
    tensors = {}
    for rank, (_, batch) in blocks.items():
        tensors[f"r{rank}.ranks"] = batch.ranks.contiguous()
        for k, g in enumerate(batch.groups):
            for part, t in (("U", g.U), ("V", g.V)):
                tensors[f"r{rank}.group{k}.{part}"], tensors[f"r{rank}.group{k}.{part}_scale"] = _scaled(t)
    spec = next(iter(blocks.values()))[1].spec
    meta = {"format": PACKED_FORMAT, "spec": json.dumps(spec.to_dict()),
            "ids": json.dumps({str(rank): ids for rank, (ids, _) in blocks.items()}), "info": json.dumps(info)}
    new_rows = [{**row, "path": f"{name}#{row.get('id') or row['path']}"} for row in rows]
    all_rows = (previous.rows if previous is not None else []) + new_rows
    if set(all_rows[0]) != set(new_rows[0]):
        raise LolctlError("L176", str(out / LABELS), "the new rows have other label columns than the packed ones",
                          "pack into a new folder")
    (out / name).write_bytes(save(tensors, metadata=meta))  # save_file would make it 0600
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(all_rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(all_rows)
    base = previous.manifest if previous is not None else {k: v for k, v in zoo.manifest.items() if k != "adapters"}
    hashes = dict((base.get("packed") or {}).get("adapters") or {})
    hashes.update({r.get("id"): zoo.manifest.get("adapters", {}).get(r.get("id")) for r in rows})
    packed = {"format": PACKED_FORMAT, "dtype": "float16 (per-module scale in float32)", "from": source,
              "splits": split_counts(row["split"] for row in all_rows), "adapters": hashes}
    packed.update({"files": files + [name]} if files else {"file": name})
    manifest = {**base, "status": zoo.manifest.get("status", base.get("status")), "packed": packed}
    for key in ("recipe", "splits"):  # a grown source (recipes.base.grows) describes the larger plan
        if key in zoo.manifest:
            manifest[key] = zoo.manifest[key]
    # labels before manifest: a reader of the old manifest finds every old row (in the old file) either way
    write_atomic(out / LABELS, text.getvalue())
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return name


def split_counts(splits: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for split in splits:
        counts[split] = counts.get(split, 0) + 1
    return counts


def read_packed(zoo: Zoo, dtype: torch.dtype | None = None) -> tuple[LoraBatch, dict[str, Any]]:
    """The factors of a packed zoo's rows (in row order) as one LoraBatch, and the reader info (of all parts)."""
    from lolctl.nn.batch import LoraBatch

    files = packed_files(zoo.manifest, str(zoo.root / MANIFEST))
    wanted: dict[str, list[str]] = {}
    for row in zoo.rows:  # each row's path names its part: "factors-1.safetensors#lora-00012"
        name, sep, _ = row["path"].partition("#")
        wanted.setdefault(name if sep and name in files else files[0], []).append(row.get("id") or row["path"])
    parts: list[LoraBatch] = []
    where: dict[str, int] = {}
    infos: list[dict[str, Any]] = []
    for name in wanted:
        batch, ids, info = _read_part(zoo.root / name, dtype)
        if parts:
            batch = batch.respec(parts[0].spec)  # L171 when a part's modules differ
        offset = sum(p.size for p in parts)
        where.update({lora_id: offset + j for j, lora_id in enumerate(ids)})
        parts.append(batch)
        infos.append(info)
    order = []
    for i, lora_id in enumerate(zoo.ids):
        if lora_id not in where:
            raise LolctlError("L176", f"{zoo.labels_path}: row {i + 2}", f"{lora_id!r} is not in the packed factors",
                              "use the labels.csv written with the packed file")
        order.append(where[lora_id])
    info = {"base_models": sorted({b for i in infos for b in i.get("base_models", [])}),
            "scales": sorted({s for i in infos for s in i.get("scales", [])})}
    return LoraBatch.cat(parts).select(order), info


def _read_part(path: Path, dtype: torch.dtype | None) -> tuple[LoraBatch, list[str], dict[str, Any]]:
    """One packed factor file: its adapters as a LoraBatch (rank blocks in file order), their ids and reader info."""
    import torch
    from safetensors import SafetensorError, safe_open

    from lolctl.nn.batch import GroupFactors, LoraBatch, laid_out

    dtype = dtype or torch.float32
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != PACKED_FORMAT:
                raise LolctlError("L176", str(path), f"not a {PACKED_FORMAT} file", "repack with lolctl zoo pack")
            spec = InputSpec.from_dict(json.loads(meta["spec"]))
            blocks: list[LoraBatch] = []
            ids: list[str] = []
            for rank, block_ids in json.loads(meta["ids"]).items():
                groups = []
                for k, g in enumerate(spec.groups):
                    UV = []
                    for part in ("U", "V"):
                        values = fh.get_tensor(f"r{rank}.group{k}.{part}").to(dtype)
                        scale = fh.get_tensor(f"r{rank}.group{k}.{part}_scale").to(dtype)
                        UV.append(laid_out(values * scale[:, :, None, None]))
                    groups.append(GroupFactors(g.indices, UV[0], UV[1]))
                blocks.append(LoraBatch(spec, tuple(groups), fh.get_tensor(f"r{rank}.ranks")))
                ids += block_ids
            info = json.loads(meta["info"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise LolctlError("L176", str(path), f"cannot read the packed factors ({err})",
                          "repack with lolctl zoo pack") from err
    return LoraBatch.cat(blocks), ids, info
