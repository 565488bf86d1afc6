"""The HTML audit report (lolctl.report.html): structure, escaping of hostile names, no network references,
linear size, every adapter and every 'no prediction' reason shown; the record's `spectrum` (lolctl.spectrum)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lolctl.report.html import render, write
from lolctl.spectrum import spectrum

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def _spec(scale: float = 1.0) -> dict:
    return spectrum([{"name": f"encoder.layer.{i}.attention.self.{role}", "singular_values": [scale * (3 + i), 1.0,
                                                                                          0.1]}
                     for i in range(4) for role in ("query", "value")])


def _ok(source: str, *, quality: float | None = 0.4, ood: bool = False, **extra) -> dict:
    pred = None if quality is None else {
        "checkpoint": "tiny-ckpt",
        "tasks": {"quality": {"kind": "regression", "value": quality, "interval": [quality - 0.05, quality + 0.05]},
                  "membership": {"kind": "multilabel", "probs": {"noun.animal": 0.9, "noun.food": 0.2}},
                  "noise": {"kind": "multiclass", "probs": {"clean": 0.7, "noisy": 0.3}}},
        "ood": {"flag": ood, "reasons": ["share of the update in its top direction is 0.30"] if ood else [],
                "score": 6.2 if ood else 0.5},
        "about": {"quality": "retrieval accuracy"},
    }
    rec = {"schema": "lolctl.score/v1", "source": source, "item": f"/abs/{source}", "status": "ok",
           "path": f"/abs/{source}", "summary": {"format": "peft", "base_model": "tiny/base", "modules": 8,
                                                "ranks": [4], "parameters": 1024, "bytes": 4096,
                                                "delta_fro_norm": 2.0, "max_spectral_norm": 1.5},
           "findings": [], "max_severity": None, "prediction": pred, "notes": [], "spectrum": _spec()}
    rec.update(extra)
    return rec


def _error(source: str) -> dict:
    return {"schema": "lolctl.score/v1", "source": source, "item": source, "status": "error",
            "error": {"code": "L120", "name": "file-truncated", "where": source, "reason": "2 bytes is too short",
                      "remedy": "download it again", "exit_code": 2}}


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def test_hostile_text_is_escaped_everywhere():
    finding = {"code": "H201", "severity": "error", "message": HOSTILE, "module": HOSTILE, "remedy": HOSTILE}
    recs = [
        _ok(HOSTILE, findings=[finding], max_severity="error", duplicate_of=HOSTILE + "2", similarity=1.0),
        _ok(HOSTILE + "2", quality=None, notes=[HOSTILE]),
        {**_error(HOSTILE + "3"), "error": {"code": HOSTILE, "name": HOSTILE, "reason": HOSTILE, "remedy": HOSTILE}},
    ]
    recs[0]["prediction"]["tasks"]["membership"]["probs"][HOSTILE] = 0.5
    recs[0]["spectrum"]["sigma1"][HOSTILE] = [1.0, 2.0]
    page = render(recs, checks=[{"source": HOSTILE, "check": HOSTILE, "passed": False, "message": HOSTILE}],
                  title=HOSTILE, origin=HOSTILE)
    parsed = _parse(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "img", "iframe", "object", "embed", "link")]
    assert not [(t, a) for t, a in parsed.tags for name in a if name.startswith("on")]  # no event handlers
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert HOSTILE in "".join(parsed.text)  # shown to the reader as text, not dropped


def test_every_adapter_has_a_section_and_an_overview_row():
    recs = [_ok(f"adapters/a{i:03d}") for i in range(30)] + [_error("adapters/broken")]
    page = render(recs)
    parsed = _parse(page)
    sections = [a for t, a in parsed.tags if t == "details" and a.get("class") == "adapter"]
    assert len(sections) == len(recs)
    assert len({a["id"] for a in sections}) == len(recs)  # unique anchors
    links = {a["href"] for t, a in parsed.tags if t == "a"}
    assert {"#" + a["id"] for a in sections} <= links  # every section is linked from the overview
    for rec in recs:
        assert page.count(f">{rec['source']}<") >= 2  # overview row and section heading


def test_charts_are_inline_svg_and_nothing_is_fetched():
    recs = [_ok(f"a{i}", quality=0.3 + i / 100, ood=i == 3) for i in range(12)]
    page = render(recs, checks=[{"source": "a0", "check": "quality>=0.33", "passed": False, "message": "got 0.3"}])
    parsed = _parse(page)
    svgs = [a for t, a in parsed.tags if t == "svg"]
    labels = [a.get("aria-label") for a in svgs]
    assert labels.count("singular-value spectrum") == len(recs)
    assert "predictions with intervals" in labels and "label probabilities" in labels
    assert sum(t == "circle" for t, _ in parsed.tags) > len(recs)  # marks were drawn
    assert "quality&gt;=0.33" in page  # the gate threshold is drawn on the quality chart
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", page, re.I)
    assert not [a for t, a in parsed.tags for k in ("src", "srcset") if k in a]
    assert not [a for _, a in parsed.tags if str(a.get("href", "#")).split("#")[0]]  # only in-page links


def test_no_prediction_and_ood_reasons_are_shown():
    recs = [_ok("no-ckpt", quality=None, notes=["no checkpoint fits base model gpt2: health report only"]),
            _ok("health-only", quality=None), _ok("far", ood=True),
            _ok("inert", prediction={"checkpoint": "c", "tasks": {"log_size": {"kind": "regression", "value": None,
                                                                                "note": "never trained"}},
                                     "ood": {"flag": False, "kind": "inert", "reasons": []}})]
    page = render(recs)
    assert page.count("no checkpoint fits base model gpt2") >= 2  # the summary table and the adapter's section
    assert "no reason recorded" in page
    assert "share of the update in its top direction is 0.30" in page
    assert "never trained" in page and "the predictions are the base model's recorded facts" in page
    assert "1 adapter(s) have no value for this task" in page


def test_summary_counts_and_duplicates():
    recs = [_ok("a", sketch={}), _ok("b", sketch={}, duplicate_of="a", similarity=0.99999995), _error("c")]
    summary = {"items": 3, "ok": 2, "errors": 1, "predicted": 2, "ood": 0, "duplicates": 1, "error_codes": {"L120": 1},
               "skipped": [{"path": "x/pytorch_lora_weights.bin", "reason": "pickle twin"}]}
    page = render(recs, summary=summary)
    assert "Duplicates (1)" in page and "1.000000" in page
    assert "x/pytorch_lora_weights.bin" in page and "L120" in page and "Unreadable (1)" in page
    assert "skipped files: not recorded" not in page.lower()
    page = render([_ok("a")])  # no summary: counts from the records; skipped files and duplicates unknown, said so
    assert "Skipped files: not recorded" in page and "Not checked: these records carry no sketch" in page


def test_gate_verdict():
    checks = [{"source": "a", "check": "quality>=0.5", "passed": False, "message": "got 0.4", "error": False},
              {"source": "a", "check": "findings<error", "passed": True, "message": "no such findings"}]
    page = render([_ok("a")], checks=checks)
    assert "Gate FAILED</div>" not in page and "Gate FAILED" in page and "1/2 checks passed" in page
    assert "Gate passed" in render([_ok("a")], checks=checks[1:])


def test_size_grows_linearly():
    small = len(render([_ok(f"a{i}", quality=i / 400) for i in range(200)]))
    large = len(render([_ok(f"a{i}", quality=i / 800) for i in range(400)]))
    assert 1.8 < large / small < 2.1


def test_bad_field_types_do_not_break_the_page():
    rec = _ok("odd", summary="not a dict", findings=["x", {"severity": 3}], notes="text",
              prediction={"tasks": {"quality": {"kind": "regression", "value": "NaN", "interval": "?"}}},
              spectrum={"min": "x", "median": None})
    page = render([rec, {"source": 5}, "not a record"])
    assert page.count("class='adapter'") == 2


def test_write_is_atomic(tmp_path: Path):
    target = tmp_path / "r" / "report.html"
    write(target, "<p>one</p>")
    write(target, "<p>two</p>")
    assert target.read_text() == "<p>two</p>"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_spectrum_summary():
    spec = spectrum([{"name": "layer.0.q", "singular_values": [4.0, 2.0]},
                     {"name": "layer.1.q", "singular_values": [3.0, 1.0, 0.5]},
                     {"name": "layer.0.v", "singular_values": [1.23456789]},
                     {"name": "layer.1.v"}])  # no singular values: NaN/Inf factors
    assert spec == {"modules": 3, "min": [1.235, 1.0, 0.5], "median": [3.0, 1.5, 0.5], "max": [4.0, 2.0, 0.5],
                    "sigma1": {"layer.*.q": [4.0, 3.0], "layer.*.v": [1.235]}}
    assert spectrum([{"name": "a"}]) is None


def test_record_spectrum_is_gl_invariant_and_sensitive(tmp_path: Path):
    """The record's spectrum comes from ΔW alone: a copy re-factored by random g ∈ GL(r) per module (float64) has
    the same one; a wrong action (B g, g A) changes it."""
    import torch
    from hubserver import peft_files, write_files
    from lora_copies import refactored
    from safetensors.torch import load, save

    from lolctl.score import Scorer

    files = peft_files(3, r=3, n=10, m=7)
    double = {**files, "adapter_model.safetensors": save({k: v.double() for k, v in
                                                          load(files["adapter_model.safetensors"]).items()})}
    wrong = dict(load(double["adapter_model.safetensors"]))
    gen = torch.Generator().manual_seed(1)
    for key in [k for k in wrong if ".lora_A." in k]:
        g = torch.randn(3, 3, generator=gen, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
        wrong[key] = (g @ wrong[key]).contiguous()
        wrong[key.replace(".lora_A.", ".lora_B.")] = (wrong[key.replace(".lora_A.", ".lora_B.")] @ g).contiguous()
    scorer = Scorer(predict=False, modules=True)
    specs = []
    for i, variant in enumerate([double, refactored(double, 7, dtype=torch.float64),
                                 {**double, "adapter_model.safetensors": save(wrong)}]):
        folder = write_files(tmp_path / f"v{i}", variant)
        rec = scorer.score_path(folder, str(folder), str(folder))
        assert rec.spectrum == spectrum(rec.modules)
        specs.append(rec.spectrum)
    base, same, other = specs
    for key in ("min", "median", "max"):  # 4 significant digits: equal up to a rounding flip
        assert same[key] == pytest.approx(base[key], rel=1e-3)
    assert other["max"] != pytest.approx(base["max"], rel=1e-2)
