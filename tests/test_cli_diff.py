"""`lolctl diff A B` on PEFT folders written in the test: copies, distinct adapters, errors, table width."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import invoke
from hubserver import peft_files, write_files
from lora_copies import cast, refactored


@pytest.fixture
def pair(tmp_path):
    base = peft_files(1, r=3, n=16, m=12)
    return {
        "a": write_files(tmp_path / "a", base),
        "copy": write_files(tmp_path / "copy", refactored(base, seed=7)),
        "half": write_files(tmp_path / "half", cast(base, torch.float16)),
        "other": write_files(tmp_path / "other", peft_files(2, r=5, n=16, m=12)),
        "bigger": write_files(tmp_path / "bigger", peft_files(1, r=3, n=16, m=12, layers=3)),
    }


def _json(*args) -> dict:
    code, res = invoke(["diff", *map(str, args), "-f", "json"])
    assert code == 0, res.output
    return json.loads(res.stdout)


def test_refactored_copy_is_identical(pair):
    doc = _json(pair["a"], pair["copy"])
    o = doc["overall"]
    assert doc["schema"] == "lolctl.diff/v1"
    assert o["cosine"] == pytest.approx(1.0, abs=1e-6) and o["rel_diff"] < 1e-5  # float32 storage of U g, g⁻¹ A
    assert o["max_col_angle_deg"] < 1e-3 and o["max_row_angle_deg"] < 1e-3
    assert o["common_modules"] == 4 and not doc["only_a"] and not doc["only_b"]
    assert all(m["cosine"] > 1 - 1e-6 for m in doc["modules"])


def test_float16_copy_is_near_identical_and_other_adapter_is_not(pair):
    half = _json(pair["a"], pair["half"])["overall"]
    assert 0.9999 < half["cosine"] < 1 and 1e-5 < half["rel_diff"] < 1e-2
    other = _json(pair["a"], pair["other"])
    assert abs(other["overall"]["cosine"]) < 0.5 and other["overall"]["rel_diff"] > 0.5
    assert {(m["rank_a"], m["rank_b"]) for m in other["modules"]} == {(3, 5)}
    assert all(len(m["col_angles_deg"]) == 3 for m in other["modules"])


def test_modules_present_in_one_only(pair):
    doc = _json(pair["bigger"], pair["a"])
    assert doc["only_a"] == ["encoder.layer.2.attention.self.query", "encoder.layer.2.attention.self.value"]
    assert doc["only_b"] == [] and doc["overall"]["common_modules"] == 4
    assert doc["overall"]["cosine"] < 1 and all(m["cosine"] == pytest.approx(1.0) for m in doc["modules"])


def test_table_fits_80_columns(pair):
    code, res = invoke(["diff", str(pair["a"]), str(pair["other"])])
    assert code == 0
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    assert any(line.startswith("cosine") for line in lines)
    assert sum("attention.self" in line for line in lines) == 4  # one row per module, none folded


def test_errors_are_one_line_with_codes(pair, tmp_path):
    code, res = invoke(["diff", str(pair["a"]), str(tmp_path / "missing")])
    assert code == 2 and res.exception.code == "L100"
    code, res = invoke(["diff", str(tmp_path), str(pair["a"])])  # a folder holding several adapters
    assert code == 2 and res.exception.code == "L104"
    assert "\n" not in res.exception.one_line()
    code, res = invoke(["diff", str(pair["a"]), str(pair["a"]), "-f", "csv"])
    assert code == 2


def test_help_has_examples():
    code, res = invoke(["diff", "--help"])
    assert code == 0 and "Examples" in res.stdout and "lolctl diff ./run-a ./run-b" in res.stdout
