"""Checkpoints: a folder with config.json (everything that rebuilds and describes the model), model.safetensors and a
generated README.md model card. Never pickle.

A reference resolves, in order, to: a local folder; a built-in name under ``$LOLCTL_MODELS`` (``os.pathsep``-separated
folders) or among the checkpoints shipped with lolctl (the repo's top-level ``models/``, installed as
``lolctl/checkpoints/``); a Hub repo id (``org/name``) fetched with ``snapshot_download`` limited to the three
checkpoint files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lolctl.errors import LolctlError
from lolctl.factors import Adapter
from lolctl.nn.about import (
    builtin_configs,
    builtin_dirs,
    clip_prediction,
    matches_base,
    task_bounds,
    task_descriptions,
)
from lolctl.nn.base import LoraModel
from lolctl.nn.batch import LoraBatch
from lolctl.nn.checkpoint_config import FORMAT, CheckpointConfig
from lolctl.nn.composite import Composite
from lolctl.nn.infer import embeddings, predict, scale_stats
from lolctl.nn.metrics import json_safe
from lolctl.nn.ood import Verdict, inert_prediction, is_inert, numerical_rank, rank_reasons
from lolctl.nn.registry import build_model
from lolctl.nn.spec import InputSpec, TaskSpec
from lolctl.nn.uncertainty import calibrate, fallback_stored, limit_probabilities, local_intervals, pick_rows

FILES = ("config.json", "model.safetensors", "README.md")
OPTIONAL_FILES = ("ood.safetensors", "calibration.safetensors", "ood_inputs.safetensors")  # OOD reference
# adapters; local intervals' data; the OOD input bases (lolctl calibrate --ood-contrast)
SCALE_MARGIN = 0.5  # nats beyond the training range of mean log ‖ΔW‖ before an adapter is flagged out of distribution
CHECK_BATCH_BYTES = 256 * 2**20  # float64 factors checked in one batch, at most (a single larger adapter alone)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LolctlError("L182", "--device cuda", "CUDA was requested but is not available", "use --device cpu")
    if device not in ("cpu", "cuda"):
        raise LolctlError("L180", f"--device {device}", "unknown device", "use auto, cpu or cuda")
    return torch.device(device)


def builtin_names() -> list[str]:
    names = []
    for d in builtin_dirs():
        if d.is_dir():
            names += sorted(p.parent.name for p in d.glob("*/config.json"))
    return names


def _from_hub(ref: str) -> Path:
    from huggingface_hub import snapshot_download

    from lolctl.hub import TRUTHY, map_hub_error

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY
    local = f"; no local folder {ref} or built-in checkpoint of that name either"
    try:
        return Path(snapshot_download(repo_id=ref, allow_patterns=[*FILES, *OPTIONAL_FILES]))
    except Exception as err:  # noqa: BLE001 - the Hub's errors map to the same codes as for adapters (L160-L164)
        try:
            mapped = map_hub_error(err, ref, offline)
        except Exception:  # noqa: BLE001 - not a Hub or network error map_hub_error knows
            if not isinstance(err, OSError):
                raise
            mapped = LolctlError("L164", ref, f"could not fetch the checkpoint from the Hub ({type(err).__name__})",
                                 "check the network or use a local checkpoint folder")
        raise LolctlError(mapped.code, ref, mapped.reason + local, mapped.remedy) from err


def resolve(ref: str) -> Path:
    """A checkpoint reference → a local folder holding config.json."""
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LolctlError(
                "L170", str(path), "not a checkpoint folder (no config.json)", "pass a checkpoint folder"
            )
        return path
    for d in builtin_dirs():
        if (d / ref / "config.json").is_file():
            return d / ref
    if _REPO_ID.match(ref):
        return _from_hub(ref)
    names = builtin_names()
    raise LolctlError(
        "L172",
        ref,
        "no checkpoint folder, built-in name or Hub repo id by that name",
        f"built-in checkpoints: {', '.join(names) or 'none installed'}",
    )


class Checkpoint:
    """A loaded model with its config: checks adapters against its input spec and predicts."""

    def __init__(self, path: Path, config: CheckpointConfig, model: LoraModel, device: torch.device) -> None:
        self.path = path
        self.config = config
        self.model = model
        self.device = device
        self.name: str = config.name or path.name
        self.base_model: str | None = config.base_model
        self.spec: InputSpec = model.spec
        self.tasks: tuple[TaskSpec, ...] = model.tasks
        raw = config.to_dict()  # lolctl.nn.about also reads the built-in checkpoints' configs as found on disk
        self._raw = raw
        self.about: dict[str, str] = task_descriptions(raw)  # what each task means, from the config
        self.bounds = task_bounds(raw)  # what each regression target can be (predictions are clipped to it)
        self._ood: Any = None  # OODReference, fitted on first use from the reference adapters
        self._calib: Any = None  # calibration.safetensors (validation features and residuals), read on first use

    def interval_batch(self, batch: LoraBatch, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{regression task: (N, c, 2)} 90 % intervals: local conformal (width from similar validation adapters)
        when the checkpoint stores its validation data, else ŷ + the stored global residual quantiles. Adapters that
        a composite's rank fallback predicts get the fallback's own intervals."""
        rows = self.fallback_rows(batch)
        routes = [(self.config.intervals, True)]
        if rows is not None and rows.any():
            routes = [(self.config.fallback.get("intervals", {}), False)] + ([] if rows.all() else routes)
        h = None
        if any((v or {}).get("method") == "knn-conformal" for spans, _ in routes for v in spans.values()):
            if self._calib is None:
                from safetensors.torch import load_file

                path = self.path / "calibration.safetensors"
                self._calib = load_file(str(path)) if path.is_file() else False
            if self._calib:
                h = embeddings(self.model, batch.to(self.device, torch.float32))
        found = [self._intervals(out, spans, h, self._calib if primary else fallback_stored(self._calib))
                 for spans, primary in routes]
        if len(found) == 1:
            return found[0]
        assert rows is not None  # two routes only when some rows go to the fallback
        return pick_rows(rows, found[0], found[1])

    def _intervals(self, out: dict[str, np.ndarray], spans: dict[str, Any], h: np.ndarray | None,
                   stored: Any) -> dict[str, np.ndarray]:
        """Intervals with one route's spans: local conformal where ``h`` (head features) and ``stored`` allow."""
        local = local_intervals(self.tasks, h, out, spans, stored) if h is not None and stored else {}
        result = {}
        for t in self.tasks:
            if t.kind != "regression":
                continue
            if t.name in local:
                result[t.name] = local[t.name]
                continue
            span = spans.get(t.name) or {}
            lo = np.asarray(span.get("lo", [0.0] * len(t.columns)))
            hi = np.asarray(span.get("hi", [0.0] * len(t.columns)))
            result[t.name] = np.stack([out[t.name] + lo, out[t.name] + hi], axis=-1)
        return result

    def fallback_rows(self, batch: LoraBatch) -> np.ndarray | None:
        """(N,) bool: the adapters a composite's rank fallback predicts (None: the model has no fallback)."""
        model = self.model
        if not isinstance(model, Composite) or not model.has_fallback:
            return None
        return model.fallback_rows(batch).cpu().numpy()

    def reference_adapters(self) -> LoraBatch | None:
        """The training adapters kept with the checkpoint: ``ood.safetensors``, else GL-net's anchors."""
        from lolctl.nn.ood import anchors_batch

        path = self.path / "ood.safetensors"
        if path.is_file():
            from safetensors.torch import load_file

            return LoraBatch.from_tensors(self.spec, load_file(str(path))).to(dtype=torch.float64)
        return anchors_batch(self.model)

    @property
    def ood_reference(self) -> Any:
        """The :class:`lolctl.nn.ood.OODReference` of this checkpoint (None when it keeps no reference adapters)."""
        if self._ood is None:
            from lolctl.cachedir import cache_root
            from lolctl.nn.ood import OODReference

            refs = self.reference_adapters()
            self._ood = False
            if refs is not None and refs.size >= 8:
                self._ood = OODReference.cached_fit(refs, cache_root() / "ood", inputs=self.input_contrast)
        return self._ood or None

    @property
    def input_contrast(self) -> Any:
        """The checkpoint's :class:`lolctl.nn.ood.InputContrast` (``ood_inputs.safetensors``), or None."""
        from lolctl.nn.ood import INPUTS_FILE, InputContrast

        path = self.path / INPUTS_FILE
        return InputContrast.load(path) if path.is_file() else None

    def check(self, adapter: Adapter) -> list[str]:
        """Out-of-distribution reasons ([] when in distribution); LolctlError L171 when the layout does not fit."""
        found = self.check_many([adapter])[0]
        if isinstance(found, LolctlError):
            raise found
        return found.reasons

    def _fits(self, adapter: Adapter) -> list[str]:
        """The layout check (raises L171 when the adapter does not fit) and the reasons that need no weights."""
        self.spec.check(adapter)
        limit = self.model.max_rank
        if limit is not None and max(adapter.ranks) > limit:
            raise LolctlError(
                "L171",
                adapter.source,
                f"rank {max(adapter.ranks)} exceeds the largest rank this "
                f"{self.model.name} checkpoint accepts ({limit})",
                "use a GL-net checkpoint",
            )
        reasons = []
        base = adapter.meta.base_model
        if self.base_model and base and not matches_base(base, self._raw):
            reasons.append(f"base model {base} differs from the training base model {self.base_model}")
        ood = self.config.ood
        seen = set(ood.get("ranks", []))
        unseen = sorted(set(adapter.ranks) - seen)
        if seen and unseen and numerical_rank(adapter) > max(seen):  # zero-padded to a larger rank: not a new rank
            reasons += rank_reasons(unseen, sorted(seen), self.config.metrics)  # measured splits decide
        return reasons

    def check_many(self, adapters: list[Adapter]) -> list[Verdict | LolctlError]:
        """Per adapter, its :class:`Verdict` (OOD reasons and score), or the LolctlError (L171) of an adapter that
        does not fit the checkpoint; the weight-based checks of all that fit run as one float64 batch."""
        out: list[Verdict | LolctlError] = []
        fit: list[int] = []
        for i, adapter in enumerate(adapters):
            try:
                out.append(Verdict(self._fits(adapter), 0.0))
                fit.append(i)
            except LolctlError as err:
                out.append(err)
        for part in _by_bytes(fit, [adapters[i] for i in fit], CHECK_BATCH_BYTES):
            self._check_weights([adapters[i] for i in part], [out[i] for i in part])  # type: ignore[misc]
        return out

    def _check_weights(self, adapters: list[Adapter], verdicts: list[Verdict]) -> None:
        """Add the weight-based reasons (inert, update magnitude, reference distance) and scores to ``verdicts``."""
        batch = LoraBatch.from_adapters(adapters, self.spec, dtype=torch.float64)
        inert = is_inert(batch)
        scale_range = self.config.ood.get("scale_log_range")
        scale = scale_stats(self.model, batch) if scale_range else None
        ref = self.ood_reference
        scores, z = ref.scores(batch) if ref is not None else (None, None)
        extra = ref.explain(z) if ref is not None and z is not None else None
        for row, verdict in enumerate(verdicts):
            if inert[row]:
                verdict.reasons.append(INERT_REASON)
                verdict.score, verdict.inert = float("inf"), True  # ΔW = 0: unlike any trained adapter (known case)
                continue
            if scale_range and scale is not None:
                s, (lo, hi) = float(scale[row]), scale_range
                if s < lo - SCALE_MARGIN or s > hi + SCALE_MARGIN:
                    verdict.reasons.append(
                        f"update magnitude (mean log ‖ΔW‖ relative to training median {s:+.2f}) is outside "
                        f"the training range [{lo:+.2f}, {hi:+.2f}]"
                    )
            if extra is not None and scores is not None:
                verdict.reasons += extra[row]
                verdict.score = float(scores[row])

    def ood_scores(self, batch: LoraBatch) -> np.ndarray:
        """(B,) the reference-distance OOD score (0 when the checkpoint keeps no reference adapters)."""
        ref = self.ood_reference
        scores = ref.scores(batch.to(dtype=torch.float64))[0] if ref is not None else np.zeros(batch.size)
        return np.where(is_inert(batch), np.inf, scores)  # ΔW = 0: unlike any trained adapter (a known case)

    def predict_batch(self, batch: LoraBatch) -> dict[str, np.ndarray]:
        """Predictions in the targets' units (probabilities calibrated with the stored temperatures, if any)."""
        out = predict(self.model, batch.to(self.device, torch.float32), self.config.target_normalisation)
        rows = self.fallback_rows(batch)
        primary = calibrate(self.tasks, out, self.config.calibration)
        if rows is None or not rows.any():
            return primary
        return pick_rows(rows, calibrate(self.tasks, out, self.config.fallback.get("calibration", {})), primary)

    def predict(self, adapters: list[Adapter], verdicts: list[Verdict] | None = None) -> list[dict[str, Any]]:
        """One prediction per adapter, the model run once on the whole batch; ``verdicts`` are the adapters'
        :meth:`check_many` results when the caller already has them (LolctlError L171 for one that does not fit)."""
        if verdicts is None:
            found = self.check_many(adapters)
            for v in found:
                if isinstance(v, LolctlError):
                    raise v
            verdicts = [v for v in found if isinstance(v, Verdict)]
        if not adapters:
            return []
        batch = LoraBatch.from_adapters(adapters, self.spec)
        out = self.predict_batch(batch)
        inert = [v.inert for v in verdicts]
        reasons = [v.reasons for v in verdicts]
        scores = np.array([v.score for v in verdicts], dtype=np.float64)
        spans = self.interval_batch(batch, out)
        floor = self.config.probability_floor
        fallback = self.fallback_rows(batch)
        calib = (self.config.calibration, self.config.fallback.get("calibration", {}))
        results = []
        for i, why in enumerate(reasons):
            ood = {"flag": bool(why), "reasons": why,
                   "score": round(float(scores[i]), 2) if np.isfinite(scores[i]) else None}
            if inert[i]:
                results.append({"checkpoint": self.name, "tasks": inert_prediction(self._raw, self.tasks),
                                "ood": {**ood, "kind": "inert"}, "about": self.about})
                continue
            tasks: dict[str, Any] = {}
            for t in self.tasks:
                if t.kind == "regression":
                    for j, col in enumerate(t.columns):
                        key = t.name if len(t.columns) == 1 else f"{t.name}.{col}"
                        bounds = self.bounds.get(key)
                        lo, hi = (float(x) for x in spans[t.name][i, j])
                        value, interval = clip_prediction(float(out[t.name][i, j]), (lo, hi), bounds)
                        tasks[key] = {"kind": "regression", "value": value, "interval": interval}
                        if bounds and bounds[2]:
                            tasks[key]["unit"] = bounds[2]
                else:
                    part = calib[int(fallback is not None and bool(fallback[i]))]
                    shown = limit_probabilities(t.kind, out[t.name][i], (part.get(t.name) or {}).get("shown"),
                                                floor)
                    tasks[t.name] = {"kind": t.kind, "probs": {lab: round(float(p), 2)
                                                               for lab, p in zip(t.labels, shown)}}
            results.append({"checkpoint": self.name, "tasks": tasks, "ood": ood, "about": self.about})
        return results


