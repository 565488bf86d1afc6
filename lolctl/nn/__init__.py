"""The models of Learning on LoRAs (GL-net and the paper's baselines), their training, evaluation and checkpoints.

Importing this package imports torch; the CLI imports it inside commands only.
"""

from __future__ import annotations

from lolctl.nn.batch import LoraBatch
from lolctl.nn.registry import MODELS, build_model, make_config
from lolctl.nn.spec import InputSpec, ModuleSpec, TaskSpec

__all__ = ["MODELS", "InputSpec", "LoraBatch", "ModuleSpec", "TaskSpec", "build_model", "make_config"]
