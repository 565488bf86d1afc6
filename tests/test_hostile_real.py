"""The published adapters under ../shared/real-adapters through the same sealed CLI runs as the corpus: no traceback,
no internal error, and the broken ones get the same code and exit status as their generated counterparts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import harness as h
from hostile.make_corpus import build_corpus

pytestmark = pytest.mark.slow  # real adapters through sealed CLI subprocesses (quick set: pytest -m 'not slow')

REAL = (Path(__file__).resolve().parents[2] / "shared" / "real-adapters").resolve()  # ../shared may be a link
# real folder -> (the corpus case it must behave like, extra args)
TWINS = {
    "Hirvita6__LoRA-flower-diffusion__lora_weights": ("st_two_bytes", []),  # a 2-byte "\r\n" safetensors file
    "yoonyerin__be-great": ("pkl_only", []),  # only adapter_model.bin, no --trust-pickle
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not REAL.is_dir():
        pytest.skip("../shared/real-adapters is not beside this clone")
    base = tmp_path_factory.mktemp("real")
    corpus = base / "corpus"
    cases = {c.name: c for c in build_corpus(corpus, base / "outside", only=[t for t, _ in TWINS.values()])}
    folders = sorted(p for p in REAL.iterdir() if p.is_dir())
    spec = [{"id": f"real:{p.name}", "argv": ["inspect", str(p), "--format", "json"]} for p in folders]
    spec += [{"id": f"trusted:{p.name}", "argv": ["inspect", str(p), "--format", "json", "--trust-pickle"]}
             for p in folders if any(p.glob("*.bin"))]
    spec += [{"id": f"case:{c.name}", "argv": ["inspect", str(corpus / c.target), "--format", "json", *c.args]}
             for c in cases.values()]
    spec += [{"id": "scan", "argv": ["scan", str(REAL), "--health-only", "-f", "jsonl", "-j", "2"]}]
    work = base / "work"
    results = h.run_driver(spec, corpus, work, timeout=120)
    return {"results": results, "folders": folders, "work": work, "corpus": corpus}


def test_every_real_adapter_is_handled(runs):
    for rid, run in runs["results"]["runs"].items():
        assert not run["timed_out"], rid
        assert "Traceback" not in run["stderr"] and "L199" not in run["stderr"], (rid, run["stderr"][-400:])
        assert run["exit"] in (0, 1, 2, 3), (rid, run["exit"])
        if rid.startswith(("real:", "trusted:")):
            records = json.loads(run["stdout"])["adapters"]  # a folder may hold several weights files (LoRA-ViT)
            assert records, rid
            for rec in records:
                assert rec["status"] in ("ok", "error"), rid
                if rec["status"] == "error":
                    assert rec["error"]["code"].startswith("L1") and rec["error"]["where"]


@pytest.mark.parametrize("folder", sorted(TWINS))
def test_broken_real_adapters_behave_like_the_corpus(runs, folder):
    twin, _ = TWINS[folder]
    real, case = runs["results"]["runs"][f"real:{folder}"], runs["results"]["runs"][f"case:{twin}"]
    (real_rec,) = json.loads(real["stdout"])["adapters"]
    (case_rec,) = json.loads(case["stdout"])["adapters"]
    assert real_rec["status"] == case_rec["status"] == "error"
    assert real_rec["error"]["code"] == case_rec["error"]["code"]
    assert real["exit"] == case["exit"]


def test_scan_of_the_real_adapters_has_one_record_each(runs):
    from lolctl.read import find_adapters

    run = runs["results"]["runs"]["scan"]
    records = [json.loads(line) for line in run["stdout"].splitlines() if line.startswith("{")]
    items = [r["item"] for r in records]
    assert len(items) == len(set(items))
    assert set(items) == {str(p) for p in find_adapters(REAL)}
    assert {Path(r["item"]).parts[len(REAL.parts)] for r in records} <= {p.name for p in runs["folders"]}
    for folder in runs["folders"]:  # inspect FOLDER walks it as scan does: the same number of records
        inspected = json.loads(runs["results"]["runs"][f"real:{folder.name}"]["stdout"])["adapters"]
        assert len(inspected) == sum(Path(i).parts[len(REAL.parts)] == folder.name for i in items), folder.name


def test_nothing_written_outside_the_scratch_folder(runs):
    bad = [v for v in h.violations(runs["results"], runs["corpus"], runs["work"], runs["work"] / "none")
           if not v.startswith("r " + str(REAL.resolve()))]
    assert bad == []
