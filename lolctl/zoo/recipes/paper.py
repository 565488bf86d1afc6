"""Builder configs for the paper's own zoos: CelebA-LoRA, Imagenette-LoRA, Qwen2-ARC-LoRA.

These need a GPU and Hugging Face Hub access (Stable Diffusion 1.4, Qwen2-1.5B, CelebA, Imagenette, ARC) and
cannot run on the machine lolctl is developed on. What is here is the exact recipe each one needs — base model,
target modules, rank, counts, the varied hyperparameters, the tasks and label columns — so that the zoo format,
``labels.csv`` columns and the models trained on them are fixed now. ``train`` refuses with a clear error: the
diffusion / causal-LM training loops and the CLIP-score / ARC evaluators are the code paths that cannot be
exercised here (see docs/zoo.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lolctl.errors import LolctlError
from lolctl.zoo.recipes.base import Job, Trained

CELEBA_ATTRS = ("Eyeglasses", "Male", "Smiling", "Wearing_Hat", "Young")
IMAGENETTE = ("tench", "English_springer", "cassette_player", "chain_saw", "church", "French_horn", "garbage_truck",
              "gas_pump", "golf_ball", "parachute")


@dataclass(frozen=True)
class PaperSettings:
    base_model: str
    target_modules: tuple[str, ...]
    rank: int
    n_total: int
    data: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.15


PAPER: dict[str, tuple[PaperSettings, list[dict[str, Any]]]] = {
    "celeba-lora": (
        PaperSettings("CompVis/stable-diffusion-v1-4", ("to_q", "to_v"), 4, 3899, "CelebA: 1 identity's images/LoRA",
                      {"lr": [1e-5, 1e-3], "steps": [100, 800], "images": [5, 30]}),
        [{"name": "clip_score", "kind": "regression", "columns": ["clip_score"], "labels": []},
         *[{"name": a, "kind": "multiclass", "columns": [a], "labels": ["no", "yes"]} for a in CELEBA_ATTRS]],
    ),
    "imagenette-lora": (
        PaperSettings("CompVis/stable-diffusion-v1-4", ("to_q", "to_v"), 32, 2046,
                      "Imagenette: a random subset of the 10 classes per LoRA", {"lr": [1e-4], "steps": [1000]}),
        [{"name": "membership", "kind": "multilabel", "columns": [f"membership[{c}]" for c in IMAGENETTE],
          "labels": list(IMAGENETTE)}],
    ),
    "qwen2-arc-lora": (
        PaperSettings("Qwen/Qwen2-1.5B", ("q_proj", "v_proj"), 4, 2000,
                      "mixtures of 19 instruction-tuning sources, evaluated on ARC",
                      {"lr": [1e-5, 3e-4], "steps": [100, 1000], "sources": [1, 19]}),
        [{"name": "arc_accuracy", "kind": "regression", "columns": ["arc_accuracy"], "labels": []},
         {"name": "eval_loss", "kind": "regression", "columns": ["eval_loss"], "labels": []},
         {"name": "sources", "kind": "multilabel", "columns": [f"sources[s{i}]" for i in range(19)],
          "labels": [f"s{i}" for i in range(19)]}],
    ),
}


class PaperRecipe:
    def __init__(self, name: str) -> None:
        self.name = name
        self.settings, self._tasks = PAPER[name]

    def tasks(self) -> list[dict[str, Any]]:
        return self._tasks

    def plan(self) -> list[Job]:
        s = self.settings
        n_val, n_test = round(s.n_total * s.val_fraction), round(s.n_total * s.test_fraction)
        splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (s.n_total - n_val - n_test)
        return [Job(i, split, s.rank) for i, split in enumerate(splits)]

    def _refuse(self) -> LolctlError:
        return LolctlError("L182", f"--recipe {self.name}",
                           "this recipe finetunes " + self.settings.base_model + " and needs a GPU and Hub access",
                           "run it on a GPU machine with a trainer plugged in (docs/zoo.md, 'Paper recipes')")

    def prepare(self, zoo: Path) -> dict[str, Any]:
        raise self._refuse()

    def load(self, zoo: Path) -> Any:
        raise self._refuse()

    def train(self, context: Any, job: Job) -> Trained:
        raise self._refuse()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}


def paper_recipe(name: str) -> PaperRecipe:
    return PaperRecipe(name)
