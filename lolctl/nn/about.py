"""What a checkpoint is about, from its config: which base-model names it answers to, and what its tasks mean.

Base-model names. Adapters record their base model as PEFT saw it: a Hub id
(``sentence-transformers/all-MiniLM-L6-v2``), the bare model name (``all-MiniLM-L6-v2``), a Hugging Face cache snapshot
(``…/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/<hash>``), a sentence-transformers cache folder
(``…/sentence_transformers/sentence-transformers_all-MiniLM-L6-v2``), another local copy, or nothing. A checkpoint
answers to its ``base_model``, its ``base_model_aliases`` and the base models its training adapters recorded, each
also in those local forms. A different Hub id never matches by its last part alone: ``someone/all-MiniLM-L6-v2`` is
another model (a fine-tune, say), not the one the checkpoint was trained on.

Task descriptions. A checkpoint's config may hold ``task_descriptions`` ({task: text}); older ones are described by
the recipe of the zoo they were trained on (``training_data.recipe.recipe.name``), with the zoo's measured facts
(the base model's own quality) filled in from the same config.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lolctl.factors import Adapter

_HF_CACHE = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)(?:/|$)")
_LOCAL = re.compile(r"^(?:/|~|\.{1,2}/|[a-z]:[\\/])")

_WORDNET = {
    "quality": "accuracy@1 of definition → lemma retrieval on {eval_pairs} held-out WordNet pairs (0-1, higher is "
               "better; the base model alone scores {base_quality})",
    "own_quality": "the same retrieval accuracy@1, only over the held-out pairs of the adapter's own topics",
    "log_size": "log2 of the number of training pairs (32 … 1,024)",
    "membership": "probability that each WordNet topic was in the adapter's training data",
    "noise": "whether 40-80 % of its training pairs had wrong lemmas",
    "gloss_length": "whether it was trained on short (≤ 8 words) or long definitions",
    "pos_mix": "whether its training data held nouns only or also verb definitions",
}
RECIPE_TASKS: dict[str, dict[str, str]] = {"minilm-wordnet": _WORDNET, "minilm-wordnet-v2": _WORDNET}

# What a regression target can be: (lowest, highest, unit). Accuracies live in [0, 1]; log_size in [log2 32,
# log2 1024] (the recipe draws 32 … 1,024 pairs). A prediction and its interval are clipped to these bounds.
_WORDNET_BOUNDS = {"quality": (0.0, 1.0, None), "own_quality": (0.0, 1.0, None), "log_size": (5.0, 10.0, "log2 pairs")}
RECIPE_BOUNDS: dict[str, dict[str, tuple[float, float, str | None]]] = {
    "minilm-wordnet": _WORDNET_BOUNDS, "minilm-wordnet-v2": _WORDNET_BOUNDS,
}


def _norm(name: str) -> str:
    return name.strip().rstrip("/\\").replace("\\", "/").lower()


def name_forms(name: str) -> set[str]:
    """The normalised forms under which an adapter's recorded base model may match a checkpoint's names."""
    n = _norm(name)
    forms = {n}
    hit = _HF_CACHE.search(n)
    if hit:
        forms.add(f"{hit.group(1)}/{hit.group(2)}")
    if "/" not in n or _LOCAL.match(n) or hit:  # a bare name or a local path: its last part names the model
        forms.add(n.rsplit("/", 1)[-1])
    return forms


def known_forms(names: set[str] | list[str]) -> set[str]:
    """A checkpoint's names ("org/name") in every form they may take in an adapter config."""
    out: set[str] = set()
    for name in names:
        n = _norm(name)
        out |= {n, n.replace("/", "_")}  # sentence-transformers caches "org/name" as the folder "org_name"
        if "/" in n and not _LOCAL.match(n):
            out.add(n.rsplit("/", 1)[-1])  # the bare model name
    return out


def base_model_names(config: dict[str, Any]) -> set[str]:
    """The checkpoint's base model and every base model recorded by its training adapters (normalised)."""
    names = [
        config.get("base_model"),
        *config.get("base_model_aliases", []),
        *config.get("ood", {}).get("base_models", []),
    ]
    return {_norm(n) for n in names if isinstance(n, str) and n}


