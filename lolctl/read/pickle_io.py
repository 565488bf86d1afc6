"""Legacy pickle weights (``adapter_model.bin``, ``pytorch_lora_weights.bin``).

Pickles can run code when loaded, so they are refused (L130) unless the caller passes ``trust_pickle``; even then
they are opened with ``torch.load(weights_only=True)``, whose restricted unpickler only rebuilds tensors and plain
containers. Anything else in the file makes that unpickler stop *before* executing it, which is reported as L131.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lolctl.errors import LolctlError
from lolctl.read.codes import clean
from lolctl.read.safetensors_io import regular_file_size

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def refuse_pickle(path: Path) -> LolctlError:
    return LolctlError(
        "L130", str(path), "this is a pickle file, which can run code when loaded",
        "convert it to .safetensors, or pass --trust-pickle to load it with torch.load(weights_only=True)",
    )


def _refusal(text: str) -> str:
    """torch's explanation, without its advice: it suggests allowlisting the very global (``exec``...) that a
    hostile file needs, or loading with weights_only=False."""
    needed = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if needed:
        return f"it needs {clean(needed.group(1))[:120]}, which is not a tensor or a plain container (nothing was run)"
    core = re.search(r"WeightsUnpickler error:\s*([^\n]*)", text)
    reason = " ".join((core.group(1) if core else text).split())
    return clean(re.split(r"\s(?:Please|Check the documentation|Re-running|You can use)\b", reason)[0])[:300]


def load_pickle(path: Path, max_bytes: int) -> dict[str, torch.Tensor]:
    """Load a flat ``{key: tensor}`` state dict with torch's restricted unpickler."""
    import torch

    size = regular_file_size(path)
    if size == 0:
        raise LolctlError("L126", str(path), "the file is empty (0 bytes)", "download the file again")
    if size > max_bytes:
        raise LolctlError("L125", str(path), f"{size} bytes is above the {max_bytes}-byte budget", "raise --max-bytes")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 73": the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
    except Exception as exc:  # the restricted unpickler raises several types; none of them ran foreign code
        raise LolctlError(
            "L131", str(path), f"torch.load(weights_only=True) refused it: {_refusal(str(exc))}",
            "only plain tensor state dicts are loaded; convert the file to .safetensors in a sandbox",
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    flat = isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    if not flat:
        raise LolctlError("L131", str(path),
                          f"expected a flat dict of tensors, found {type(obj).__name__}", "re-save it")
    return {k: v.detach() for k, v in obj.items()}
