"""Hub sources through huggingface_hub: `user/*`, `user/prefix*`, `user/repo`, `user/repo@revision`.

Listing uses ``HfApi.list_models(author=..., filter=tag)`` for the ``peft`` and ``lora`` tags; a repo's file list
comes from ``HfApi.model_info``; only adapter files are downloaded (``allow_patterns`` filtering through
``huggingface_hub.utils.filter_repo_objects``, then ``hf_hub_download`` into the normal HF cache); an optional
header-only triage (``HfApi.parse_safetensors_file_metadata``) checks a weights file before any byte of tensor data
is fetched. Offline (``HF_HUB_OFFLINE=1`` or ``offline=True``) everything is answered from the local cache.
No hand-written HTTP: huggingface_hub's errors are mapped to stable lolctl codes L160-L164 (and L151 for a file name
that would escape its folder).

Settings are read when a :class:`Hub` is created, not at import time (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_TOKEN``), so tests and callers can point it anywhere.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from lolctl.errors import LolctlError

T = TypeVar("T")

LISTING_TAGS = ("peft", "lora")
PEFT_PATTERNS = ["adapter_config.json", "*/adapter_config.json", "adapter_model.safetensors",
                 "*/adapter_model.safetensors", "adapters.safetensors", "*/adapters.safetensors"]  # PEFT and MLX
PICKLE_PATTERNS = ["adapter_model.bin", "*/adapter_model.bin"]
SINGLE_FILE_PATTERNS = ["*.safetensors"]  # kohya / diffusers single-file LoRAs (top level only, see select_files)
FULL_MODEL_PREFIXES = ("model", "pytorch_model", "diffusion_pytorch_model", "consolidated")
LORA_KEY_MARKERS = ("lora_", "lora.", "_lora")
TRUTHY = {"1", "true", "yes", "on"}
PROBE_TIMEOUT = 5.0  # seconds for the one reachability request made before the first Hub call

_HUB_RE = re.compile(r"^(?:hf://)?(?P<user>[A-Za-z0-9][\w.-]*)/(?P<name>[\w.*-]+)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class HubRef:
    """One Hub repo at an optional revision (None = the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_source(text: str) -> tuple[str, str, str | None] | None:
    """``user/name[@rev]`` (name may hold ``*``) -> (user, name, revision), or None when it is not Hub-shaped."""
    m = _HUB_RE.match(text)
    if not m:
        return None
    return m.group("user"), m.group("name"), m.group("rev")


def check_relative_name(name: str, where: str) -> None:
    """Refuse a repo file name that would escape its folder (absolute, ``..``, backslashes, drive letters)."""
    parts = PurePosixPath(name).parts
    control = any(ord(ch) < 32 or ord(ch) == 127 for ch in name)  # NUL, newlines, ESC: never a real file name
    escapes = name.startswith("/") or "\\" in name or ":" in name or ".." in parts or "" in name.split("/")
    if not name or control or escapes:
        raise LolctlError(
            "L151", f"{where}/{name}", "the repo lists a file name that would escape the download folder",
            "report the repo to its owner; lolctl does not download such files",
        )


def select_files(names: list[str], *, trust_pickle: bool = False) -> list[str]:
    """The adapter files among a repo's file names: PEFT folders first, else top-level single-file LoRAs."""
    from huggingface_hub.utils import filter_repo_objects

    patterns = PEFT_PATTERNS + (PICKLE_PATTERNS if trust_pickle else [])
    peft = list(filter_repo_objects(names, allow_patterns=patterns))
    peft_dirs = {str(PurePosixPath(n).parent) for n in peft if n.endswith("adapter_config.json")}
    chosen = [n for n in peft if str(PurePosixPath(n).parent) in peft_dirs]
    if chosen:
        return sorted(chosen)
    single = [
        n for n in filter_repo_objects(names, allow_patterns=SINGLE_FILE_PATTERNS)
        if "/" not in n and not n.startswith(FULL_MODEL_PREFIXES)
    ]
    return sorted(single)


def adapter_sources(folder: Path, files: list[str]) -> list[Path]:
    """Local paths to read: each PEFT folder holding adapter_config.json, else each single weights file."""
    dirs = sorted({str(PurePosixPath(f).parent) for f in files if f.endswith("adapter_config.json")})
    if dirs:
        return [folder if d == "." else folder / d for d in dirs]
    singles = [f for f in files if f.endswith(".safetensors")]
    if len(singles) == 1:
        return [folder]  # the snapshot folder holds just this file (read through the HF cache's blob link)
    return [folder / f for f in singles]


def _hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def map_hub_error(err: BaseException, where: str, offline: bool = False) -> LolctlError:
    """Translate a huggingface_hub / network exception into a LolctlError with a remedy."""
    from huggingface_hub import errors as e

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, LolctlError):
        return err
    if isinstance(err, e.GatedRepoError):
        return LolctlError("L161", where, "the repo is gated and this account has not been granted access",
                           "accept the conditions on the repo page, then `hf auth login` or set HF_TOKEN")
    if isinstance(err, e.RepositoryNotFoundError):
        if status == 401:
            return LolctlError("L161", where, "the Hub refused access: the repo is private, gated or does not exist",
                               "check the name; for a private repo `hf auth login` or set HF_TOKEN")
        return LolctlError("L160", where, "no such repo on the Hub", "check the user and repo name")
    if isinstance(err, e.RevisionNotFoundError):
        return LolctlError("L160", where, "no such revision (branch, tag or commit) in the repo",
                           "check the part after @, or drop it for the default branch")
    if isinstance(err, (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled)):
        if offline:
            return LolctlError("L163", where, "offline mode is on and the files are not in the local cache",
                               "unset HF_HUB_OFFLINE and fetch once, or point HF_HOME at a populated cache")
        return LolctlError("L164", where, "the Hub could not be reached and the files are not cached",
                           "check the network / HF_ENDPOINT, or retry later")
    if isinstance(err, e.RemoteEntryNotFoundError):
        return LolctlError("L160", where, "the file does not exist at this revision", "check the repo's files")
    if isinstance(err, e.HfHubHTTPError):
        if status in (401, 403):
            return LolctlError("L161", where, f"the Hub answered {status}: not authorized",
                               "`hf auth login` or set HF_TOKEN with access to this repo")
        if status == 429:
            return LolctlError("L162", where, "the Hub kept answering 429 Too Many Requests",
                               "wait and retry later, with fewer repos at once")
        if status == 404:
            return LolctlError("L160", where, "the Hub answered 404 Not Found", "check the repo and revision")
        return LolctlError("L164", where, f"the Hub answered HTTP {status}", "retry later")
    if isinstance(err, e.HFValidationError):
        return LolctlError("L100", where, f"not a valid Hub repo id or revision ({err})",
                           "Hub ids look like user/repo or user/repo@revision")
    if isinstance(err, e.SafetensorsParsingError):
        return LolctlError("L122", where, f"the remote safetensors header could not be parsed: {err}",
                           "the file is not valid safetensors; skip this repo")
    if isinstance(err, (ConnectionError, TimeoutError)) or type(err).__module__.startswith("httpx"):
        return LolctlError("L164", where, f"the Hub could not be reached ({type(err).__name__})",
                           "check the network / HF_ENDPOINT, or retry later")
    raise err


