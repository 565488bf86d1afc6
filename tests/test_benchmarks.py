"""The benchmark scripts run in a reduced size so they cannot rot. These tests check that each script produces its
tables and that its equality checks hold; they never check timings (the full runs are documented in
docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run_script(module: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


@pytest.mark.slow  # a Python subprocess
def test_large_adapter_reduced() -> None:
    out = run_script(
        "benchmarks.large_adapter", "--layers", "2", "--hidden", "64", "--intermediate", "96", "--rank", "4",
        "--repeat", "1", "--inline",
    )
    assert "## Large adapter (Llama-2-7B shapes)" in out
    assert "2 layers, hidden 64, intermediate 96, r = 4, 14 modules, bf16" in out
    assert "EXTRAPOLATED from 3 of 14 modules" in out  # one module per distinct shape went through the dense SVD
    for shape, count in (("64x64", "8"), ("96x64", "4"), ("64x96", "2")):
        (row,) = table_rows(out, shape)
        assert row[1:3] == ["1", count]
    # the script compares the dense and the Gram-sketch top singular values with lolctl's (raises otherwise)
    assert "Check: the dense top singular value equals lolctl's spectral norm on all 3 sampled modules, and the " \
        "sketch's on all 14 modules." in out
    sketch_row = "sketch, NOT lolctl: mmap + one conversion + Gram-route singular values (see docstring)"
    (sketch,) = table_rows(out, sketch_row)
    assert sketch[2] == "— (inline)"
    assert len(table_rows(out, "within 2x of merely reading the tensors (load_file)")) == 1


@pytest.mark.slow
def test_large_adapter_phases_in_child_processes(tmp_path: Path) -> None:
    """The isolated path (peak RSS per phase) works: the memory column is filled, not '(inline)'."""
    out = run_script(
        "benchmarks.large_adapter", "--layers", "1", "--hidden", "32", "--intermediate", "48", "--rank", "2",
        "--repeat", "1", "--folder", str(tmp_path / "adapter"),
    )
    (row,) = table_rows(out, "lolctl read + health + canonical features")
    assert row[2].endswith(")") and "MB (+" in row[2]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow  # a Python subprocess
def test_glnet_forward_reduced() -> None:
    out = run_script(
        "benchmarks.glnet_forward", "--sizes", "tiny:2:16,small:3:24", "--batch", "6", "--repeat", "1", "--check", "6"
    )
    for name, L, d in (("tiny", "2", "16"), ("small", "3", "24")):
        (fwd, pre) = table_rows(out, name)
        assert fwd[1:3] == [L, d]
        assert float(fwd[8]) < 1e-9  # float64 outputs of batched vs loop (the script also asserts it)
        assert pre[1] == "0 (none)"
    assert "MLP+Dense stops fitting" in out


def test_loop_reference_matches_batched_glnet_across_shape_groups() -> None:
    """Modules of two shapes, interleaved: the loop reference maps groups and slots back to modules correctly."""
    torch = pytest.importorskip("torch")
    from benchmarks.glnet_forward import build, check_equal, make_layout_sketch, make_loop_reference
    from lolctl.nn import InputSpec, LoraBatch, ModuleSpec

    spec = InputSpec(tuple(ModuleSpec(f"m{i}", 12 if i % 2 else 8, 10 if i % 3 else 6) for i in range(5)))
    gen = torch.Generator().manual_seed(1)
    factors = [(torch.randn(4, mod.n, 3, generator=gen), torch.randn(4, mod.m, 3, generator=gen))
               for mod in spec.modules]
    batch = LoraBatch.from_factors(spec, factors)
    assert len(spec.groups) > 1
    net = build("glnet", spec, hidden=6, layers=3)
    net.prepare(batch)
    assert check_equal(net, batch, 4) < 1e-9
    net64, batch64 = net.double(), batch.to(dtype=torch.float64)
    laid, sketch = make_layout_sketch(net64, batch64)
    with torch.no_grad():
        torch.testing.assert_close(sketch(laid)["quality"], net64(batch64)["quality"], rtol=1e-10, atol=1e-12)

    # test the tester: a loop reference with one weight changed is caught
    loop = make_loop_reference(net.double())
    with torch.no_grad():
        loop.hid_U[0][3].mul_(1.5)
        sub = batch.to(dtype=torch.float64)
        a, b = net(sub), loop(sub.factors())
    assert not torch.allclose(a["quality"], b["quality"])


@pytest.mark.slow
def test_scan_many_reduced() -> None:
    out = run_script(
        "benchmarks.scan_many", "--adapters", "4", "--repeat", "1", "--help-repeat", "1", "--no-warmup"
    )
    assert "records: 4, none an error" in out
    for what in ("lolctl --help (cold start)", "lolctl scan of 4 adapters", "adapters per second after start-up"):
        assert len(table_rows(out, what)) == 1


@pytest.mark.slow
def test_dedup_cost_reduced() -> None:
    out = run_script("benchmarks.dedup_cost", "--adapters", "3", "--llama-layers", "1", "--llama-adapters", "1",
                     "--index", "100", "--rounds", "1")
    assert "## Duplicate detection: cost per adapter" in out
    assert len(table_rows(out, "MiniLM (12 modules 384x384, r=4)")) == 1


@pytest.mark.slow
def test_composite_predict_reduced() -> None:
    """Both ways run on the shipped checkpoint and give the same predictions (the script asserts it)."""
    out = run_script("benchmarks.composite_predict", "--adapters", "8", "--repeat", "1")
    assert [row[:2] for row in table_rows(out, "shared (load_checkpoint)")] == [["shared (load_checkpoint)", "8"]]
    assert len(table_rows(out, "separate (every buffer cloned)")) == 1


@pytest.mark.slow
def test_dense_optimizer_reduced() -> None:
    """Both optimizers step the same weights to the same values (the script asserts it) and print one row each."""
    out = run_script("benchmarks.dense_optimizer", "--inputs", "1000", "--hidden", "4", "--repeat", "1")
    assert [row[:2] for row in table_rows(out, "fused (lolctl)")] == [["fused (lolctl)", "4,000"]]
    assert len(table_rows(out, "unfused (torch default)")) == 1


@pytest.mark.slow
def test_train_step_reduced() -> None:
    """MLP+SVD with its features once reaches the outputs of computing them every step (the script asserts it)."""
    out = run_script("benchmarks.train_step", "--adapters", "40", "--repeat", "1", "--only", "mlp_svd")
    assert len(table_rows(out, "MLP+SVD, singular values once (lolctl)")) == 1
    assert len(table_rows(out, "MLP+SVD, singular values every step")) == 1
