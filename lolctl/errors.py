"""Errors with stable codes, one-line messages and exit codes.

Every error a user can cause is a :class:`LolctlError` carrying a stable code from :data:`CODES`, the thing it is
about (a path, a key, a repo id), the reason, and the remedy. The CLI prints ``error[CODE] where: reason (remedy)``
on one line and exits with the code's exit status; a traceback is shown only when ``LOLCTL_DEBUG=1``.

Exit codes (modelscan-style): 0 ok, 1 gate failed / findings at or above the chosen severity, 2 usage or input
error, 3 nothing scannable.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INPUT = 2
EXIT_NOTHING = 3


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    exit_code: int
    summary: str


_TABLE: list[tuple[str, str, int, str]] = [
    # sources and resolution
    ("L100", "source-not-found", EXIT_INPUT, "the path or repo does not exist"),
    ("L101", "nothing-scannable", EXIT_NOTHING, "no adapter weights were found at the source"),
    ("L102", "unsupported-adapter-type", EXIT_INPUT, "a PEFT method that is not LoRA (VeRA, IA3, LoHa, ...)"),
    ("L103", "unknown-layout", EXIT_INPUT, "tensors present but no known LoRA key scheme matched"),
    ("L104", "ambiguous-source", EXIT_INPUT, "several adapters at one source; name one"),
    # adapter_config.json
    ("L110", "config-invalid-json", EXIT_INPUT, "adapter_config.json is not valid JSON"),
    ("L111", "config-not-object", EXIT_INPUT, "adapter_config.json is not a JSON object"),
    ("L112", "config-bad-field", EXIT_INPUT, "a field of adapter_config.json has the wrong type or value"),
    ("L113", "config-missing", EXIT_INPUT, "a PEFT weights file without adapter_config.json"),
    # weight files
    ("L120", "file-truncated", EXIT_INPUT, "the file is shorter than its header says"),
    ("L121", "header-too-large", EXIT_INPUT, "the safetensors header length is impossible"),
    ("L122", "header-invalid", EXIT_INPUT, "the safetensors header is not valid JSON of the right form"),
    ("L123", "bad-offsets", EXIT_INPUT, "tensor data offsets overlap, leave gaps or fall outside the file"),
    ("L124", "unknown-dtype", EXIT_INPUT, "a tensor has a dtype lolctl cannot read"),
    ("L125", "too-large", EXIT_INPUT, "declared tensors exceed the memory budget"),
    ("L126", "empty-file", EXIT_INPUT, "the file is empty"),
    ("L127", "shape-mismatch", EXIT_INPUT, "declared shape and data size disagree"),
    ("L128", "not-a-weights-file", EXIT_INPUT, "the file is text (a Git LFS pointer, an HTML page, a placeholder)"),
    # pickle
    ("L130", "pickle-refused", EXIT_INPUT, "pickle files are not loaded without --trust-pickle"),
    ("L131", "pickle-unsafe", EXIT_INPUT, "the pickle needs more than plain tensors; it was not executed"),
    # LoRA structure
    ("L140", "factor-shape-mismatch", EXIT_INPUT, "lora_A and lora_B shapes do not fit together"),
    ("L141", "missing-factor", EXIT_INPUT, "a module has only one of its two factors"),
    ("L142", "rank-zero", EXIT_INPUT, "a module has rank 0"),
    ("L143", "rank-exceeds-layer", EXIT_INPUT, "the layer a module adapts has no rows or columns: no rank fits"),
    ("L144", "duplicate-module", EXIT_INPUT, "two keys map to the same module"),
    ("L145", "bad-factor-rank", EXIT_INPUT, "a factor tensor has an unexpected number of dimensions"),
    ("L146", "non-finite-factors", EXIT_INPUT, "a factor holds NaN or Inf, so the update cannot be compared"),
    # filesystem safety
    ("L150", "symlink-escape", EXIT_INPUT, "a link points outside the adapter folder"),
    ("L151", "path-traversal", EXIT_INPUT, "a file name would escape its folder"),
    # hub
    ("L160", "hub-not-found", EXIT_INPUT, "the repo, revision or file does not exist on the Hub"),
    ("L161", "hub-unauthorized", EXIT_INPUT, "the repo is private or gated"),
    ("L162", "hub-rate-limited", EXIT_INPUT, "the Hub kept answering 429"),
    ("L163", "hub-offline", EXIT_INPUT, "offline mode and the file is not in the local cache"),
    ("L164", "hub-unreachable", EXIT_INPUT, "the Hub could not be reached"),
    # checkpoints and models
    ("L170", "checkpoint-invalid", EXIT_INPUT, "a checkpoint folder is missing files or has a bad config"),
    ("L171", "spec-mismatch", EXIT_INPUT, "the adapter's modules or shapes do not match the checkpoint's input spec"),
    ("L172", "checkpoint-not-found", EXIT_INPUT, "no checkpoint by that name or path"),
    ("L173", "too-large-for-model", EXIT_INPUT, "the input would exceed the model's memory budget"),
    # zoo / labels / training
    ("L175", "labels-invalid", EXIT_INPUT, "the labels file is missing columns or has bad values"),
    ("L176", "zoo-invalid", EXIT_INPUT, "the zoo folder is missing its manifest or adapters"),
    # usage
    ("L180", "usage", EXIT_INPUT, "a command-line option has a bad value"),
    ("L181", "bad-requirement", EXIT_INPUT, "a --require expression could not be parsed"),
    ("L182", "device-unavailable", EXIT_INPUT, "the requested device is not available"),
    ("L183", "worker-lost", EXIT_INPUT, "the (Ray) worker scoring an item failed on every try"),
    # internal
    ("L199", "internal", EXIT_INPUT, "a bug in lolctl"),
]

CODES: dict[str, Code] = {c: Code(c, n, e, s) for c, n, e, s in _TABLE}


def printable(text: str) -> str:
    """One line, safe for a terminal: whitespace runs folded to one space, and control characters that names from
    the input may carry (ESC sequences, BEL, ...) shown escaped (``\\x1b``) instead of acting on the terminal."""
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class LolctlError(Exception):
    """A user-facing error: ``code`` is stable, ``where`` names the file/key/repo, ``remedy`` says what to do."""

    def __init__(self, code: str, where: str, reason: str, remedy: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}; add it to lolctl.errors._TABLE")
        self.code = code
        self.where = str(where)
        self.reason = reason
        self.remedy = remedy
        super().__init__(self.one_line())

    @property
    def name(self) -> str:
        return CODES[self.code].name

    @property
    def exit_code(self) -> int:
        return CODES[self.code].exit_code

    def one_line(self) -> str:
        text = f"error[{self.code} {self.name}] {self.where}: {self.reason}"
        if self.remedy:
            text += f" (fix: {self.remedy})"
        return printable(text)

    def to_dict(self) -> dict[str, str | int]:
        return {
            "code": self.code,
            "name": self.name,
            "where": self.where,
            "reason": self.reason,
            "remedy": self.remedy,
            "exit_code": self.exit_code,
        }
