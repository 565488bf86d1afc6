"""Read any LoRA adapter into exact typed factors (U = s·B, V = Aᵀ, U Vᵀ = ΔW). Formats: docs/formats.md.

    adapter = read_adapter("path/to/adapter")      # PEFT folder, a folder holding one adapter, or a weights file
    paths = find_adapters("path/to/many")          # every adapter below a folder (for `lolctl scan`)

Format detection looks at file names and tensor keys only; configs are plain JSON; pickles need ``trust_pickle``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter
from lolctl.read.codes import READER_FINDINGS, finding
from lolctl.read.config import load_config
from lolctl.read.detect import classify, custom_layout_hint
from lolctl.read.diffusers import read_diffusers
from lolctl.read.kohya import read_kohya
from lolctl.read.mlx import is_mlx_config, looks_mlx, read_mlx
from lolctl.read.peft import read_peft
from lolctl.read.pickle_io import PICKLE_SUFFIXES
from lolctl.read.refuse import refuse_by_keys, refuse_peft_type
from lolctl.read.safetensors_io import read_header, sniff_pickle_text
from lolctl.read.store import TensorStore, open_store

__all__ = ["read_adapter", "find_adapters", "discover", "READER_FINDINGS"]

CONFIG = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapters.safetensors", "adapter_model.bin")
KNOWN_NAMES = {*PEFT_WEIGHTS, "pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"}
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
DEFAULT_MAX_BYTES = 8 * 2**30
# Files a trainer saves beside an adapter (transformers Trainer checkpoints): not weights of the adapter, not reported.
TRAINER_STATE = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}
TRAINER_STATE_PREFIXES = ("rng_state",)
# key scheme (lolctl.read.detect.classify) -> reader of a file that needs no adapter_config.json
SINGLE_FILE_READERS = {"kohya": read_kohya, "diffusers": read_diffusers, "diffusers-old": read_diffusers}


def read_adapter(
    source: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> Adapter:
    """Read one adapter. ``name`` picks a named adapter subfolder (or file) when the source holds several."""
    path = Path(source)
    if not path.exists():
        raise LolctlError("L100", str(path), "no such file or folder", "check the path")
    if not path.is_dir() and not path.is_file():
        raise LolctlError("L101", str(path),
                          "not a regular file or folder", "point at an adapter folder or weights file")
    # Paths keep the spelling the user typed (messages name "link/adapter_model.safetensors", not where the link
    # points); containment checks use the real folder ``root``. A Hub-cache snapshot also links
    # "adapter_model.safetensors" to a hash-named blob, whose name would mean nothing to the user.
    if path.is_dir():
        root = path.resolve()
        target = _pick(path, root, name)
    else:
        target = path
        root = path.absolute().parent.resolve()
    if target.is_dir():
        adapter = _read_folder(target, root, trust_pickle, dtype, max_bytes)
    else:
        adapter = _read_file(target, root, trust_pickle, dtype, max_bytes)
    adapter.source = str(source)
    return adapter


def find_adapters(folder: str | os.PathLike) -> list[Path]:
    """Every adapter below ``folder``: folders with adapter_config.json, and LoRA-looking weights files. Sorted;
    symlinked folders are not entered and links resolving outside ``folder`` are skipped."""
    return discover(folder)[0]


def discover(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """:func:`find_adapters` plus every candidate weights file it leaves out, with the reason (nothing is dropped
    silently). A weights file whose header cannot be read, or whose keys look like a custom LoRA layout, is an
    adapter candidate (reading it explains the problem); a file that holds no LoRA tensors, a pickle not named like
    an adapter, a pickle twin of a safetensors file and a link out of the folder are skipped, with the reason."""
    root = Path(folder)
    if not root.is_dir():
        raise LolctlError("L100", str(root), "not a folder", "pass a folder to scan")
    real_root = root.resolve()
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    adapter_dirs: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames.sort()
        if (CONFIG in filenames and _inside(real_root, here / CONFIG)) or set(filenames) & set(PEFT_WEIGHTS):
            found.append(here)  # a PEFT/MLX folder (even without its config: reading it then says L113)
            adapter_dirs.append(here)
            continue  # its subfolders are still walked: PEFT saves adapters not named "default" in <name>/
        if any(a in here.parents for a in adapter_dirs):
            continue  # loose files inside an adapter folder belong to it (e.g. the target of its weights link)
        safes = {Path(f).stem for f in filenames if f.endswith(".safetensors")}
        for f in sorted(filenames):
            p = here / f
            if p.suffix not in WEIGHT_SUFFIXES:
                continue
            if p.suffix in PICKLE_SUFFIXES and p.stem in safes:
                skipped.append((p, f"pickle twin of {p.stem}.safetensors, which is read instead"))
                continue
            why = _not_a_candidate(p, real_root)
            if why is None:
                found.append(p)
            else:
                skipped.append((p, why))
    return sorted(found), sorted(skipped)


def _not_a_candidate(p: Path, real_root: Path) -> str | None:
    """None when the weights file ``p`` (met by discovery) should be read as an adapter, else why it is skipped."""
    if not p.is_file():
        return "not a regular file (a broken link, FIFO or device)"
    if not _inside(real_root, p):
        return f"links to {p.resolve()}, outside the scanned folder; not followed"
    if p.suffix != ".safetensors":
        if p.name in KNOWN_NAMES:
            return None
        return ("a pickle not named like an adapter (adapter_model.bin, pytorch_lora_weights.bin); not opened, "
                "as loading a pickle can run code: pass the file itself to read it with --trust-pickle")
    try:
        keys = list(read_header(p, DEFAULT_MAX_BYTES).tensors)
    except LolctlError:
        return None  # unreadable: it may be a damaged adapter, and reading it gives the error record
    except OSError as err:
        return f"cannot be opened ({err.strerror or type(err).__name__})"
    if classify(keys) is not None or custom_layout_hint(keys) is not None:
        return None  # a known scheme, a refused method (L102) or a custom LoRA layout (L103 with the hint)
    if not keys:
        return None  # no tensors: reading it says so (L101)
    return f"no LoRA tensors ({len(keys)} tensors, none in a LoRA key scheme; first: {keys[0][:80]})"


# --- resolution -------------------------------------------------------------------------------------------------


def _pick(folder: Path, root: Path, name: str | None) -> Path:
    """The adapter inside ``folder`` (as typed; ``root`` is its real path, for containment checks)."""
    if name is not None:
        target = folder / name
        inside = _inside(root, target)
        if not inside or not target.exists():
            raise LolctlError("L100" if inside else "L151", f"{folder}:{name}",
                              "no adapter by that name inside the folder", "name a subfolder or file of the source")
        return target
    files = _weights_in(folder)
    if (folder / CONFIG).exists() or any(_looks_like_adapter(p) for p in files):
        return folder
    subs = sorted(d for d in folder.iterdir() if d.is_dir() and (d / CONFIG).exists() and _inside(root, d / CONFIG))
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        names = ", ".join(d.name for d in subs)
        raise LolctlError("L104", str(folder), f"{len(subs)} adapters in named subfolders ({names})",
                          "pass one adapter's folder (lolctl inspect, score and scan on this folder read them all;"
                          " in Python: read_adapter(folder, name=...))")
    if files:
        return folder  # reading them explains what they are
    raise LolctlError("L101", str(folder),
                      "no adapter_config.json and no weights files here", "point at an adapter folder")


def _weights_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _is_within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _inside(root: Path, path: Path) -> bool:
    """True if ``path`` resolves inside ``root`` (or into the blobs of the Hugging Face cache repo holding it)."""
    real = path.resolve()
    if _is_within(root, real):
        return True
    snap = next((p for p in root.parents if p.name == "snapshots"), None) if root.name != "snapshots" else root
    return snap is not None and snap.parent.name.startswith(("models--", "datasets--")) and _is_within(
        snap.parent / "blobs", real)


def _check_inside(root: Path, path: Path) -> Path:
    if not _inside(root, path):
        raise LolctlError("L150", str(path),
                          f"links to {path.resolve()}, outside {root}", "copy the file into the folder")
    return path


# --- folders ----------------------------------------------------------------------------------------------------


def _read_folder(folder: Path, root: Path, trust_pickle: bool, dtype: torch.dtype, max_bytes: int) -> Adapter:
    config_path = folder / CONFIG
    if config_path.exists():
        _check_inside(root, config_path)
        present = [folder / w for w in PEFT_WEIGHTS if (folder / w).exists() or (folder / w).is_symlink()]
        for p in present:
            _check_inside(root, p)
            if not p.is_file():
                what = "a folder" if p.is_dir() else "a broken link" if not p.exists() else "not a regular file"
                raise LolctlError("L101", str(p), f"the weights file is {what}", "replace it with the adapter weights")
        if not present:
            cfg = load_config(config_path)
            if isinstance(cfg.get("peft_type"), str) and cfg["peft_type"].upper() != "LORA":
                raise refuse_peft_type(config_path, cfg["peft_type"])
            raise LolctlError("L101", str(folder), f"{CONFIG} but none of {', '.join(PEFT_WEIGHTS)}",
                              "copy the weights next to the config")
        adapter = _read_with_config(_check_inside(root, present[0]), config_path, trust_pickle, dtype, max_bytes)
        adapter.findings += [finding("H216", f"{p.name} was not read; {present[0].name} was") for p in present[1:]]
        others = [p for p in _weights_in(folder) if p.name not in PEFT_WEIGHTS and p.name not in TRAINER_STATE
                  and not p.name.startswith(TRAINER_STATE_PREFIXES)]
        _report_unread(adapter, others, present[0], max_bytes)
        return adapter
    files = [_check_inside(root, p) for p in _weights_in(folder)]
    if not files:
        raise LolctlError("L101", str(folder), "no adapter_config.json and no weights files", "point at an adapter")
    safes = {p.stem for p in files if p.suffix == ".safetensors"}
    skipped = [p for p in files if p.suffix != ".safetensors" and p.stem in safes]  # pickle twin of a safetensors
    files = [p for p in files if p not in skipped]
    if len(files) > 1:
        looking = [p for p in files if _looks_like_adapter(p, strict=True)]
        if len(looking) > 1:
            raise LolctlError("L104", str(folder), f"several adapter files ({', '.join(p.name for p in looking)})",
                              "pass one of the files (lolctl inspect, score and scan on this folder read them "
                              "all; in Python: read_adapter(folder, name=...))")
        if not looking:
            reasons = "; ".join(f"{p.name}: {_why_not(p, trust_pickle, max_bytes)}" for p in files)
            raise LolctlError("L103", str(folder), f"no file has a known LoRA key scheme ({reasons})",
                              "lolctl reads PEFT, kohya, diffusers and MLX LoRA files")
        skipped += [p for p in files if p not in looking]
        files = looking
    adapter = _read_file(files[0], root, trust_pickle, dtype, max_bytes)
    _report_unread(adapter, skipped, files[0], max_bytes)
    return adapter


def _report_unread(adapter: Adapter, unread: list[Path], read: Path, max_bytes: int) -> None:
    """A finding for every weights file beside the one read: H221 for a broken one (a placeholder or truncated file
    is damage to report, not an alternate), else H216 (an alternate that was not read)."""
    for p in unread:
        broken = _broken(p, max_bytes)
        if broken is not None:
            adapter.findings.append(finding("H221", f"{p.name} beside {read.name} is broken and was not read: "
                                            f"{broken.code} {broken.reason}", remedy=broken.remedy))
        else:
            adapter.findings.append(finding("H216", f"{p.name} was not read; {read.name} was"))


def _broken(path: Path, max_bytes: int) -> LolctlError | None:
    """The error that reading ``path``'s safetensors header gives (for a pickle: that it is empty or text, found
    without unpickling it), or None when the file looks sound."""
    try:
        if path.suffix == ".safetensors":
            read_header(path, max_bytes)
        else:
            sniff_pickle_text(path)
    except LolctlError as err:
        return err
    return None


def _why_not(path: Path, trust_pickle: bool, max_bytes: int) -> str:
    try:
        store = open_store(path, trust_pickle=trust_pickle, max_bytes=max_bytes)
    except LolctlError as exc:
        return f"{exc.code} {exc.reason}"
    return custom_layout_hint(store.keys()) or "no known key scheme"


def _looks_like_adapter(path: Path, strict: bool = False) -> bool:
    if path.suffix != ".safetensors":
        return path.name in KNOWN_NAMES
    try:
        keys = list(read_header(path, DEFAULT_MAX_BYTES).tensors)
    except LolctlError:
        return path.name in KNOWN_NAMES and not strict
    except OSError:
        return False
    kind = classify(keys)
    return kind is not None and (not kind.startswith("refused") or not strict)


# --- files ------------------------------------------------------------------------------------------------------


def _open(path: Path, trust_pickle: bool, max_bytes: int) -> TensorStore:
    store = open_store(path, trust_pickle=trust_pickle, max_bytes=max_bytes)
    if not store.shapes:
        raise LolctlError("L101", str(path), "the weights file holds no tensors", "re-save the adapter")
    return store


def _read_with_config(
    weights: Path, config_path: Path, trust_pickle: bool, dtype: torch.dtype, max_bytes: int
) -> Adapter:
    cfg = load_config(config_path)
    peft_type = cfg.get("peft_type")
    if isinstance(peft_type, str) and peft_type.upper() != "LORA":
        raise refuse_peft_type(config_path, peft_type)  # before touching the weights
    store = _open(weights, trust_pickle, max_bytes)
    if is_mlx_config(cfg) or looks_mlx(store.keys()):
        adapter = read_mlx(weights, config_path, store, dtype)
    else:
        adapter = read_peft(weights, config_path, store, dtype)
    _note_pickle(adapter, store)
    return adapter


def _read_file(path: Path, root: Path, trust_pickle: bool, dtype: torch.dtype, max_bytes: int) -> Adapter:
    sibling = path.parent / CONFIG
    if path.name in PEFT_WEIGHTS and sibling.exists():
        return _read_with_config(path, _check_inside(root, sibling), trust_pickle, dtype, max_bytes)
    store = _open(path, trust_pickle, max_bytes)
    kind = classify(store.keys())
    if kind == "peft" or kind == "mlx":
        raise LolctlError("L113", str(path), f"{kind.upper()} LoRA weights without {CONFIG}, so the scale is unknown",
                          f"put the adapter's {CONFIG} next to the file")
    refuse_by_keys(path, store.keys())  # "refused: ..." kinds raise L102 here
    reader = SINGLE_FILE_READERS.get(kind or "")
    if reader is None:
        hint = custom_layout_hint(store.keys())
        raise LolctlError("L103", str(path),
                          hint or f"none of its {len(store.shapes)} tensor keys follow a known LoRA key scheme",
                          "lolctl reads PEFT, kohya, diffusers and MLX LoRA files")
    adapter = reader(store, dtype)
    _note_pickle(adapter, store)
    return adapter


def _note_pickle(adapter: Adapter, store: TensorStore) -> None:
    if store.path.suffix != ".safetensors":
        adapter.findings.append(finding("H219", f"{store.path.name} is a pickle, loaded with "
                                        "torch.load(weights_only=True) because trust_pickle was given",
                                        remedy="convert it to .safetensors"))
