"""The one scoring pipeline behind `score`, `scan`, `gate` and `inspect`: sources expanded into items, each adapter
read, its health computed and (unless health only) its prediction made, errors and notes logged, the exit code
chosen. Commands only pick the options and the report (`inspect` is score without predictions, with modules and
reader facts).

Logs go through the command's :class:`lolctl.report.output.Output` (stderr); nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lolctl.errors import EXIT_FINDINGS, EXIT_INPUT, EXIT_NOTHING, EXIT_OK, LolctlError, printable
from lolctl.factors import severity_rank
from lolctl.report.records import ErrorRecord, Record
from lolctl.score import Scorer, check_device
from lolctl.sources import Item, resolve

if TYPE_CHECKING:
    from lolctl.hub import Hub
    from lolctl.report.output import Output


def quiet_hub() -> Hub | None:
    """The Hub client of a command, with huggingface_hub's own retry warnings and download bars silenced (lolctl
    reports Hub trouble itself, as one coded line or a note); None when huggingface_hub is not installed."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from huggingface_hub.utils import logging as hf_logging
    except ImportError:
        return None
    from lolctl.hub import Hub

    disable_progress_bars()
    hf_logging.set_verbosity_error()
    return Hub()


class Pipeline:
    """One command's run: a quiet Hub client, a :class:`Scorer`, the items and what was skipped finding them."""

    def __init__(self, out: Output, *, predict: bool = True, checkpoint: str | None = None, device: str = "auto",
                 **scorer: Any) -> None:
        check_device(device, predict)  # --device cuda without CUDA: one usage error before any work
        self.out = out
        self.hub = quiet_hub()
        self.scorer = Scorer(checkpoint=checkpoint, device=device, predict=predict, hub=self.hub, **scorer)
        self.skipped: list[tuple[Path, str]] = []  # weights files met in folders that are not adapters

    def expand(self, sources: list[str], explain_empty: bool = False) -> list[Item]:
        """The items of the sources (lolctl.sources.resolve: paths, globs, folders walked, Hub repos and patterns).
        With ``explain_empty`` a local source in which the walk finds no adapter is kept as it is, so reading it
        explains what it holds. Nothing found at all is L101 (exit 3)."""
        items: list[Item] = []
        for src in sources:
            found = resolve([src], hub=self.hub, skipped=self.skipped)
            if not found and explain_empty and Path(src).exists():
                found = [Item(str(Path(src).resolve()), src, path=Path(src))]
            items += found
        items = list({item.id: item for item in items}.values())
        if not items:
            why = ""
            if self.skipped:
                path, reason = self.skipped[0]
                more = f" and {len(self.skipped) - 1} more" if len(self.skipped) > 1 else ""
                why = f"; skipped {len(self.skipped)} weights file(s): {path}: {reason}{more}"
            raise LolctlError("L101", " ".join(sources), "no adapters found at these sources" + why,
                              "point at a PEFT folder, a LoRA .safetensors file, a glob or a Hub repo")
        return items

    def log_skipped(self) -> None:
        """Weights files met in folders that are not adapters: never dropped silently."""
        for path, why in self.skipped:
            self.out.line(printable(f"skipped {path}: {why}"))

    def skipped_files(self) -> list[dict[str, str]]:
        """Distinct (path, reason) pairs as summary entries, in path order."""
        seen: dict[str, str] = {}
        for path, reason in self.skipped:
            seen.setdefault(str(path), reason)
        return [{"path": p, "reason": r} for p, r in sorted(seen.items())]

    def start(self) -> None:
        """Load --checkpoint up front, so a bad name is an input error before any scoring."""
        self.scorer.load_explicit_checkpoint()

    def score(self, items: list[Item]) -> list[Record]:
        """Every item's records in order (one at a time); error lines logged as they come."""
        self.start()
        records: list[Record] = []
        for item in items:
            found = self.scorer.score_item(item)
            self.log_errors(found)
            records += found
        return records

    def log_errors(self, records: list[Record]) -> None:
        for rec in records:
            if isinstance(rec, ErrorRecord):
                self.out.line(rec.line())

    def log_notes(self) -> None:
        """Every distinct note once (every mode), with the adapters it applies to: why there is no prediction.
        Notes of the Hub client come first (e.g. that the Hub was unreachable and the local cache answered)."""
        for note in getattr(self.hub, "notes", None) or []:
            self.out.note(note)
        for note in self.scorer.notes:
            sources = self.scorer.note_sources.get(note) or []
            who = ""
            if sources:
                more = f" and {len(sources) - 1} more" if len(sources) > 1 else ""
                who = f"no prediction for {printable(sources[0])}{more}: "
            self.out.note(who + note)

    def exit_code(self, records: list[Record], fail_on: str) -> int:
        """3 nothing scannable, 2 any unreadable item, 1 findings at/above ``fail_on``, else 0 (logged why)."""
        return exit_code(records, fail_on, self.out)


def exit_code(records: list[Record], fail_on: str, out: Output) -> int:
    """3 nothing scannable, 2 any unreadable item, 1 findings at/above ``fail_on`` ('never': never), else 0."""
    errors = [r for r in records if isinstance(r, ErrorRecord)]
    if not records or (len(errors) == len(records) and all(r.exit_code == EXIT_NOTHING for r in errors)):
        out.log(f"nothing scannable: exit {EXIT_NOTHING}")
        return EXIT_NOTHING
    if errors:
        out.log(f"{len(errors)} of {len(records)} records are errors: exit {EXIT_INPUT}")
        return EXIT_INPUT
    if fail_on != "never":
        worst = [r for r in records if not isinstance(r, ErrorRecord) and r.max_severity
                 and severity_rank(r.max_severity) >= severity_rank(fail_on)]
        if worst:
            out.log(f"{len(worst)} adapter(s) have findings at or above '{fail_on}': exit {EXIT_FINDINGS}")
            return EXIT_FINDINGS
    return EXIT_OK

