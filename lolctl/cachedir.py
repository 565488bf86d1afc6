"""Where lolctl keeps work it can redo but would rather not: ``$LOLCTL_CACHE`` (default ``~/.cache/lolctl``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LOLCTL_CACHE", Path.home() / ".cache" / "lolctl")).expanduser()
