"""One record per adapter: the health report plus predictions from a fitting checkpoint (schema: docs/schema.md).

A :class:`Scorer` is shared by the threads of a scan: checkpoints are loaded once and cached, reading is bounded by a
small number of slots (memory), and model calls are serialized. :meth:`Scorer.score_items` scores a chunk of items
and predicts the adapters that share a checkpoint in one batched model call. Errors a user can cause never escape
:meth:`Scorer.score_items` / :meth:`Scorer.score_item`: they become error records, so a scan goes on.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lolctl.errors import LolctlError, printable
from lolctl.factors import SEVERITIES, severity_rank
from lolctl.report.records import ErrorRecord, Record, ScoreRecord

if TYPE_CHECKING:
    from lolctl.factors import Adapter
    from lolctl.hub import Hub
    from lolctl.sources import Item

NO_MODELS_NOTE = (
    "predictions need lolctl.nn, which is not part of this installation; the record holds the health report only"
)


def no_checkpoint_note(base_model: str | None, fitting: list[tuple[str, str | None]] | None = None) -> str:
    """Why there is no prediction when no checkpoint is known for the base model; names the built-in checkpoints
    whose input spec the adapter fits anyway (a base model recorded under another name, or not at all)."""
    base = f"base model {base_model}" if base_model else "an adapter that records no base model"
    if fitting:
        name, trained_on = fitting[0]
        return (
            f"no checkpoint is known for {base}, but its modules and shapes fit the built-in checkpoint {name} "
            f"(trained on adapters of {trained_on or 'an unrecorded base model'}): if that is its base model, "
            f"opt in with -c {name}; health report only"
        )
    return (
        f"no checkpoint fits {base}: health report only. Get one with "
        "--checkpoint PATH_OR_HUB_ID, or train one on a zoo of adapters of this base model "
        "(`lolctl zoo build` then `lolctl train`, see docs/cli.md); a checkpoint folder placed in "
        "$LOLCTL_MODELS is then found by base model without -c"
    )


def check_device(device: str, predict: bool = True) -> None:
    """Refuse ``cuda`` up front when CUDA is not available (one L182 usage error, not one error record per adapter).
    Without predictions no model runs, so the device does not matter."""
    if predict and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LolctlError("L182", "--device cuda", "CUDA was requested but is not available on this machine",
                              "use --device cpu (or auto)")


def max_severity(findings: list[dict[str, Any]]) -> str | None:
    ranks = [severity_rank(f["severity"]) for f in findings]
    return SEVERITIES[max(ranks)] if ranks else None


def adapter_meta(adapter: Adapter) -> dict[str, Any]:
    """What the reader found besides the factors (inspect's ``meta``): format, files, config fields, payload."""
    meta = adapter.meta
    return {
        "format": meta.format,
        "files": meta.files,
        "base_model": meta.base_model,
        "base_revision": meta.base_revision,
        "peft_type": meta.peft_type,
        "target_modules": meta.target_modules,
        "config_rank": meta.config_rank,
        "config_alpha": meta.config_alpha,
        "use_rslora": meta.use_rslora,
        "use_dora": meta.use_dora,
        "fan_in_fan_out": meta.fan_in_fan_out,
        "rank_pattern": meta.rank_pattern,
        "alpha_pattern": meta.alpha_pattern,
        "dtypes": meta.dtypes,
        "bytes": meta.nbytes,
        "file_metadata": meta.file_metadata,
        "payload": [
            {"key": p.key, "shape": list(p.shape), "dtype": p.dtype, "bytes": p.nbytes} for p in adapter.payload
        ],
    }


class Scorer:
    def __init__(
        self,
        *,
        checkpoint: str | None = None,
        device: str = "auto",
        trust_pickle: bool = False,
        max_bytes: int | None = None,
        hub: Hub | None = None,
        triage: bool = False,
        predict: bool = True,
        modules: bool = True,
        meta: bool = False,
        read_slots: int = 1,
        sketch: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.device = device
        self.trust_pickle = trust_pickle
        self.max_bytes = max_bytes
        self.hub = hub
        self.triage = triage
        self.predict = predict
        self.modules = modules  # records carry per-module statistics
        self.meta = meta  # records carry the reader's facts (inspect)
        self.sketch = sketch  # records carry lolctl.dedup's sketch (scan marks duplicates with it)
        # all but the Hub client: a copy elsewhere (a Ray worker) builds its own
        self.settings = {"checkpoint": checkpoint, "device": device, "trust_pickle": trust_pickle,
                         "max_bytes": max_bytes, "triage": triage, "predict": predict, "modules": modules,
                         "meta": meta, "read_slots": read_slots, "sketch": sketch}
        self._read_slots = threading.BoundedSemaphore(max(1, read_slots))
        self._model_lock = threading.Lock()
        self._ckpts: dict[str, Any] = {}
        self._found: dict[str, str | None] = {}
        self._builtins: list[Any] | None = None  # (folder, config) of the built-in checkpoints, read on first need
        self.notes: list[str] = []  # distinct notes for the log (no checkpoint, no models, does not fit)
        self.note_sources: dict[str, list[str]] = {}  # note -> the sources it applies to, in order

    # ------------------------------------------------------------------ checkpoints
    def load_explicit_checkpoint(self) -> None:
        """Load --checkpoint up front so a bad name is an input error before any scanning."""
        if self.checkpoint and self.predict:
            self._load(self.checkpoint)

    def _load(self, ref: str) -> Any:
        with self._model_lock:
            if ref not in self._ckpts:
                from lolctl.nn.checkpoint import load_checkpoint

                self._ckpts[ref] = load_checkpoint(ref, device=self.device)
            return self._ckpts[ref]

    def _find(self, base_model: str, find: Any) -> str | None:
        """The built-in checkpoint for ``base_model``, looked up once per scan (it reads every checkpoint's config)."""
        with self._model_lock:
            if base_model not in self._found:
                self._found[base_model] = find(base_model)
            return self._found[base_model]

    def _fitting(self, adapter: Adapter) -> list[tuple[str, str | None]]:
        """Built-in checkpoints whose input spec the adapter fits (their configs are read once per scan)."""
        from lolctl.nn.about import builtin_configs, fitting_builtins

        with self._model_lock:
            if self._builtins is None:
                self._builtins = builtin_configs()
        return fitting_builtins(adapter, self._builtins)

    def add_note(self, text: str, source: str | None = None) -> str:
        """Record a note for the log (once per distinct text) and the source it applies to."""
        with self._model_lock:
            if text not in self.notes:
                self.notes.append(text)
            if source is not None:
                self.note_sources.setdefault(text, []).append(source)
        return text

    def _checkpoint_for(self, adapter: Adapter) -> tuple[Any, list[str]]:
        """(the loaded checkpoint that scores ``adapter``, []) or (None, notes saying why there is none)."""
        if not self.predict:
            return None, []
        try:
            from lolctl.nn.checkpoint import find_checkpoint_for
        except ImportError:
            return None, [self.add_note(NO_MODELS_NOTE)]
        ref = self.checkpoint or self._find(adapter.meta.base_model or "", find_checkpoint_for)
        if ref is None:
            return None, [self.add_note(no_checkpoint_note(adapter.meta.base_model, self._fitting(adapter)))]
        return self._load(ref), []

    def _predict(self, ckpt: Any, adapters: list[Adapter]) -> list[tuple[dict[str, Any] | None, list[str]]]:
        """(prediction, notes) per adapter: each is checked against the checkpoint (one that does not fit gets health
        only and a note saying why), then the model runs once on all that fit."""
        results: list[tuple[dict[str, Any] | None, list[str]]] = [(None, [])] * len(adapters)
        with self._model_lock:
            fit: list[int] = []
            verdicts = []  # each fitting adapter's "ood" reasons and score
            for i, verdict in enumerate(ckpt.check_many(adapters)):
                if isinstance(verdict, LolctlError):
                    results[i] = (None, [_misfit_note(ckpt, verdict)])
                else:
                    fit.append(i)
                    verdicts.append(verdict)
            try:
                preds = ckpt.predict([adapters[i] for i in fit], verdicts) if fit else []
            except LolctlError:  # too large as a batch (L173): one at a time, each failure its own note
                preds = []
                for i, verdict in zip(fit, verdicts):
                    try:
                        preds.append(ckpt.predict([adapters[i]], [verdict])[0])
                    except LolctlError as err:
                        preds.append(None)
                        results[i] = (None, [_misfit_note(ckpt, err)])
        for i, pred in zip(fit, preds):
            if pred is not None:
                pred = dict(pred)
                pred.setdefault("checkpoint", getattr(ckpt, "name", None))
                pred.setdefault("base_model", getattr(ckpt, "base_model", None))
                results[i] = (pred, [])
        return results

    # ------------------------------------------------------------------ records
    def score_path(self, path: Path, source: str, item_id: str, hub_facts: dict | None = None) -> ScoreRecord:
        """Read one local adapter and build its record; raises LolctlError on unreadable input."""
        pending: list[_Pending] = []
        record = self._read_record(path, source, item_id, hub_facts, pending)
        self._finish(pending)
        return record

    def _read_record(self, path: Path, source: str, item_id: str, hub_facts: dict | None,
                     pending: list[_Pending]) -> ScoreRecord:
        """The record of one local adapter, its prediction left to :meth:`_finish` (the adapter joins ``pending``
        when a checkpoint scores it); raises LolctlError on unreadable input."""
        from lolctl.health import health
        from lolctl.read import read_adapter
        from lolctl.spectrum import spectrum

        with self._read_slots:
            kwargs: dict[str, Any] = {"trust_pickle": self.trust_pickle}
            if self.max_bytes is not None:
                kwargs["max_bytes"] = self.max_bytes
            adapter = read_adapter(path, **kwargs)
            report = health(adapter)
        findings = [f.to_dict() for f in report.findings]
        sketch = None
        if self.sketch:
            from lolctl.dedup import sketch as make_sketch

            sketch = make_sketch(adapter.modules).to_dict()
        record = ScoreRecord(
            source=source, item=item_id, path=str(path), summary=report.summary, findings=findings,
            max_severity=max_severity(findings), prediction=None, notes=[], hub=hub_facts or None,
            spectrum=spectrum(report.modules), modules=report.modules if self.modules else None, sketch=sketch,
            meta=adapter_meta(adapter) if self.meta else None,
        )
        ckpt, notes = self._checkpoint_for(adapter)
        if ckpt is not None:
            pending.append(_Pending(record, adapter, ckpt))
        self._set_prediction(record, None, notes)
        return record

    def _finish(self, pending: list[_Pending]) -> None:
        """Predict the pending records, one model call per checkpoint (adapters of one checkpoint batched)."""
        by_ckpt: dict[int, list[_Pending]] = {}
        for p in pending:
            by_ckpt.setdefault(id(p.checkpoint), []).append(p)
        for group in by_ckpt.values():
            for p, (pred, notes) in zip(group, self._predict(group[0].checkpoint, [p.adapter for p in group])):
                self._set_prediction(p.record, pred, notes)
        pending.clear()

    def _set_prediction(self, record: ScoreRecord, prediction: dict[str, Any] | None, notes: list[str]) -> None:
        record.prediction = prediction
        record.notes = notes
        for note in notes:  # the same text goes to the record and, once per distinct note, to the log
            self.add_note(note, record.source)

    def score_items(self, items: list[Item]) -> list[list[Record]]:
        """Records of each item (as :meth:`score_item`), the predictions of adapters that share a checkpoint made in
        batches of at most ``BATCH`` adapters."""
        pending: list[_Pending] = []
        failed: dict[int, ErrorRecord] = {}  # id(record) -> the error record that replaces it
        out = []
        for item in items:
            out.append(self._item_records(item, pending))
            if len(pending) >= BATCH:
                self._finish_safely(pending, failed)
        self._finish_safely(pending, failed)
        if failed:
            out = [[failed.get(id(r), r) for r in records] for records in out]
        return out

    def _finish_safely(self, pending: list[_Pending], failed: dict[int, ErrorRecord]) -> None:
        """:meth:`_finish`; a bug there turns the pending records into L199 error records in ``failed`` (the scan
        goes on)."""
        try:
            self._finish(pending)
        except Exception as err:
            if os.environ.get("LOLCTL_DEBUG"):
                raise
            for p in pending:
                failed[id(p.record)] = ErrorRecord.of(p.record.source, p.record.item, _bug(p.record.source, err))
            pending.clear()

    def score_item(self, item: Item) -> list[Record]:
        """Records for one item (a Hub repo may hold several adapters); user errors become error records."""
        return self.score_items([item])[0]

    def _item_records(self, item: Item, pending: list[_Pending]) -> list[Record]:
        """Records for one item, predictions left in ``pending``; user errors become error records."""
        try:
            if item.hub is None:
                assert item.path is not None
                return [self._read_record(item.path, item.display, item.id, None, pending)]
            hub = self.hub
            if hub is None:
                from lolctl.hub import Hub

                hub = self.hub = Hub()
            paths, facts = hub.fetch(item.hub, trust_pickle=self.trust_pickle, triage=self.triage,
                                     max_bytes=self.max_bytes)
            records: list[Record] = []
            for path in paths:
                source = item.display if len(paths) == 1 else f"{item.display}:{path.name}"
                try:
                    records.append(self._read_record(path, source, item.id, facts, pending))
                except LolctlError as err:
                    records.append(ErrorRecord.of(source, item.id, err, facts))
            return records
        except LolctlError as err:
            return [ErrorRecord.of(item.display, item.id, err)]
        except Exception as err:  # a bug must not end a long scan: record it (LOLCTL_DEBUG=1 re-raises)
            if os.environ.get("LOLCTL_DEBUG"):
                raise
            return [ErrorRecord.of(item.display, item.id, _bug(item.display, err))]


BATCH = 64  # adapters predicted in one model call at most (they are held in memory until then)


@dataclass
class _Pending:
    """A record waiting for its prediction, with its adapter and the checkpoint that scores it."""

    record: ScoreRecord
    adapter: Adapter
    checkpoint: Any


def _bug(where: str, err: Exception) -> LolctlError:
    return LolctlError("L199", where, f"{type(err).__name__}: {err}",
                       "this is a bug in lolctl; rerun with LOLCTL_DEBUG=1 for the traceback and report it")


def _misfit_note(ckpt: Any, err: LolctlError) -> str:
    """Why a checkpoint gives no prediction for an adapter that does not fit it (L171, L173)."""
    fix = f" (fix: {err.remedy})" if err.remedy else ""
    return printable(f"checkpoint {getattr(ckpt, 'name', '?')} does not fit this adapter [{err.code} {err.name}]: "
                     f"{err.reason}{fix}")
