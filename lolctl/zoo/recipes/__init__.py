"""Recipe registry: name → factory taking settings overrides (``{"field": "text"}``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lolctl.errors import LolctlError


def _minilm_wordnet() -> Any:
    from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnet

    return MinilmWordnet()


def _minilm_wordnet_v2() -> Any:
    from lolctl.zoo.recipes.minilm_wordnet import MinilmWordnetV2

    return MinilmWordnetV2()


def _tiny() -> Any:
    from lolctl.zoo.recipes.tiny import tiny_recipe

    return tiny_recipe()


def _smollm2_wordnet() -> Any:
    from lolctl.zoo.recipes.smollm2_wordnet import Smollm2Wordnet

    return Smollm2Wordnet()


def _tiny_llama() -> Any:
    from lolctl.zoo.recipes.tiny_llama import tiny_llama_recipe

    return tiny_llama_recipe()


def _paper(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from lolctl.zoo.recipes.paper import paper_recipe

        return paper_recipe(name)

    return make


RECIPES: dict[str, Callable[[], Any]] = {
    "minilm-wordnet": _minilm_wordnet,
    "minilm-wordnet-v2": _minilm_wordnet_v2,
    "tiny": _tiny,
    "smollm2-wordnet": _smollm2_wordnet,
    "tiny-llama": _tiny_llama,
    "celeba-lora": _paper("celeba-lora"),
    "imagenette-lora": _paper("imagenette-lora"),
    "qwen2-arc-lora": _paper("qwen2-arc-lora"),
}


def get_recipe(name: str, overrides: dict[str, str] | None = None) -> Any:
    """The recipe ``name`` with its settings changed by ``overrides``; unknown names and fields are usage errors."""
    from lolctl.zoo.recipes.base import apply_overrides

    if name not in RECIPES:
        raise LolctlError("L180", f"--recipe {name}", "no such recipe", f"choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]()
    if overrides:
        try:
            recipe.settings = apply_overrides(recipe.settings, overrides)
        except KeyError as err:
            raise LolctlError("L180", f"--set {err.args[0]}", f"recipe {name} has no setting {err.args[0]!r}",
                              _setting_hint(err.args[0], recipe.settings)) from err
        except ValueError as err:
            raise LolctlError("L180", "--set", f"bad value: {err}", "give a value of the setting's type") from err
    return recipe


def _setting_hint(key: str, settings: Any) -> str:
    """'did you mean n_train?' for a near miss, else the list of settings."""
    import dataclasses
    import difflib

    names = [f.name for f in dataclasses.fields(settings)]
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"did you mean {close[0]}?"
    return f"use one of: {', '.join(names)}"
