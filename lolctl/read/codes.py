"""Reader finding codes (H210 and up; H201-H209 belong to lolctl.health). Documented in docs/formats.md."""

from __future__ import annotations

import re

from lolctl.factors import Finding, Severity

# code -> (name, severity)
READER_FINDINGS: dict[str, tuple[str, Severity]] = {
    "H210": ("config-rank-mismatch", "warning"),
    "H211": ("pattern-unmatched", "warning"),
    "H212": ("alpha-defaulted", "info"),
    "H213": ("fan-in-fan-out-suspicious", "warning"),
    "H214": ("target-modules-mismatch", "warning"),
    "H215": ("scale-convention-uncertain", "info"),
    "H216": ("weights-file-ignored", "info"),
    "H217": ("lora-bias-payload", "info"),
    "H218": ("config-field-inferred", "info"),
    "H219": ("pickle-loaded", "info"),
    "H220": ("base-modifying-init", "warning"),
    "H221": ("broken-file-beside", "warning"),
}


def finding(code: str, message: str, module: str | None = None, remedy: str = "") -> Finding:
    _, severity = READER_FINDINGS[code]
    return Finding(code=code, severity=severity, message=" ".join(message.split()), module=module, remedy=remedy)


def grouped(code: str, modules: list[str], message: str, remedy: str = "") -> list[Finding]:
    """One finding for a condition that hits several modules: the count and the first module are named."""
    if not modules:
        return []
    where = f" ({len(modules)} modules, e.g. {modules[0]})" if len(modules) > 1 else ""
    return [finding(code, message + where, module=modules[0], remedy=remedy)]


def clean(text: str) -> str:
    """Untrusted text (tensor keys, library messages) made safe for a terminal: ANSI sequences dropped, other
    non-printable characters escaped."""
    if text.isprintable():  # the common case (ESC is not printable, so no ANSI sequence either): nothing to do
        return text
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
