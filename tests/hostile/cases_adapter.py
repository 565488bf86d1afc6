"""Hostile cases above the container: configs, LoRA structure, pickles, the filesystem, kohya files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hostile import writers as w
from hostile.registry import MARKER_MODULE, Ctx, case, error, good_tensors, peft

Q = "model.layers.0.self_attn.q_proj"
QKEY = w.PEFT_PREFIX + Q
TRUST = ("--trust-pickle",)


# --- adapter_config.json -------------------------------------------------------------------------------------------


@error("cfg_missing", "L113", "PEFT weights without adapter_config.json")
def _(c: Ctx, d: Path):
    w.write_peft(d, w.st_file(good_tensors()), None)


@error("cfg_not_json", "L110", "adapter_config.json is not JSON")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), "{'r': 4, 'peft_type': LORA")


@error("cfg_empty", "L110", "adapter_config.json is 0 bytes")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), b"")


@error("cfg_not_utf8", "L110", "adapter_config.json is binary")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), b"\xff\xfe\x00{\x00}")


@error("cfg_deep_nesting", "L110", "adapter_config.json nests 100,000 arrays (recursion bomb)")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), "[" * 100_000 + "]" * 100_000)


@error("cfg_array", "L111", "adapter_config.json is a JSON array")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), [w.peft_config()])


@error("cfg_string", "L111", "adapter_config.json is a JSON string")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), '"LORA"')


@error("cfg_rank_wrong_type", "L112", "r is the string 'four'")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), w.peft_config(r="four"))


@error("cfg_alpha_wrong_type", "L112", "lora_alpha is a list")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), w.peft_config(lora_alpha=[8]))


@error("cfg_alpha_nan", "L112", "lora_alpha is NaN (Python's json accepts the literal)")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), json.dumps(w.peft_config(lora_alpha=float("nan"))))


@error("cfg_rank_pattern_not_object", "L112", "rank_pattern is a list")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), w.peft_config(rank_pattern=["q_proj", 4]))


@error("cfg_alpha_pattern_inf", "L112", "alpha_pattern gives q_proj the value Infinity (found by the fuzzer)")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), json.dumps(w.peft_config(alpha_pattern={"q_proj": float("inf")})))


@error("cfg_vera", "L102", "peft_type VERA: refused by name, never read as LoRA")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), w.peft_config(peft_type="VERA"))


@case("cfg_auto_mapping", "ok", None, 0, "auto_mapping/auto_map name a planted module; it must never be imported")
def _(c: Ctx, d: Path):
    cfg = w.peft_config(
        auto_mapping={"base_model_class": "Model", "parent_library": MARKER_MODULE},
        auto_map={"AutoModel": f"{MARKER_MODULE}.Model"},
        base_model_name_or_path=f"{MARKER_MODULE}",
        library_name=MARKER_MODULE,
    )
    peft(d, w.st_file(good_tensors()), cfg)
    (d / f"{MARKER_MODULE}.py").write_text(w.marker_module_source(c.markers, "adapter-folder"))


@case("cfg_rank_mismatch", "finding", "H210", 0, "config says r=8, the tensors have rank 4")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), w.peft_config(r=8))


# --- LoRA structure --------------------------------------------------------------------------------------------------


def _with(t: dict, key: str, value: w.Tensor | None) -> dict:
    t = dict(t)
    if value is None:
        del t[key]
    else:
        t[key] = value
    return t


@case("lora_nan", "finding", "H201", 1, "lora_B holds a NaN")
def _(c: Ctx, d: Path):
    t = good_tensors()
    dtype, shape, raw = t[f"{QKEY}.lora_B.weight"]
    t[f"{QKEY}.lora_B.weight"] = (dtype, shape, w.f32([float("nan")]) + raw[4:])
    peft(d, w.st_file(t))


@case("lora_inf", "finding", "H201", 1, "lora_A holds +Inf and -Inf")
def _(c: Ctx, d: Path):
    t = good_tensors()
    dtype, shape, raw = t[f"{QKEY}.lora_A.weight"]
    t[f"{QKEY}.lora_A.weight"] = (dtype, shape, w.f32([float("inf"), float("-inf")]) + raw[8:])
    peft(d, w.st_file(t))


@case("lora_float32_max", "finding", "H201", 1, "every value at the float32 maximum: U = s·B overflows to Inf")
def _(c: Ctx, d: Path):
    t = {k: (dt, s, w.f32([3.4028234e38] * (len(r) // 4))) for k, (dt, s, r) in good_tensors().items()}
    peft(d, w.st_file(t))


@case("lora_huge_finite", "ok", None, 0, "one lora_A value is 3e38: U, V finite, only U Vᵀ overflows float32")
def _(c: Ctx, d: Path):
    t = good_tensors()
    dtype, shape, raw = t[f"{QKEY}.lora_A.weight"]
    t[f"{QKEY}.lora_A.weight"] = (dtype, shape, w.f32([3.0e38]) + raw[4:])
    peft(d, w.st_file(t))


@case("lora_inert", "finding", "H202", 1, "every lora_B is zero (saved before training)")
def _(c: Ctx, d: Path):
    t = {k: (dt, s, bytes(len(r)) if ".lora_B." in k else r) for k, (dt, s, r) in good_tensors().items()}
    peft(d, w.st_file(t))


@error("lora_shape_mismatch", "L140", "lora_A has rank 4, lora_B has rank 3")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(_with(good_tensors(), f"{QKEY}.lora_B.weight", ("F32", [16, 3], w.randn((16, 3), 9)))))


@error("lora_rank_zero", "L142", "lora_A is [0, 16] and lora_B is [16, 0]")
def _(c: Ctx, d: Path):
    t = _with(good_tensors(), f"{QKEY}.lora_A.weight", ("F32", [0, 16], b""))
    peft(d, w.st_file(_with(t, f"{QKEY}.lora_B.weight", ("F32", [16, 0], b""))))


@case("lora_rank_exceeds_layer", "finding", "H204", 0, "rank 8 on a 4x4 layer (PEFT makes these): read")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors(modules={Q: (4, 4)}, rank=8)), w.peft_config(r=8))


@error("lora_only_A", "L141", "a module has lora_A but no lora_B")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(_with(good_tensors(), f"{QKEY}.lora_B.weight", None)))


@error("lora_only_B", "L141", "a module has lora_B but no lora_A")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(_with(good_tensors(), f"{QKEY}.lora_A.weight", None)))


@error("lora_factor_3d", "L145", "a linear lora_A with three dimensions")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(_with(good_tensors(), f"{QKEY}.lora_A.weight", ("F32", [4, 4, 4], w.randn((4, 4, 4), 3)))))


@error("lora_factor_1d", "L145", "a lora_B with one dimension")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(_with(good_tensors(), f"{QKEY}.lora_B.weight", ("F32", [64], w.randn((64,), 3)))))


@error("lora_duplicate_module", "L144", "the same module twice: lora_A.weight and lora_A.default.weight")
def _(c: Ctx, d: Path):
    t = good_tensors()
    t[f"{QKEY}.lora_A.default.weight"] = t[f"{QKEY}.lora_A.weight"]
    t[f"{QKEY}.lora_B.default.weight"] = t[f"{QKEY}.lora_B.weight"]
    peft(d, w.st_file(t))


@error("lora_no_lora_keys", "L103", "tensors, but none named like a LoRA factor")
def _(c: Ctx, d: Path):
    peft(d, w.st_file({"encoder.weight": ("F32", [4, 4], w.randn((4, 4), 1)), "bias": ("F32", [4], w.randn((4,), 2))}))


# --- pickles ---------------------------------------------------------------------------------------------------------


def _bin(d: Path, data: bytes) -> None:
    peft(d, data, name="adapter_model.bin")


@error("pkl_only", "L130", "only adapter_model.bin (a plain tensor pickle), no --trust-pickle")
def _(c: Ctx, d: Path):
    _bin(d, w.torch_save_bytes(w.torch_state_dict(good_tensors())))


@case("pkl_only_trusted", "ok", None, 0, "the same plain tensor pickle with --trust-pickle (control)", TRUST)
def _(c: Ctx, d: Path):
    _bin(d, w.torch_save_bytes(w.torch_state_dict(good_tensors())))


@error("pkl_exec", "L130", "a torch.save pickle whose loading would run exec(); no --trust-pickle")
def _(c: Ctx, d: Path):
    _bin(d, w.torch_save_bytes({"x.lora_A.weight": w._Exec(w.touch_code(c.markers / "pkl_exec"))}))


@error("pkl_exec_trusted", "L131", "the same exec() pickle with --trust-pickle: weights_only refuses it", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, w.torch_save_bytes({"x.lora_A.weight": w._Exec(w.touch_code(c.markers / "pkl_exec_trusted"))}))


@error("pkl_exec_raw_trusted", "L131", "a legacy (non-zip) pickle running exec(), --trust-pickle", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, w.raw_exec_pickle(c.markers / "pkl_exec_raw_trusted"))


@error("pkl_import_trusted", "L131", "a pickle that imports the planted module, --trust-pickle", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, w.global_import_pickle(MARKER_MODULE))


@error("pkl_not_dict_trusted", "L131", "a pickle of a list of tensors, --trust-pickle", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, w.torch_save_bytes(list(w.torch_state_dict(good_tensors()).values())))


@error("pkl_garbage_trusted", "L131", "4 KiB of random bytes named adapter_model.bin, --trust-pickle", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, os.urandom(4096))


@error("pkl_zero_length_trusted", "L126", "a 0-byte adapter_model.bin, --trust-pickle", args=TRUST)
def _(c: Ctx, d: Path):
    _bin(d, b"")


# --- filesystem ------------------------------------------------------------------------------------------------------


def _outside_adapter(c: Ctx, name: str) -> Path:
    """A valid adapter planted outside the corpus: reading it through a link is an escape."""
    target = c.outside / "planted" / name
    peft(target, w.st_file(good_tensors(seed=99)))
    return target


@error("fs_symlink_weights_escape", "L150", "adapter_model.safetensors links to a file outside the folder")
def _(c: Ctx, d: Path):
    target = _outside_adapter(c, "weights") / "adapter_model.safetensors"
    peft(d, None)
    (d / "adapter_model.safetensors").symlink_to(os.path.relpath(target, d))


@error("fs_symlink_config_escape", "L150", "adapter_config.json links to a file outside the folder")
def _(c: Ctx, d: Path):
    target = _outside_adapter(c, "config") / "adapter_config.json"
    w.write_peft(d, w.st_file(good_tensors()), None)
    (d / "adapter_config.json").symlink_to(target)


@error("fs_symlink_absolute_etc", "L150", "adapter_model.safetensors links to /etc/passwd")
def _(c: Ctx, d: Path):
    peft(d, None)
    (d / "adapter_model.safetensors").symlink_to("/etc/passwd")


@error("fs_weights_is_directory", "L101", "adapter_model.safetensors is a directory", exit=3)
def _(c: Ctx, d: Path):
    peft(d, None)
    (d / "adapter_model.safetensors").mkdir()


@error("fs_weights_is_fifo", "L101", "adapter_model.safetensors is a FIFO (opening it would block)", exit=3)
def _(c: Ctx, d: Path):
    peft(d, None)
    os.mkfifo(d / "adapter_model.safetensors")


@error("fs_dangling_symlink", "L101", "adapter_model.safetensors links to a missing file inside the folder", exit=3)
def _(c: Ctx, d: Path):
    peft(d, None)
    (d / "adapter_model.safetensors").symlink_to("missing.safetensors")


# --- kohya single files ----------------------------------------------------------------------------------------------

KOHYA = "lora_unet_" + Q.replace(".", "_")


def _kohya(d: Path, tensors: dict) -> str:
    d.mkdir(parents=True)
    (d / "lora.safetensors").write_bytes(w.st_file(tensors, {"ss_network_dim": "4", "ss_network_alpha": "8"}))
    return "lora.safetensors"


@case("kohya_missing_alpha", "finding", "H212", 0, "no .alpha tensors: alpha defaults to the rank (scale 1)")
def _(c: Ctx, d: Path):
    return _kohya(d, good_tensors(style="kohya", alpha=None))


@error("kohya_mismatched_pair", "L140", "lora_down has rank 4, lora_up rank 8")
def _(c: Ctx, d: Path):
    t = good_tensors(style="kohya")
    t[f"{KOHYA}.lora_up.weight"] = ("F32", [16, 8], w.randn((16, 8), 5))
    return _kohya(d, t)


@error("kohya_down_only", "L141", "a module with lora_down and alpha but no lora_up")
def _(c: Ctx, d: Path):
    t = good_tensors(style="kohya")
    del t[f"{KOHYA}.lora_up.weight"]
    return _kohya(d, t)


@case("kohya_alpha_nan", "finding", "H201", 1, "an alpha tensor holding NaN")
def _(c: Ctx, d: Path):
    t = good_tensors(style="kohya")
    t[f"{KOHYA}.alpha"] = ("F32", [], w.f32([float("nan")]))
    return _kohya(d, t)


# --- hostile names ---------------------------------------------------------------------------------------------------


@error("name_markup", "L120", "a broken adapter in a folder named like Rich markup and a glob: 'x [/] [bold]y'")
def _(c: Ctx, d: Path):
    peft(d / "x [/] [bold]y", b"\r\n")
    return "x [/] [bold]y"


@error("name_control_chars", "L120", "a broken adapter in a folder whose name holds ESC[31m and a newline")
def _(c: Ctx, d: Path):
    name = "red\x1b[31m\nline"
    peft(d / name, b"\r\n")
    return name


@error("cfg_too_large", "L112", "a 5 MiB adapter_config.json (whitespace around {}): refused before parsing")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()), b" " * (5 * 2**20) + json.dumps(w.peft_config()).encode())


@case("name_markup_keys", "ok", None, 0, "Rich markup in the base model name and in module names from tensor keys")
def _(c: Ctx, d: Path):
    mods = {"model.[/].q_proj": (16, 16), "model.[bold red]x[/bold red].v_proj": (16, 16)}
    cfg = w.peft_config(base_model_name_or_path="[/] [link=https://example.invalid]evil", target_modules=None)
    peft(d, w.st_file(good_tensors(modules=mods)), cfg)


@case("fs_dir_symlink_loop", "ok", None, 0, "an adapter folder holding `loop -> ..` (discovery must terminate)")
def _(c: Ctx, d: Path):
    peft(d, w.st_file(good_tensors()))
    (d / "loop").symlink_to("..")


@error("fs_dir_symlink_escape", "L101", "a folder whose only entry links to an adapter folder outside", exit=3)
def _(c: Ctx, d: Path):
    target = _outside_adapter(c, "folder")
    d.mkdir(parents=True)
    (d / "sub").symlink_to(target, target_is_directory=True)
