"""Recipe ``tiny``: the minilm-wordnet recipe shrunk to seconds, on any small BERT (for tests and demos).

``make_tiny_bert(folder)`` writes a random 2-layer BERT (hidden 32) with a character-level WordPiece vocabulary, so
the whole pipeline runs without downloads:

    python -c "from lolctl.zoo.recipes.tiny import make_tiny_bert; make_tiny_bert('/tmp/tiny-bert')"
    lolctl zoo build /tmp/tiny-zoo --recipe tiny      # on lolctl/tiny-bert, made on first use
    lolctl zoo build /tmp/tiny-zoo --recipe tiny --base /tmp/tiny-bert
"""

from __future__ import annotations

from dataclasses import dataclass

from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnet, WordnetSettings
from lolctl.zoo.tiny_models import make_tiny_bert

__all__ = ["TinyRecipe", "TinySettings", "make_tiny_bert", "tiny_recipe"]


@dataclass(frozen=True)
class TinySettings(WordnetSettings):
    base_model: str = "lolctl/tiny-bert"  # random, made on first use (zoo.basemodel); --base to change
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
