"""Resolve SOURCE arguments into scan items: local files, folders, globs, and Hub repos or patterns.

Rules (docs/cli.md):
- an existing local path wins: a file is one item; a folder yields every adapter below it;
- a glob (``*``, ``?``, ``[``) is expanded locally first; each match is resolved as above;
- otherwise a Hub-shaped source (``user/repo``, ``user/repo@rev``, ``user/*``, ``user/prefix*``) is a Hub source;
  prefix it with ``hf://`` to force the Hub even when a local path of that name exists;
- anything else is an input error (L100).

Every item has a stable ``id`` (absolute local path, or ``hf://user/repo[@rev]``) used by ``--resume`` and
``--shard``.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lolctl.errors import LolctlError
from lolctl.hub import HubRef, parse_hub_source

if TYPE_CHECKING:
    from lolctl.hub import Hub

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Item:
    """One thing to score: a local adapter path or a Hub repo at a revision."""

    id: str
    source: str  # the argument that produced it, for messages
    path: Path | None = None
    hub: HubRef | None = None

    @property
    def display(self) -> str:
        return str(self.hub) if self.hub else str(self.path)


def shard_of(item_id: str, count: int) -> int:
    """Stable shard index of an item id (sha256; identical on every machine and Python run)."""
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:16], 16) % count


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` with 0 <= i < N -> (i, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise LolctlError("L180", f"--shard {text}", "expected i/N with integers", "e.g. --shard 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise LolctlError("L180", f"--shard {text}", "need N >= 1 and 0 <= i < N", "e.g. --shard 0/4 ... 3/4")
    return i, n


def find_local_adapters(folder: Path, skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every adapter below a folder (the reader's discovery: PEFT folders and weight files, links not followed);
    the candidate weights files it leaves out are appended to ``skipped`` with the reason."""
    from lolctl.read import discover

    found, left_out = discover(folder)
    if skipped is not None:
        skipped += left_out
    return [Path(p) for p in found]


def _local_items(path: Path, source: str, skipped: list[tuple[Path, str]] | None = None) -> list[Item]:
    if path.is_file() and path.name == "adapter_config.json":
        path = path.parent  # 'runs/**/adapter_config.json' names adapter folders: read each folder, not its config
    if path.is_file():
        return [Item(str(path.resolve()), source, path=path)]
    return [Item(str(p.resolve()), source, path=p) for p in find_local_adapters(path, skipped)]


def resolve(sources: list[str], hub: Hub | None = None, skipped: list[tuple[Path, str]] | None = None) -> list[Item]:
    """All items named by the sources, de-duplicated by id, in argument order. Hub listing happens here.

    Weights files met while walking folders that are not adapters are appended to ``skipped`` (path, reason)."""
    items: list[Item] = []
    for src in sources:
        items += _resolve_one(src, hub, skipped)
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            unique.append(item)
    return unique


def _resolve_one(src: str, hub: Hub | None, skipped: list[tuple[Path, str]] | None = None) -> list[Item]:
    forced_hub = src.startswith("hf://")
    if not forced_hub:
        path = Path(src)
        if path.exists():
            return _local_items(path, src, skipped)
        if any(c in src for c in GLOB_CHARS):
            hits = sorted(glob.glob(src, recursive=True))
            if hits:
                return [item for hit in hits for item in _local_items(Path(hit), src, skipped)]
    parsed = parse_hub_source(src)
    local_looking = src.startswith((".", "/", "~")) or (parsed is not None and Path(parsed[0]).is_dir())
    if parsed is None or (not forced_hub and local_looking):
        if any(c in src for c in GLOB_CHARS):
            raise LolctlError("L101", src, "the pattern matched nothing", "check the glob")
        raise LolctlError("L100", src, "no such file or folder, and not a Hub repo id (user/repo[@rev], user/*)",
                          "check the path; quote globs so lolctl expands them")
    user, name, revision = parsed
    if hub is None:
        from lolctl.hub import Hub

        hub = Hub()
    refs = hub.expand(user, name, revision)
    return [Item("hf://" + str(ref), src, hub=ref) for ref in refs]