class Hub:
    """A configured huggingface_hub client: listing, file selection, triage and download of adapter files."""

    _api: Any = None  # the HfApi client, made on first use (see api)

    @property
    def api(self) -> Any:
        """The ``HfApi`` client, made on first use (importing it costs ~0.7 s that a local scan never needs)."""
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self.token)
        return self._api

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        offline: bool | None = None,
        token: str | bool | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_wait: float = 30.0,
    ) -> None:
        self.endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
        self.cache_dir = Path(cache_dir) if cache_dir else _hub_cache_dir()
        self.offline = offline if offline is not None else os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.unreachable: str | None = None  # why the Hub could not be reached; then answers come from the cache
        self._probed = False
        self.notes: list[str] = []  # for the caller's log (library code never prints)

    @property
    def from_cache(self) -> bool:
        """Answer from the local cache: offline mode, or the Hub found unreachable."""
        return self.offline or self.unreachable is not None

    def reachable(self) -> bool:
        """One quick request to the endpoint before the first Hub call, without huggingface_hub's retries (which
        spend ~25 s on a machine without network). Unreachable: later calls use the local cache, and a note says so.
        Any HTTP answer counts as reachable."""
        if self.offline:
            return False
        if not self._probed:
            self._probed = True
            from huggingface_hub import constants, get_session

            try:
                get_session().head(self.endpoint or constants.ENDPOINT, timeout=min(self.timeout, PROBE_TIMEOUT))
            except Exception as err:  # noqa: BLE001 - httpx errors: connection refused, DNS, timeout, TLS
                self.unreachable = type(err).__name__
                self.notes.append(f"the Hub ({self.endpoint or constants.ENDPOINT}) could not be reached "
                                  f"({self.unreachable}): Hub sources are answered from the local cache "
                                  f"{self.cache_dir}")
        return self.unreachable is None

    # ------------------------------------------------------------------ helpers
    def _call(self, fn: Callable[[], T], where: str) -> T:
        """Run one huggingface_hub call; retry a bounded number of times on 429; map errors to LolctlError."""
        from huggingface_hub.errors import HfHubHTTPError

        for attempt in range(self.retries + 1):
            try:
                return fn()
            except HfHubHTTPError as err:
                response = getattr(err, "response", None)
                if getattr(response, "status_code", None) != 429 or attempt == self.retries:
                    raise map_hub_error(err, where, self.offline) from err
                after = response.headers.get("Retry-After", "") if response is not None else ""
                wait = float(after) if after.strip().isdigit() else 2.0**attempt
                time.sleep(min(wait, self.max_wait))
            except Exception as err:  # noqa: BLE001 - every other failure is mapped (or re-raised if unknown)
                raise map_hub_error(err, where, self.offline) from err
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ listing
    def expand(self, user: str, name: str, revision: str | None = None) -> list[HubRef]:
        """Repos matching ``user/name`` where name may hold ``*``; a plain name is returned as is (checked later)."""
        if "*" not in name:
            return [HubRef(f"{user}/{name}", revision)]
        pattern = f"{user}/{name}"
        where = pattern + (f"@{revision}" if revision else "")
        if not self.reachable():
            cached = sorted(self._cached_repo_ids(user))
            refs = [HubRef(i, revision) for i in cached if fnmatch.fnmatchcase(i, pattern)]
            if not refs and not self.offline:
                raise LolctlError("L164", where, f"the Hub could not be reached ({self.unreachable}) and the local "
                                  f"cache {self.cache_dir} holds no repo matching it",
                                  "check the network / HF_ENDPOINT and retry, or point HF_HOME at a cache that "
                                  "holds these repos")
            return refs

        def listing(tag: str) -> list[str]:
            return [m.id for m in self.api.list_models(author=user, filter=tag)]

        ids: set[str] = set()
        for tag in LISTING_TAGS:
            ids.update(self._call(partial(listing, tag), where))
        return [HubRef(i, revision) for i in sorted(ids) if fnmatch.fnmatchcase(i, pattern)]

    def _cached_repo_ids(self, user: str) -> set[str]:
        from huggingface_hub import scan_cache_dir

        if not self.cache_dir.is_dir():
            return set()
        info = scan_cache_dir(self.cache_dir)
        return {r.repo_id for r in info.repos if r.repo_type == "model" and r.repo_id.startswith(user + "/")}

    # ------------------------------------------------------------------ one repo
    def files(self, ref: HubRef) -> tuple[str, list[str]]:
        """(commit sha, file names) of a repo at its revision."""
        info = self._call(lambda: self.api.model_info(ref.repo_id, revision=ref.revision, timeout=self.timeout),
                          str(ref))
        names = [s.rfilename for s in (info.siblings or [])]
        return str(info.sha), names

    def triage(self, ref: HubRef, files: list[str], max_bytes: int | None = None) -> dict[str, Any]:
        """Header-only look at the weights files (no tensor data fetched): LoRA-like keys, tensor count, bytes."""
        report: dict[str, Any] = {"tensors": 0, "lora_tensors": 0, "bytes": 0}
        for name in files:
            if not name.endswith(".safetensors"):
                continue
            meta = self._call(
                partial(self.api.parse_safetensors_file_metadata, ref.repo_id, name, revision=ref.revision,
                        timeout=self.timeout),
                f"{ref}/{name}",
            )
            for key, info in meta.tensors.items():
                report["tensors"] += 1
                report["lora_tensors"] += any(mark in key.lower() for mark in LORA_KEY_MARKERS)
                start, end = info.data_offsets
                report["bytes"] += end - start
        if report["tensors"] and not report["lora_tensors"]:
            raise LolctlError("L103", str(ref), "the weights header lists no LoRA tensors (triage; nothing "
                              "downloaded)", "this repo does not look like a LoRA adapter; skip it")
        if max_bytes is not None and report["bytes"] > max_bytes:
            raise LolctlError("L125", str(ref), f"the weights declare {report['bytes']} bytes, over the budget "
                              f"{max_bytes} (triage, nothing downloaded)", "raise --max-bytes to read it")
        return report

    def fetch(self, ref: HubRef, *, trust_pickle: bool = False, triage: bool = False,
              max_bytes: int | None = None) -> tuple[list[Path], dict[str, Any]]:
        """Download (or find in the cache) only the adapter files; return the local adapter sources and Hub facts."""
        if not self.reachable():
            return self._fetch_cached(ref, trust_pickle)
        sha, names = self.files(ref)
        wanted = select_files(names, trust_pickle=trust_pickle)
        for name in wanted:
            check_relative_name(name, str(ref))
        if not wanted:
            raise LolctlError("L101", str(ref), "the repo holds no adapter files (adapter_config.json + "
                              "adapter_model.safetensors, or a single-file LoRA .safetensors)",
                              "check that this repo is a LoRA adapter")
        facts: dict[str, Any] = {"repo_id": ref.repo_id, "revision": ref.revision, "sha": sha, "files": wanted}
        if triage:
            facts["triage"] = self.triage(HubRef(ref.repo_id, sha), wanted, max_bytes)
        from huggingface_hub import hf_hub_download

        local: list[Path] = []
        for name in wanted:
            path = self._call(
                partial(hf_hub_download, ref.repo_id, name, revision=ref.revision, cache_dir=self.cache_dir,
                        endpoint=self.endpoint, token=self.token, etag_timeout=self.timeout),
                f"{ref}/{name}",
            )
            local.append(Path(path))
        folder = local[0].parents[len(PurePosixPath(wanted[0]).parts) - 1]
        return adapter_sources(folder, wanted), facts

    def _fetch_cached(self, ref: HubRef, trust_pickle: bool) -> tuple[list[Path], dict[str, Any]]:
        from huggingface_hub import snapshot_download

        patterns = PEFT_PATTERNS + SINGLE_FILE_PATTERNS + (PICKLE_PATTERNS if trust_pickle else [])
        folder = Path(self._call(
            lambda: snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=self.cache_dir,
                                      local_files_only=True, allow_patterns=patterns),
            str(ref),
        ))
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        wanted = select_files(names, trust_pickle=trust_pickle)
        if not wanted:
            why = "offline mode is on" if self.offline else f"the Hub could not be reached ({self.unreachable})"
            raise LolctlError("L163" if self.offline else "L164", str(ref),
                              f"{why} and the cached snapshot holds no adapter files",
                              "unset HF_HUB_OFFLINE and fetch once" if self.offline else "retry when online")
        facts = {"repo_id": ref.repo_id, "revision": ref.revision, "sha": folder.name, "files": wanted,
                 "cached": True}
        return adapter_sources(folder, wanted), facts
