"""Hostile and broken inputs: every one is refused with its stable code, naming the file (and key), before any
tensor memory is allocated; pickles and configs never execute anything."""

from __future__ import annotations

import json
import pickle
import struct
import sys

import pytest
import torch
from safetensors.torch import save_file

from lolctl.errors import LolctlError
from lolctl.read import read_adapter

PEFT_CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}


def raw_file(path, header: dict, data: bytes = b"", n_override: int | None = None):
    h = json.dumps(header).encode()
    n = len(h) if n_override is None else n_override
    path.write_bytes(struct.pack("<Q", n) + h + data)
    return path


def entry(dtype="F32", shape=(2, 2), begin=0, end=16):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def expect(code: str, source, **kw) -> LolctlError:
    with pytest.raises(LolctlError) as e:
        read_adapter(source, **kw)
    assert e.value.code == code, e.value.one_line()
    assert "\n" not in e.value.one_line()
    return e.value


# --- the safetensors container ----------------------------------------------------------------------------------

HEADER_CASES = {
    "bad-json": ("L122", lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{oops")),
    "not-object": ("L122", lambda p: raw_file(p, [1, 2])),  # type: ignore[arg-type]
    "entry-not-object": ("L122", lambda p: raw_file(p, {"x.lora_A.weight": 3})),
    "negative-shape": ("L122", lambda p: raw_file(p, {"k": entry(shape=(-1, 2))}, bytes(16))),
    "bool-offsets": ("L122", lambda p: raw_file(p, {"k": {"dtype": "F32", "shape": [1], "data_offsets": [False, 4]}},
                                                bytes(4))),
    "duplicate-key": ("L122", lambda p: (lambda h: p.write_bytes(struct.pack("<Q", len(h)) + h + bytes(8)))(
        b'{"k": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "k": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')),
    "bad-metadata": ("L122", lambda p: raw_file(p, {"__metadata__": {"a": 1}, "k": entry()}, bytes(16))),
    "unknown-dtype": ("L124", lambda p: raw_file(p, {"k": entry(dtype="C64")}, bytes(16))),
    "offsets-past-end": ("L120", lambda p: raw_file(p, {"k": entry(begin=0, end=16)}, bytes(8))),
    "offsets-reversed": ("L123", lambda p: raw_file(p, {"k": entry(begin=16, end=0)}, bytes(16))),
    "deep-nesting": ("L122", lambda p: (lambda h: p.write_bytes(struct.pack("<Q", len(h)) + h))(
        b'{"__metadata__": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")),
    "bigint-shape": ("L122", lambda p: (lambda h: p.write_bytes(struct.pack("<Q", len(h)) + h + bytes(16)))(
        b'{"k": {"dtype": "F32", "shape": [' + b"9" * 5000 + b', 2], "data_offsets": [0, 16]}}')),
    "huge-declared": ("L120", lambda p: raw_file(p, {"k": entry(shape=(65536, 65536), end=2**34)}, bytes(16))),
    "overlap": ("L123", lambda p: raw_file(p, {"a": entry(begin=0, end=16), "b": entry(begin=8, end=24)}, bytes(24))),
    "gap": ("L123", lambda p: raw_file(p, {"a": entry(begin=4, end=20)}, bytes(20))),
    "trailing": ("L123", lambda p: raw_file(p, {"a": entry()}, bytes(32))),
    "shape-vs-bytes": ("L127", lambda p: raw_file(p, {"a": entry(shape=(3, 3))}, bytes(16))),
    "header-longer-than-file": ("L120", lambda p: raw_file(p, {"a": entry()}, bytes(16), n_override=10_000)),
    "header-length-absurd": ("L121", lambda p: raw_file(p, {"a": entry()}, bytes(16), n_override=2**60)),
    "shorter-than-prefix": ("L120", lambda p: p.write_bytes(b"\r\n")),
    "empty": ("L126", lambda p: p.write_bytes(b"")),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_bad_safetensors_refused_with_code(tmp_path, case):
    code, make = HEADER_CASES[case]
    path = tmp_path / "pytorch_lora_weights.safetensors"
    make(path)
    err = expect(code, path)
    assert str(path) in err.where


def test_git_lfs_pointer_is_explained(tmp_path):
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    err = expect("L128", path)  # not L121: its first 8 bytes would read as an impossible header length
    assert "git lfs" in err.remedy.lower() and "LFS pointer" in err.reason


def test_memory_budget_checked_before_reading(tmp_path):
    path = tmp_path / "k.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.ones(2, 64), "lora_unet_a.lora_up.weight": torch.ones(64, 2)},
              path)
    expect("L125", path, max_bytes=1000)
    assert read_adapter(path, max_bytes=2000).ranks == [2]


# --- LoRA structure ---------------------------------------------------------------------------------------------


def peft_folder(tmp_path, tensors: dict, config: dict | None = None):
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps(config or PEFT_CONFIG))
    return tmp_path


P = "base_model.model.layer.q"
STRUCTURE_CASES = {
    "shape-mismatch": ("L140", {f"{P}.lora_A.weight": torch.ones(2, 8), f"{P}.lora_B.weight": torch.ones(8, 3)}),
    "missing-B": ("L141", {f"{P}.lora_A.weight": torch.ones(2, 8)}),
    "rank-zero": ("L142", {f"{P}.lora_A.weight": torch.ones(0, 8), f"{P}.lora_B.weight": torch.ones(8, 0)}),
    "zero-size-layer": ("L143", {f"{P}.lora_A.weight": torch.ones(4, 0), f"{P}.lora_B.weight": torch.ones(8, 4)}),
    "duplicate": ("L144", {f"{P}.lora_A.weight": torch.ones(2, 8), f"{P}.lora_A.default.weight": torch.ones(2, 8),
                           f"{P}.lora_B.weight": torch.ones(8, 2)}),
    "vector-factor": ("L145", {f"{P}.lora_A.weight": torch.ones(8), f"{P}.lora_B.weight": torch.ones(8, 2)}),
}


@pytest.mark.parametrize("case", list(STRUCTURE_CASES))
def test_bad_structure_refused(tmp_path, case):
    code, tensors = STRUCTURE_CASES[case]
    err = expect(code, peft_folder(tmp_path, tensors))
    assert "adapter_model.safetensors:base_model.model.layer.q" in err.where


TENSORS = {f"{P}.lora_A.weight": torch.ones(2, 8), f"{P}.lora_B.weight": torch.ones(8, 2)}


def test_config_rank_mismatch_and_unmatched_pattern_are_findings(tmp_path):
    cfg = {**PEFT_CONFIG, "r": 4, "rank_pattern": {"nothing_here": 3}}
    a = read_adapter(peft_folder(tmp_path, {f"{P}.lora_A.weight": torch.ones(2, 8),
                                            f"{P}.lora_B.weight": torch.ones(8, 2)}, cfg))
    assert {"H210", "H211"} <= {f.code for f in a.findings}
    assert a.modules[0].scale == 4 / 2  # the tensors' rank is used
    two = {**TENSORS, **{k.replace("layer.q", "layer.k"): v.clone() for k, v in TENSORS.items()}}
    (tmp_path / "two").mkdir()
    a = read_adapter(peft_folder(tmp_path / "two", two, {**PEFT_CONFIG, "r": 4, "target_modules": ["q", "k"]}))
    h210 = [f for f in a.findings if f.code == "H210"]
    assert len(h210) == 1 and "2 modules" in h210[0].message and h210[0].module == "layer.k"


# --- configs ----------------------------------------------------------------------------------------------------

TENSORS = {f"{P}.lora_A.weight": torch.ones(2, 8), f"{P}.lora_B.weight": torch.ones(8, 2)}


@pytest.mark.parametrize("text,code", [
    ("{not json", "L110"),
    ("[1, 2]", "L111"),
    (json.dumps({**PEFT_CONFIG, "r": "eight"}), "L112"),
    (json.dumps({**PEFT_CONFIG, "lora_alpha": None, "use_rslora": "yes"}), "L112"),
    (json.dumps({**PEFT_CONFIG, "rank_pattern": {"(": 2}}), "L112"),
    ("[" * 100_000 + "]" * 100_000, "L110"),
    (json.dumps({**PEFT_CONFIG, "alpha_pattern": {"q": float("inf")}}), "L112"),
    (json.dumps({**PEFT_CONFIG, "lora_alpha": float("nan")}), "L112"),
])
def test_bad_config(tmp_path, text, code):
    save_file(TENSORS, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(text)
    expect(code, tmp_path)


def test_config_never_imports_auto_mapping(tmp_path, monkeypatch):
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "lolctl_trap_module.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(trap))
    cfg = {**PEFT_CONFIG, "auto_mapping": {"base_model_class": "X", "parent_library": "lolctl_trap_module"}}
    folder = tmp_path / "ad"
    folder.mkdir()
    a = read_adapter(peft_folder(folder, TENSORS, cfg))
    assert a.ranks == [2] and "lolctl_trap_module" not in sys.modules


@pytest.mark.parametrize("field,value,refused", [
    ("target_parameters", ["experts.gate_up_proj"], True), ("use_qalora", True, True),
    ("use_bdlora", {"nblocks": 2}, True), ("kasa_config", {}, True),  # PEFT enables KaSA for any non-None config
    ("target_parameters", [], False), ("use_qalora", False, False), ("kasa_config", None, False),
])
def test_lora_variants_with_another_delta_refused(tmp_path, field, value, refused):
    peft_folder(tmp_path, TENSORS, {**PEFT_CONFIG, field: value})
    if refused:
        assert field in expect("L102", tmp_path).where
    else:
        assert read_adapter(tmp_path).ranks == [2]


def test_peft_weights_without_config(tmp_path):
    save_file(TENSORS, tmp_path / "w.safetensors")
    expect("L113", tmp_path / "w.safetensors")


# --- pickle -----------------------------------------------------------------------------------------------------


class Boom:
    def __reduce__(self):
        return (open, (str(MARKER), "w"))


MARKER = None


def test_pickle_refused_unless_trusted(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    torch.save(TENSORS, tmp_path / "adapter_model.bin")
    expect("L130", tmp_path)
    a = read_adapter(tmp_path, trust_pickle=True)
    assert a.ranks == [2] and "H219" in {f.code for f in a.findings}


def test_malicious_pickle_never_executes(tmp_path):
    global MARKER
    MARKER = tmp_path / "pwned"
    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    with open(tmp_path / "adapter_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    expect("L130", tmp_path)
    expect("L131", tmp_path, trust_pickle=True)
    assert not MARKER.exists()


# --- filesystem -------------------------------------------------------------------------------------------------


def test_symlink_escaping_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    save_file(TENSORS, outside / "adapter_model.safetensors")
    folder = tmp_path / "ad"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    (folder / "adapter_model.safetensors").symlink_to(outside / "adapter_model.safetensors")
    expect("L150", folder)


def test_hub_cache_snapshot_links_are_allowed(tmp_path):
    repo = tmp_path / "models--someone--adapter"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file(TENSORS, repo / "blobs" / "w1")
    (repo / "blobs" / "c1").write_text(json.dumps(PEFT_CONFIG))
    (snap / "adapter_model.safetensors").symlink_to(repo / "blobs" / "w1")
    (snap / "adapter_config.json").symlink_to(repo / "blobs" / "c1")
    assert read_adapter(snap).ranks == [2]
    assert read_adapter(snap / "adapter_model.safetensors").ranks == [2]  # the file itself, named by its link


def test_weights_that_are_not_files(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    (tmp_path / "adapter_model.safetensors").mkdir()
    expect("L101", tmp_path)
    (tmp_path / "adapter_model.safetensors").rmdir()
    raw_file(tmp_path / "adapter_model.safetensors", {})
    expect("L101", tmp_path)


def test_sources_that_are_not_adapters(tmp_path):
    expect("L100", tmp_path / "missing")
    expect("L101", tmp_path)
    for name in ("a", "b"):
        peft_folder(tmp_path / name if (tmp_path / name).mkdir() is None else None, TENSORS)
    expect("L104", tmp_path)
    assert read_adapter(tmp_path, name="b").ranks == [2]
    expect("L151", tmp_path, name="../..")


def test_every_dtype_reads_like_safetensors(tmp_path):
    from safetensors.torch import load_file

    from lolctl.read.safetensors_io import load_tensor, read_header

    torch.manual_seed(0)
    tensors = {
        "f64": torch.randn(3, 2, dtype=torch.float64), "f32": torch.randn(5), "f16": torch.randn(2, 3).half(),
        "bf16": torch.randn(4, 1).bfloat16(), "f8": torch.randn(6).to(torch.float8_e4m3fn),
        "f8b": torch.randn(2).to(torch.float8_e5m2), "i64": torch.arange(4), "i8": torch.arange(-3, 3).to(torch.int8),
        "u8": torch.arange(5).to(torch.uint8), "b": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    save_file(tensors, tmp_path / "all.safetensors")
    header = read_header(tmp_path / "all.safetensors", 2**20)
    reference = load_file(tmp_path / "all.safetensors")
    assert set(header.tensors) == set(reference)
    for key, want in reference.items():
        got = load_tensor(header, key)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("suffix,what", [("lora_mid.weight", "Tucker"), ("diff", "full weight difference"),
                                         ("hra_u", "non-LoRA")])
def test_lookalike_methods_refused(tmp_path, suffix, what):
    t = {"lora_unet_x.lora_down.weight": torch.ones(2, 8), "lora_unet_x.lora_up.weight": torch.ones(8, 2),
         f"lora_unet_x.{suffix}": torch.ones(2, 2)}
    save_file(t, tmp_path / "k.safetensors")
    err = expect("L102", tmp_path / "k.safetensors")
    assert what in err.reason


def test_fifos_are_never_opened(tmp_path):
    import os

    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    os.mkfifo(tmp_path / "adapter_model.safetensors")
    expect("L101", tmp_path)
    os.mkfifo(tmp_path / "other.safetensors")
    from lolctl.read import find_adapters

    assert find_adapters(tmp_path) == [tmp_path]
    (tmp_path / "adapter_model.safetensors").unlink()
    save_file(TENSORS, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").unlink()
    os.mkfifo(tmp_path / "adapter_config.json")
    expect("L110", tmp_path)


def test_random_corruption_only_ever_raises_coded_errors(tmp_path_factory):
    """Flip, cut or overwrite bytes of a valid adapter: the reader either reads it or raises a LolctlError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    base = tmp_path_factory.mktemp("fuzz")
    save_file({**TENSORS, "base_model.model.head.weight": torch.ones(3, 3)}, base / "w.safetensors")
    good = (base / "w.safetensors").read_bytes()
    (base / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
    @hypothesis.given(pos=st.integers(0, len(good) - 1), junk=st.binary(min_size=1, max_size=12),
                      cut=st.integers(0, len(good)), mode=st.sampled_from(["overwrite", "cut", "insert"]))
    def run(pos, junk, cut, mode):
        data = {"overwrite": good[:pos] + junk + good[pos + len(junk):], "cut": good[:cut],
                "insert": good[:pos] + junk + good[pos:]}[mode]
        (base / "adapter_model.safetensors").write_bytes(data)
        try:
            adapter = read_adapter(base, max_bytes=2**20)
        except LolctlError as e:
            assert e.code in {"L101", "L103", "L113", "L120", "L121", "L122", "L123", "L124", "L125", "L126", "L127",
                              "L140", "L141", "L142", "L143", "L144", "L145"}, e.one_line()
        else:
            assert all(m.U.shape[1] == m.V.shape[1] for m in adapter.modules)

    run()


def test_untrusted_text_in_errors_is_terminal_safe(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(PEFT_CONFIG))
    with open(tmp_path / "adapter_model.bin", "wb") as f:
        pickle.dump({"x": Boom()}, f)
    err = expect("L131", tmp_path, trust_pickle=True)
    assert "\x1b" not in err.one_line() and "weights_only=False" not in err.one_line()
    key = "base_model.model.q\x1b[31m\x07.lora_A.weight"
    save_file({key: torch.ones(2, 8)}, tmp_path / "adapter_model.safetensors")
    err = expect("L141", tmp_path)
    assert "\x1b" not in err.one_line() and "\x07" not in err.one_line() and "q\\x07.lora_A" in err.where