def _by_bytes(ids: list[int], adapters: list[Adapter], budget: int) -> list[list[int]]:
    """``ids`` in order, cut into runs whose adapters' factors take at most ``budget`` bytes in float64 (each run
    holds at least one)."""
    runs: list[list[int]] = []
    used = budget
    for i, adapter in zip(ids, adapters):
        size = 8 * sum(m.U.numel() + m.V.numel() for m in adapter.modules)
        if used + size > budget:
            runs.append([])
            used = 0
        runs[-1].append(i)
        used += size
    return runs


INERT_REASON = (
    "inert adapter: ΔW = 0 in every module, so it is the base model; the base model's recorded facts are given"
)


def load_checkpoint(ref: str, device: str = "auto") -> Checkpoint:
    from safetensors import SafetensorError

    path = resolve(ref)
    dev = resolve_device(device)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LolctlError("L170", str(path / "config.json"), f"unreadable ({err})", "re-download or retrain") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise LolctlError("L170", str(path / "config.json"), f"not a {FORMAT} config", "re-download or retrain")
    try:
        typed = CheckpointConfig.from_dict(config)
        model = build_model(typed.architecture, typed.model_config, typed.input_spec, typed.tasks)
    except (KeyError, TypeError) as err:
        raise LolctlError("L170", str(path / "config.json"), f"missing or bad field {err}", "retrain") from err
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise LolctlError("L170", str(weights), "the checkpoint has no model.safetensors", "re-download or retrain")
    try:
        state = load_weights(weights)
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        msg = str(err).splitlines()[0]
        raise LolctlError("L170", str(weights), f"weights do not fit the config ({msg})", "retrain") from err
    model.to(dev).eval()
    share_buffers(model)
    if isinstance(model, Composite):
        model.share_identical()
    return Checkpoint(path, typed, model, dev)


