"""A lean Llama decoder with LoRA on q_proj/v_proj, for building zoos of a small causal LM on a CPU.

Same idea as ``lean_bert``: frozen linear weights in bfloat16 (matmuls in bf16), RMS norms, rotary embeddings and the
residual stream in float32; LoRA factors applied by hand as ΔW x = U (Vᵀ x) with U = s·B, V = Aᵀ (no PEFT wrappers
while training; the builder writes PEFT format at the end). ``hidden`` returns the final normed hidden states and
never touches the 49,152-way output layer: ``token_logprobs`` computes log-probabilities only at the positions a
loss or a score needs. Positions and an attention mask may be given, so one sequence can hold a shared prompt
followed by several answers that each see the prompt but not each other (multiple-choice scoring in one pass).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

LoraFactors = list[dict[str, tuple[torch.Tensor, torch.Tensor]]]  # per layer: "q_proj"/"v_proj" → (U, V)


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    rope_theta: float

    @classmethod
    def from_config(cls, c: dict) -> LlamaShape:
        rope = c.get("rope_parameters") or {}
        theta = float(rope.get("rope_theta", c.get("rope_theta", 10000.0)))
        if rope.get("rope_type", "default") != "default" or c.get("rope_scaling"):
            raise ValueError("lean_llama supports the default rotary embedding only (no rope scaling)")
        head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        return cls(c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"],
                   c.get("num_key_value_heads") or c["num_attention_heads"], head_dim, c["intermediate_size"],
                   c["vocab_size"], float(c.get("rms_norm_eps", 1e-6)), theta)

    def module_dims(self, name: str) -> tuple[int, int]:
        """(out n, in m) of an attention projection."""
        return {"q_proj": (self.heads * self.head_dim, self.hidden),
                "v_proj": (self.kv_heads * self.head_dim, self.hidden)}[name]


class LeanLlama:
    """Frozen Llama weights + a functional forward that takes LoRA factors per layer."""

    def __init__(self, state: dict[str, torch.Tensor], shape: LlamaShape, dtype: torch.dtype = torch.bfloat16,
                 max_positions: int = 512):
        self.shape = shape
        self.dtype = dtype
        w = {k.removeprefix("model."): v for k, v in state.items()}
        self.embed = w["embed_tokens.weight"].float()  # (vocab, d) lookup in float32
        self.head = w.get("lm_head.weight", self.embed).to(dtype)  # tied embeddings when absent
        self.fast = {k: v.to(dtype) for k, v in w.items() if k.endswith("proj.weight")}
        self.norm = {k: v.float() for k, v in w.items() if k.endswith("norm.weight")}
        half = shape.head_dim // 2
        inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, half, dtype=torch.float32) * 2 / shape.head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        angles = torch.cat([freqs, freqs], dim=-1)  # (P, head_dim), HF's rotate-half layout
        self.cos, self.sin = angles.cos(), angles.sin()

    @classmethod
    def from_folder(cls, folder: Path, dtype: torch.dtype = torch.bfloat16) -> LeanLlama:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        return cls(load_file(str(folder / "model.safetensors")), LlamaShape.from_config(config), dtype)

    def _rms(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.shape.eps)
        return self.norm[name + ".weight"] * x

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x1, x2 = x.chunk(2, dim=-1)
        return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(self.dtype)

    def hidden(
        self, ids: torch.Tensor, lora: LoraFactors | None, positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) token ids → final normed hidden states (B, T, d), float32. Without ``mask`` attention is causal
        (right padding needs no mask: padded positions come last and are never read). ``positions`` (B, T) and a
        boolean ``mask`` (B, T, T), True = may attend, allow packed sequences."""
        B, T = ids.shape
        s = self.shape
        pos = torch.arange(T).expand(B, T) if positions is None else positions
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, T, hd)
        attn_mask = None if mask is None else mask[:, None]
        x = self.embed[ids]
        for i in range(s.layers):
            p = f"layers.{i}."
            h = self._rms(x, p + "input_layernorm").to(self.dtype)
            q = h @ self.fast[p + "self_attn.q_proj.weight"].T
            k = h @ self.fast[p + "self_attn.k_proj.weight"].T
            v = h @ self.fast[p + "self_attn.v_proj.weight"].T
            if lora is not None:
                if "q_proj" in lora[i]:
                    U, V = lora[i]["q_proj"]
                    q = q + (h @ V.to(self.dtype)) @ U.to(self.dtype).T  # rows are ΔW x
                if "v_proj" in lora[i]:
                    U, V = lora[i]["v_proj"]
                    v = v + (h @ V.to(self.dtype)) @ U.to(self.dtype).T
            q = self._rope(q.view(B, T, s.heads, s.head_dim).transpose(1, 2), cos, sin)  # (B, H, T, hd)
            k = self._rope(k.view(B, T, s.kv_heads, s.head_dim).transpose(1, 2), cos, sin)
            v = v.view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=mask is None,
                                               enable_gqa=s.kv_heads != s.heads)
            a = a.transpose(1, 2).reshape(B, T, s.heads * s.head_dim)
            x = x + (a @ self.fast[p + "self_attn.o_proj.weight"].T).float()
            h = self._rms(x, p + "post_attention_layernorm").to(self.dtype)
            gate = F.silu(h @ self.fast[p + "mlp.gate_proj.weight"].T)
            x = x + ((gate * (h @ self.fast[p + "mlp.up_proj.weight"].T)) @ self.fast[p + "mlp.down_proj.weight"].T
                     ).float()
        return self._rms(x, "norm")

    def token_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(P, d) hidden states at the positions that predict ``targets`` (P,) → log p(target) (P,), float32."""
        logits = (hidden.to(self.dtype) @ self.head.T).float()  # (P, vocab)
        return logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=1)


def init_lora(
    shape: LlamaShape, rank: int, generator: torch.Generator, modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> LoraFactors:
    """PEFT's default init as trainable (B, V): A ~ kaiming-uniform(a=√5) (bound 1/√in), B = 0; V = Aᵀ."""
    out = []
    for _ in range(shape.layers):
        layer = {}
        for name in modules:
            n, m = shape.module_dims(name)
            V = (torch.rand(m, rank, generator=generator) * 2 - 1) / math.sqrt(m)
            layer[name] = (torch.zeros(n, rank).requires_grad_(), V.requires_grad_())
        out.append(layer)
    return out
