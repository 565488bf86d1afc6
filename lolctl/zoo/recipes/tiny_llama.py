"""Recipe ``tiny-llama``: the smollm2-wordnet recipe shrunk to seconds, on any small Llama (for tests and demos).

``make_tiny_llama(folder)`` writes a random 2-layer Llama (hidden 32, 4 heads / 2 KV heads, tied embeddings) with a
byte-level tokenizer that knows SmolLM2's chat tokens, so the whole pipeline runs without downloads:

    python -c "from lolctl.zoo.recipes.tiny_llama import make_tiny_llama; make_tiny_llama('/tmp/tiny-llama')"
    lolctl zoo build /tmp/tiny-llama-zoo --recipe tiny-llama   # on lolctl/tiny-llama, made on first use
    lolctl zoo build /tmp/tiny-llama-zoo --recipe tiny-llama --base /tmp/tiny-llama
"""

from __future__ import annotations

from dataclasses import dataclass

from lolctl.zoo.recipes.smollm2_wordnet import Smollm2Settings, Smollm2Wordnet
from lolctl.zoo.tiny_models import SPECIAL, make_tiny_llama

__all__ = ["SPECIAL", "TinyLlamaRecipe", "TinyLlamaSettings", "make_tiny_llama", "tiny_llama_recipe"]


@dataclass(frozen=True)
class TinyLlamaSettings(Smollm2Settings):
    base_model: str = "lolctl/tiny-llama"  # random, made on first use (zoo.basemodel); --base to change
    n_val: int = 2
    n_test: int = 2
    n_train: int = 3
    n_per_rank: int = 1
    rank: int = 4
    other_ranks: tuple[int, ...] = (2,)
    eval_per_topic: int = 2
    eval_other: int = 4
    eval_batch: int = 8
    gloss_tokens: int = 12
    size_min: int = 4
    size_max: int = 12
    batch: int = 4


class TinyLlamaRecipe(Smollm2Wordnet):
    name = "tiny-llama"


def tiny_llama_recipe() -> TinyLlamaRecipe:
    return TinyLlamaRecipe(TinyLlamaSettings())