def find_checkpoint_for(base_model: str | None) -> str | None:
    """The folder of a built-in checkpoint trained on ``base_model`` (first match by name), or None.

    A checkpoint matches its ``base_model``, any name in ``base_model_aliases``, and the base models its training
    adapters recorded (e.g. a local copy's path next to the Hub id), also written as a bare model name or a Hugging
    Face / sentence-transformers cache folder (:mod:`lolctl.nn.about`). Matching ignores case and a trailing slash.
    """
    if not base_model:
        return None
    for folder, config in builtin_configs():
        if matches_base(base_model, config):
            return str(folder)
    return None


def save_checkpoint(folder: Path, model: LoraModel, config: dict[str, Any]) -> Path:
    """Write config.json, model.safetensors and a generated README.md into ``folder``."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    state, aliases = deduplicated({k: stored_dtype(v.detach().cpu().contiguous())
                                   for k, v in model.state_dict().items()})
    meta = {"format": FORMAT, **({"aliases": json.dumps(aliases)} if aliases else {})}
    # save() + write_bytes, not save_file: save_file creates the file with mode 0600, and a checkpoint is meant to be
    # shared (here the usual umask gives 0644, like config.json and README.md)
    (folder / "model.safetensors").write_bytes(save(state, metadata=meta))
    write_config(folder, {"format": FORMAT, "format_version": 1, **config})
    return folder


HALF_MIN = 1 << 20  # float32 tensors with this many entries or more are rounded to float16 for storage


def round_for_storage(model: torch.nn.Module) -> None:
    """Round, in place, every float32 parameter and buffer of :data:`HALF_MIN` entries or more to float16 precision,
    so that :func:`save_checkpoint` stores it in half the bytes and the saved model is exactly the one in memory.

    Training calls this before measuring the checkpoint, so its card describes the model a user loads. These are
    MLP+Dense's first-layer factors (2.4M entries each) and GL-net's anchor adapters: a relative change of at most
    2⁻¹¹ per entry, below what training noise moves them; values beyond float16's range keep float32."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.dtype == torch.float32 and t.numel() >= HALF_MIN and bool(t.abs().max() < 60000):
                t.copy_(t.half().float())


