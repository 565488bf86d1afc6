"""lolctl: score LoRA adapters from their weights alone (Learning on LoRAs, arXiv 2410.04207)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "read_adapter"]


def __getattr__(name: str):  # lazy: `import lolctl` must not import torch
    if name == "read_adapter":
        from lolctl.read import read_adapter

        return read_adapter
    raise AttributeError(name)