def matches_base(base_model: str | None, config: dict[str, Any]) -> bool:
    """True when ``base_model`` (as an adapter recorded it) names the checkpoint's base model."""
    if not base_model:
        return False
    return bool(name_forms(base_model) & known_forms(base_model_names(config)))


def task_descriptions(config: dict[str, Any]) -> dict[str, str]:
    """{task: what it means} from the config (its own ``task_descriptions``, else its zoo recipe's); {} if unknown."""
    own = config.get("task_descriptions")
    if isinstance(own, dict) and own:
        return {str(k): str(v) for k, v in own.items()}
    recipe = ((config.get("training_data") or {}).get("recipe") or {})
    texts = RECIPE_TASKS.get(_recipe_name(config))
    if not texts:
        return {}
    facts = recipe.get("facts") or {}
    values = {"eval_pairs": facts.get("eval_pairs", "the"),
              "base_quality": f"{facts['base_quality']:.3f}" if isinstance(facts.get("base_quality"), float)
              else "an unrecorded value"}
    tasks = {t.get("name") for t in config.get("tasks", [])}
    return {k: v.format(**values) for k, v in texts.items() if k in tasks}


def _recipe_name(config: dict[str, Any]) -> str:
    return (((config.get("training_data") or {}).get("recipe") or {}).get("recipe") or {}).get("name") or ""


def task_bounds(config: dict[str, Any]) -> dict[str, tuple[float, float, str | None]]:
    """{regression task: (lowest, highest, unit)} the target can take, from the config's own ``task_bounds``
    ({task: [lo, hi, unit]}), else from its zoo recipe; {} if unknown (then nothing is clipped)."""
    own = config.get("task_bounds")
    if isinstance(own, dict) and own:
        return {str(k): (float(v[0]), float(v[1]), v[2] if len(v) > 2 else None) for k, v in own.items()}
    return dict(RECIPE_BOUNDS.get(_recipe_name(config), {}))


def clip_prediction(value: float, interval: tuple[float, float], bounds: tuple[float, float, str | None] | None
                    ) -> tuple[float, list[float]]:
    """``value`` and its interval clipped to the target's bounds (an accuracy interval never reaches below 0)."""
    if bounds is None:
        return value, list(interval)
    lo, hi = bounds[0], bounds[1]
    return min(max(value, lo), hi), [min(max(x, lo), hi) for x in interval]


def builtin_dirs() -> list[Path]:
    """Folders searched for built-in checkpoints: ``$LOLCTL_MODELS``, then the ones shipped with lolctl.

    An installed wheel carries the repo's ``models/`` as the package folder ``lolctl/checkpoints/``; a source checkout
    (or an editable install) reads ``models/`` beside ``lolctl/`` directly.
    """
    package = Path(__file__).resolve().parent.parent  # the lolctl package folder
    dirs = [Path(p) for p in os.environ.get("LOLCTL_MODELS", "").split(os.pathsep) if p]
    shipped = [package / "checkpoints", package.parent / "models"]
    return [*dirs, *(d for d in shipped if d.is_dir())]


def builtin_configs() -> list[tuple[Path, dict[str, Any]]]:
    """(folder, config) of every readable built-in checkpoint, in lookup order."""
    out = []
    for d in builtin_dirs():
        if not d.is_dir():
            continue
        for cfg in sorted(d.glob("*/config.json")):
            try:
                config = json.loads(cfg.read_text(encoding="utf-8"))
                base_model_names(config)
            except (OSError, ValueError, AttributeError, TypeError):
                continue
            out.append((cfg.parent, config))
    return out


def fitting_builtins(adapter: Adapter, configs: list[tuple[Path, dict[str, Any]]] | None = None,
                     ) -> list[tuple[str, str | None]]:
    """(name, base model) of the built-in checkpoints whose input spec (module names and shapes) the adapter fits."""
    from lolctl.errors import LolctlError
    from lolctl.nn.spec import InputSpec

    names = []
    for folder, config in builtin_configs() if configs is None else configs:
        try:
            InputSpec.from_dict(config["input_spec"]).check(adapter)
        except (LolctlError, KeyError, TypeError):
            continue
        names.append((folder.name, config.get("base_model")))
    return names