def stored_dtype(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float16 when that is lossless (:func:`round_for_storage` made it so), else unchanged. Loading copies
    it back into the model's float32 parameter."""
    if t.dtype == torch.float32 and t.numel() >= HALF_MIN:
        half = t.half()
        if torch.equal(half.float(), t):
            return half
    return t


def deduplicated(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(the state without repeated tensors, {dropped name: the kept name with equal dtype, shape and values}).

    A composite's GL-net members keep the same anchor adapters and probe basis (the same seeded choice from the same
    training set): stored once, a 7-member checkpoint is ~9 MB per anchor set smaller."""
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    by_key: dict[tuple[Any, ...], list[str]] = {}
    for name, t in state.items():
        if t.numel() >= 1024:  # small tensors are not worth a lookup
            key = (t.dtype, tuple(t.shape), float(t.double().sum()))
            same = next((k for k in by_key.get(key, []) if torch.equal(kept[k], t)), None)
            if same is not None:
                aliases[name] = same
                continue
            by_key.setdefault(key, []).append(name)
        kept[name] = t
    return kept, aliases


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model.safetensors as a state dict, its deduplicated tensors restored (:func:`deduplicated`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # one open for the tensors and the alias table
        state = {name: fh.get_tensor(name) for name in fh.keys()}
        aliases = json.loads((fh.metadata() or {}).get("aliases") or "{}")
    for name, same in aliases.items():
        state[name] = state[same]
    return state


def share_buffers(model: torch.nn.Module) -> None:
    """Make buffers with equal dtype, shape and values one tensor: a composite's members then hold one copy of their
    anchor adapters and probe basis, and compute the features they give once per batch (``LoraBatch.cached``).
    Parameters are left separate."""
    seen: dict[tuple[Any, ...], list[torch.Tensor]] = {}
    for mod in model.modules():
        for name, buf in mod._buffers.items():
            if buf is None or not buf.numel():
                continue
            key = (buf.dtype, buf.device, tuple(buf.shape), float(buf.double().sum()))
            same = next((t for t in seen.get(key, []) if torch.equal(t, buf)), None)
            if same is None:
                seen.setdefault(key, []).append(buf)
            else:
                mod._buffers[name] = same


def write_config(folder: Path, config: dict[str, Any]) -> None:
    """A checkpoint's config.json and the README.md model card generated from it."""
    from lolctl.nn.card import model_card

    full = json_safe(config)
    (folder / "config.json").write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(model_card(CheckpointConfig.from_dict(full)), encoding="utf-8")
