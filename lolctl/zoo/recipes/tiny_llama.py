"""Recipe ``tiny-llama``: the smollm2-wordnet recipe shrunk to seconds, on any small Llama (for tests and demos).

``make_tiny_llama(folder)`` writes a random 2-layer Llama (hidden 32, 4 heads / 2 KV heads, tied embeddings) with a
byte-level tokenizer that knows SmolLM2's chat tokens, so the whole pipeline runs without downloads:

    python -c "from lolctl.zoo.recipes.tiny_llama import make_tiny_llama; make_tiny_llama('/tmp/tiny-llama')"
    lolctl zoo build /tmp/tiny-llama-zoo --recipe tiny-llama --base /tmp/tiny-llama
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lolctl.zoo.recipes.smollm2_wordnet import Smollm2Settings, Smollm2Wordnet

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class TinyLlamaSettings(Smollm2Settings):
    base_model: str = ""  # required: pass --base FOLDER
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


def make_tiny_llama(folder: str | Path, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (2 layers, hidden 32) + a byte-level tokenizer, saved as an HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *alphabet])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<|endoftext|>", pad_token="<|im_end|>",
                                  additional_special_tokens=list(SPECIAL))
    tok.save_pretrained(str(folder))
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(folder), safe_serialization=True)
    return folder
