"""A lean BERT encoder with LoRA on query/value, for building zoos on a CPU.

The frozen base weights are kept in bfloat16 (matmuls run in bf16, layer norms and residuals in float32); the LoRA
factors are float32 parameters applied by hand as ΔW x = U (Vᵀ x), with U = s·B and V = Aᵀ — no PEFT wrappers while
training (the builder saves PEFT format at the end). Mean pooling over the attention mask gives sentence embeddings,
as sentence-transformers does for all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    heads: int
    eps: float

    @classmethod
    def from_config(cls, config: dict) -> BertShape:
        return cls(config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
                   float(config.get("layer_norm_eps", 1e-12)))


class LeanBert:
    """Frozen BERT weights + a functional forward that takes LoRA factors per layer."""

    def __init__(self, state: dict[str, torch.Tensor], shape: BertShape, dtype: torch.dtype = torch.bfloat16):
        self.shape = shape
        self.dtype = dtype
        strip = "bert." if any(k.startswith("bert.") for k in state) else ""
        self.w = {k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}
        self.fast = {k: v.to(dtype) for k, v in self.w.items() if k.endswith("dense.weight") or ".self." in k}

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype = torch.bfloat16) -> LeanBert:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if (folder / "model.safetensors").exists():
            state = load_file(str(folder / "model.safetensors"))
        else:  # a trusted local base model saved as pytorch_model.bin
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return cls({k: v.float() for k, v in state.items()}, BertShape.from_config(config), dtype)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.fast[name + ".weight"], self.w[name + ".bias"].to(self.dtype))

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"], self.shape.eps)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) → the frozen embeddings-layer output (B, T, d), float32."""
        T = ids.shape[1]
        pos = torch.arange(T)
        x = self.w["embeddings.word_embeddings.weight"][ids] + self.w["embeddings.position_embeddings.weight"][pos]
        x = x + self.w["embeddings.token_type_embeddings.weight"][0]
        return self._ln(x, "embeddings.LayerNorm")

    def encode(
        self, ids: torch.Tensor, mask: torch.Tensor, lora: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] | None
    ) -> torch.Tensor:
        """(B, T) ids and 0/1 mask → unit-norm mean-pooled embeddings (B, d). ``lora[i]`` maps "query"/"value" to
        (U, V) with U (d × r) and V (d × r), so the module's update is ΔW = U Vᵀ."""
        B, T = ids.shape
        H = self.shape.heads
        x = self.embed(ids)
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T) attention mask
        for i in range(self.shape.layers):
            p = f"encoder.layer.{i}."
            xb = x.to(self.dtype)
            q = self._lin(xb, p + "attention.self.query")
            k = self._lin(xb, p + "attention.self.key")
            v = self._lin(xb, p + "attention.self.value")
            if lora is not None:
                for name in ("query", "value"):
                    if name in lora[i]:
                        U, V = lora[i][name]
                        delta = (xb @ V.to(self.dtype)) @ U.to(self.dtype).T  # (B, T, d): rows are ΔW x
                        if name == "query":
                            q = q + delta
                        else:
                            v = v + delta
            q, k, v = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            a = a.transpose(1, 2).reshape(B, T, -1)
            x = self._ln(x + self._lin(a, p + "attention.output.dense").float(), p + "attention.output.LayerNorm")
            h = F.gelu(self._lin(x.to(self.dtype), p + "intermediate.dense"))
            x = self._ln(x + self._lin(h, p + "output.dense").float(), p + "output.LayerNorm")
        m = mask.to(x.dtype)[:, :, None]
        pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1)


def init_lora(
    shape: BertShape, rank: int, alpha: float, generator: torch.Generator,
    modules: tuple[str, ...] = ("query", "value"),
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """PEFT's default init as U, V: A ~ kaiming-uniform(a=√5) (bound 1/√in), B = 0; U = s·B = 0, V = Aᵀ."""
    d = shape.hidden
    bound = 1.0 / math.sqrt(d)
    out = []
    for _ in range(shape.layers):
        layer = {}
        for name in modules:
            V = (torch.rand(d, rank, generator=generator) * 2 - 1) * bound
            U = torch.zeros(d, rank)
            layer[name] = (U.requires_grad_(), V.requires_grad_())
        out.append(layer)
    return out
