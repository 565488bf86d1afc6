"""Recipe ``tiny``: the minilm-wordnet recipe shrunk to seconds, on any small BERT (for tests and demos).

``make_tiny_bert(folder)`` writes a random 2-layer BERT (hidden 32) with a character-level WordPiece vocabulary, so
the whole pipeline runs without downloads:

    python -c "from lolctl.zoo.recipes.tiny import make_tiny_bert; make_tiny_bert('/tmp/tiny-bert')"
    lolctl zoo build /tmp/tiny-zoo --recipe tiny --base /tmp/tiny-bert
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnet, WordnetSettings


@dataclass(frozen=True)
class TinySettings(WordnetSettings):
    base_model: str = ""  # required: pass --base FOLDER
    n_val: int = 2
    n_test: int = 2
    n_train: int = 6
    n_per_rank: int = 1
    other_ranks: tuple[int, ...] = (2, 8)
    eval_per_topic: int = 4
    eval_other: int = 8
    lemma_tokens: int = 12
    gloss_tokens: int = 16
    size_min: int = 8
    size_max: int = 32
    steps_min: int = 2
    steps_max: int = 4
    batches: tuple[int, ...] = (4, 8)


class TinyRecipe(MinilmWordnet):
    name = "tiny"


def tiny_recipe() -> TinyRecipe:
    return TinyRecipe(TinySettings())


def make_tiny_bert(folder: str | Path, seed: int = 0) -> Path:
    """A random BertModel (2 layers, hidden 32, 2 heads) + character WordPiece tokenizer, saved as an HF folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *[f"##{c}" for c in chars]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    return folder
