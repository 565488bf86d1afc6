"""A loopback fake of the few Hugging Face Hub endpoints lolctl uses, for tests (127.0.0.1 only, ephemeral port).

Implements, as huggingface_hub calls them:
- ``GET /api/models?author=...&filter=...&search=...`` — model listing (a filter matches a repo tag);
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` — model info with ``sha`` and ``siblings``;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{filename}`` — file metadata headers (ETag, X-Repo-Commit, Content-Length)
  and the bytes, with ``Range`` support (safetensors header reads).

Per-repo behaviours: ``private`` (401 RepoNotFound), ``gated`` (info works, files answer 401 GatedRepo), ``fail_429``
(answer 429 this many times first), ``delay`` (seconds before answering). Every request is logged in ``server.log``.
The server thread is a daemon and :meth:`FakeHub.close` (or the context manager) stops it; it also stops itself
after ``max_requests`` requests so a runaway client loop cannot spin forever.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, dict[str, bytes]]  # revision name or sha -> {filename: bytes}
    tags: list[str] = field(default_factory=lambda: ["peft", "safetensors"])
    private: bool = False
    gated: bool = False
    fail_429: int = 0
    delay: float = 0.0

    def sha(self, revision: str) -> str | None:
        if revision not in self.files:
            return None
        return hashlib.sha1(f"{self.repo_id}@{revision}".encode()).hexdigest()

    def lookup(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        for name, files in self.files.items():
            sha = self.sha(name)
            if revision in (name, sha):
                return sha, files  # type: ignore[return-value]
        return None


class FakeHub:
    def __init__(self, repos: list[FakeRepo], max_requests: int = 2000) -> None:
        self.repos = {r.repo_id: r for r in repos}
        self.log: list[tuple[str, str]] = []
        self.max_requests = max_requests
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                hub._handle(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                hub._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ request handling
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None,
              head: bool = False) -> None:
        h.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, head: bool) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(h, status, body, {"X-Error-Code": code, "X-Error-Message": code}, head=head)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(h.path)
        path = unquote(url.path)
        with self._lock:
            self.log.append(("HEAD" if head else "GET", h.path))
            if len(self.log) > self.max_requests:
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                self._error(h, 503, "TooManyRequestsInTest", head)
                return
        if path == "/api/models":
            return self._list(h, parse_qs(url.query), head)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        if m:
            return self._info(h, m.group(1), m.group(2) or "main", head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(h, m.group(1), m.group(2), m.group(3), head)
        self._error(h, 404, "NotFound", head)

    def _gate(self, h: BaseHTTPRequestHandler, repo: FakeRepo | None, head: bool) -> bool:
        """Common behaviours; True when a response was already sent."""
        if repo is None:
            self._error(h, 404, "RepoNotFound", head)
            return True
        if repo.delay:
            time.sleep(repo.delay)
        with self._lock:
            if repo.fail_429 > 0:
                repo.fail_429 -= 1
                self._send(h, 429, b'{"error": "rate limited"}', {"Retry-After": "0"}, head=head)
                return True
        if repo.private:
            self._error(h, 401, "RepoNotFound", head)
            return True
        return False

    def _list(self, h: BaseHTTPRequestHandler, query: dict, head: bool) -> None:
        author = query.get("author", [None])[0]
        filters = query.get("filter", [])
        search = query.get("search", [""])[0]
        out = []
        for repo in self.repos.values():
            if repo.private or (author and not repo.repo_id.startswith(author + "/")):
                continue
            if any(f not in repo.tags for f in filters) or search not in repo.repo_id:
                continue
            out.append({"id": repo.repo_id, "sha": repo.sha("main"), "tags": repo.tags, "private": False,
                        "gated": "auto" if repo.gated else False})
        self._send(h, 200, json.dumps(out).encode(), head=head)

    def _info(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        if self._gate(h, repo, head):
            return
        found = repo.lookup(revision)  # type: ignore[union-attr]
        if found is None:
            return self._error(h, 404, "RevisionNotFound", head)
        sha, files = found
        body = {"id": repo_id, "sha": sha, "tags": repo.tags, "private": False,  # type: ignore[union-attr]
                "gated": "auto" if repo.gated else False,  # type: ignore[union-attr]
                "siblings": [{"rfilename": name, "size": len(data)} for name, data in files.items()]}
        self._send(h, 200, json.dumps(body).encode(), head=head)

    def _resolve(self, h: BaseHTTPRequestHandler, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        if self._gate(h, repo, head):
            return
        if repo.gated:  # type: ignore[union-attr]
            return self._error(h, 401, "GatedRepo", head)
        found = repo.lookup(revision)  # type: ignore[union-attr]
        if found is None:
            return self._error(h, 404, "RevisionNotFound", head)
        sha, files = found
        if filename not in files:
            return self._error(h, 404, "EntryNotFound", head)
        data = files[filename]
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": sha,
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        rng = h.headers.get("Range") or h.headers.get("range")
        status = 200
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data = data[start : end + 1]
                status = 206
        headers["Content-Length"] = str(len(data))
        self._send(h, status, data, headers, head=head)


# ---------------------------------------------------------------------- adapter fixtures (PEFT format, tiny)
def peft_files(seed: int = 0, *, r: int = 2, n: int = 8, m: int = 6, layers: int = 2, base: str = "tiny/base",
               zero_b: bool = False, peft_type: str = "LORA") -> dict[str, bytes]:
    """adapter_config.json + adapter_model.safetensors bytes of a tiny PEFT LoRA (query/value of `layers` layers)."""
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for mod in ("query", "value"):
            key = f"base_model.model.encoder.layer.{i}.attention.self.{mod}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, m, generator=g)
            B = torch.zeros(n, r) if zero_b else torch.randn(n, r, generator=g)
            tensors[f"{key}.lora_B.weight"] = B
    config = {"peft_type": peft_type, "r": r, "lora_alpha": 2 * r, "base_model_name_or_path": base,
              "target_modules": ["query", "value"], "task_type": "FEATURE_EXTRACTION"}
    return {"adapter_config.json": json.dumps(config).encode(), "adapter_model.safetensors": save(tensors)}


def write_files(folder, files: dict[str, bytes]):
    """Write {relative name: bytes} under folder; returns the folder."""
    from pathlib import Path

    folder = Path(folder)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def kohya_file(seed: int = 0, *, r: int = 2, n: int = 8, m: int = 6) -> bytes:
    """A single-file kohya/sd-scripts LoRA (lora_unet_* keys, lora_down / lora_up / alpha) as safetensors bytes."""
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in ("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                  "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v"):
        tensors[f"lora_unet_{block}.lora_down.weight"] = torch.randn(r, m, generator=g)
        tensors[f"lora_unet_{block}.lora_up.weight"] = torch.randn(n, r, generator=g)
        tensors[f"lora_unet_{block}.alpha"] = torch.tensor(float(r))
    return save(tensors, metadata={"ss_network_dim": str(r), "ss_base_model_version": "sd_v1"})


def tiny_checkpoint(folder, adapter_dir, *, base: str = "tiny/base", ranks=(2,), seed: int = 0):
    """An untrained GL-net checkpoint whose input spec fits the adapter at ``adapter_dir`` (needs lolctl.nn).

    Tasks: ``quality`` (regression with a ±0.1 interval) and ``membership`` (multilabel: noun.animal, noun.food).
    Its predictions are arbitrary but deterministic: tests compare against what it predicts, never against constants.
    """
    import torch

    from lolctl.nn.checkpoint import save_checkpoint
    from lolctl.nn.registry import build_model
    from lolctl.nn.spec import InputSpec, TaskSpec
    from lolctl.read import read_adapter

    torch.manual_seed(seed)
    spec = InputSpec.from_adapter(read_adapter(adapter_dir))
    tasks = (TaskSpec("quality", "regression", ("quality",)),
             TaskSpec("membership", "multilabel", ("membership[noun.animal]", "membership[noun.food]"),
                      ("noun.animal", "noun.food")))
    model = build_model("glnet", None, spec, tasks)
    config = {"name": "tiny-ckpt", "architecture": "glnet", "invariance": model.invariance,
              "model_config": model.config.to_dict(), "input_spec": spec.to_dict(), "base_model": base,
              "tasks": [t.to_dict() for t in tasks],
              "target_normalisation": {"quality": {"mean": [0.5], "std": [0.1]}},
              "intervals": {"quality": {"lo": [-0.1], "hi": [0.1]}}, "ood": {"ranks": list(ranks)}}
    return save_checkpoint(folder, model, config)
