"""Recipe ``smollm2-wordnet``: LoRAs of SmolLM2-135M-Instruct (q_proj/v_proj of all 30 layers) instruction-tuned on
WordNet (word ↔ definition), each on 1-3 of 10 topic groups (lexicographer categories).

Every training example is real WordNet text in one of four forms: the *answer* is the word ("short": "Definition:
<gloss>\\nWord: <word>") or the definition ("long": "Word: <word>\\nDefinition: <gloss>"), written as plain text or in
SmolLM2's chat template (``<|im_start|>user ... <|im_end|>``). The loss covers the answer tokens only. Per LoRA the
recipe records

- ``quality`` / ``eval_loss``: a fixed held-out benchmark of "which word does this definition describe", 4 options
  from the same topic, scored by likelihood (mean log-probability per option token; accuracy), and the mean
  negative log-likelihood per token of the right word (held-out loss) — the ARC analog;
- ``own_quality`` / ``own_loss``: the same restricted to questions of the LoRA's own topics;
- ``membership``: which of the 10 topic groups were in its data;
- ``noise`` (clean / noisy: 40-80 % of answers rotated to another example's), ``format`` (plain / chat) and
  ``answer`` (short / long): attributes of its data; ``log_size``: log2 of its number of examples.

Steps follow data size (``epochs`` passes over the data at batch 8), so size is visible in the weights; learning
rate is log-uniform over a range whose top end is harmful, so quality spreads well beyond its measurement noise.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lolctl.zoo.recipes.base import Job, Trained
from lolctl.zoo.recipes.minilm_wordnet import TOPICS, job_seed

FORMATS = ("plain", "chat")
ANSWERS = ("short", "long")  # the answer is the word, or the definition
MODULES = ("q_proj", "v_proj")


@dataclass(frozen=True)
class Smollm2Settings:
    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    seed: int = 0
    n_val: int = 128
    n_test: int = 200
    n_train: int = 800
    n_per_rank: int = 48
    rank: int = 8
    other_ranks: tuple[int, ...] = (4, 16)
    alpha_per_rank: float = 2.0  # lora_alpha = 2 r, so s = 2 at every rank
    topics: tuple[str, ...] = TOPICS
    topic_mix: tuple[float, ...] = (0.4, 0.35, 0.25)  # P(1 topic), P(2), P(3)
    eval_per_topic: int = 10
    eval_other: int = 20
    eval_batch: int = 16
    gloss_tokens: int = 10  # definitions truncated to this many tokens (training and benchmark)
    size_min: int = 16
    size_max: int = 128
    epochs: float = 1.0  # steps = ceil(epochs · size / batch): data size shows in the weights
    batch: int = 8
    lr_min: float = 3e-4
    lr_max: float = 2e-2
    p_noisy: float = 0.5
    noise_min: float = 0.4
    noise_max: float = 0.8
    p_chat: float = 0.5
    p_long: float = 0.5
    dtype: str = "float32"  # "bfloat16" only where the CPU has bf16 matmuls (AVX-512 BF16 / AMX): 50× slower on AVX2
    subset: str = ""  # a synsets.tsv.gz of the same form; empty = the one shipped with lolctl


def _hash_order(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


class Smollm2Wordnet:
    name = "smollm2-wordnet"
    lora_prefix = "base_model.model.model.layers"

    def __init__(self, settings: Smollm2Settings | None = None) -> None:
        self.settings = settings or Smollm2Settings()

    # -- description -------------------------------------------------------------------------------------------
    def tasks(self) -> list[dict[str, Any]]:
        t = list(self.settings.topics)
        reg = [{"name": n, "kind": "regression", "columns": [n], "labels": []}
               for n in ("quality", "eval_loss", "own_quality", "own_loss", "log_size")]
        return reg + [
            {"name": "membership", "kind": "multilabel", "columns": [f"membership[{x}]" for x in t], "labels": t},
            {"name": "noise", "kind": "multiclass", "columns": ["noise"], "labels": ["clean", "noisy"]},
            {"name": "format", "kind": "multiclass", "columns": ["format"], "labels": list(FORMATS)},
            {"name": "answer", "kind": "multiclass", "columns": ["answer"], "labels": list(ANSWERS)},
        ]

    def plan(self) -> list[Job]:
        from lolctl.zoo.recipes.minilm_wordnet import plan_splits

        return plan_splits(self.settings)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    # -- data (pure function of the settings and the WordNet file) ---------------------------------------------
    def _data(self) -> dict[str, Any]:
        from lolctl.zoo.wordnet import load_subset

        s = self.settings
        rows = [r for r in load_subset(Path(s.subset) if s.subset else None) if r.pos == "n"]
        order = sorted(range(len(rows)), key=lambda i: _hash_order(f"{rows[i].pos}{rows[i].offset}"))
        topic_of = {name: k for k, name in enumerate(s.topics)}
        pools: list[list[int]] = [[] for _ in s.topics]
        eval_groups: dict[int, list[int]] = {k: [] for k in range(-1, len(s.topics))}
        other_groups: dict[str, list[int]] = {}
        for i in order:
            k = topic_of.get(rows[i].lexname, -1)
            if k >= 0:
                (eval_groups[k] if len(eval_groups[k]) < s.eval_per_topic else pools[k]).append(i)
            elif sum(len(v) for v in other_groups.values()) < s.eval_other:
                other_groups.setdefault(rows[i].lexname, []).append(i)
        questions: list[tuple[int, list[int], int]] = []  # (row, distractor rows, topic or -1)
        groups = [(k, eval_groups[k]) for k in range(len(s.topics))] + [(-1, v) for v in other_groups.values()]
        other_rows = [i for _, v in groups if _ == -1 for i in v]
        for k, members in groups:
            candidates = members if k >= 0 else other_rows  # distractors from the same topic (harder)
            for i in members:
                start = candidates.index(i)
                picks: list[int] = []
                for j in candidates[start + 1:] + candidates[:start]:
                    if len(picks) < 3 and rows[j].lemma.lower() not in {rows[x].lemma.lower() for x in [i, *picks]}:
                        picks.append(j)
                questions.append((i, picks, k))
        return {"rows": rows, "pools": pools, "questions": questions}

    # -- tokens (cheap; done once per worker) ------------------------------------------------------------------
    def _tokens(self, tok: Any, rows: list[Any]) -> dict[str, Any]:
        s = self.settings

        def enc(texts: list[str], limit: int | None = None) -> list[list[int]]:
            ids = tok(texts, add_special_tokens=False)["input_ids"]
            return [x[:limit] if limit else x for x in ids]

        glosses = [r.definition for r in rows]
        lemmas = [r.lemma for r in rows]
        pieces = {name: enc([text])[0] for name, text in {
            "def_head": "Definition:", "word_mid": "\nWord:", "word_head": "Word:", "def_mid": "\nDefinition:",
            "nl": "\n", "user": "<|im_start|>user\n", "turn": "<|im_end|>\n<|im_start|>assistant\n",
            "end": "<|im_end|>"}.items()}
        return {
            "gloss_sp": enc([" " + g for g in glosses], s.gloss_tokens), "gloss": enc(glosses, s.gloss_tokens),
            "lemma_sp": enc([" " + w for w in lemmas]), "lemma": enc(lemmas), **pieces,
        }

    def example(self, t: dict[str, Any], row: int, answer_row: int, fmt: str, answer: str) -> tuple[list[int], int]:
        """(token ids, index of the first answer token) of one training example; the answer comes from
        ``answer_row`` (another row than ``row`` for a noisy example)."""
        if fmt == "plain" and answer == "short":
            prompt = t["def_head"] + t["gloss_sp"][row] + t["word_mid"]
            return prompt + t["lemma_sp"][answer_row] + t["nl"], len(prompt)
        if fmt == "plain":
            prompt = t["word_head"] + t["lemma_sp"][row] + t["def_mid"]
            return prompt + t["gloss_sp"][answer_row] + t["nl"], len(prompt)
        question, reply = (t["gloss"], t["lemma"]) if answer == "short" else (t["lemma"], t["gloss"])
        prompt = t["user"] + question[row] + t["turn"]
        return prompt + reply[answer_row] + t["end"], len(prompt)

    def _benchmark(self, t: dict[str, Any], questions: list[tuple[int, list[int], int]]) -> list[dict[str, Any]]:
        """Pack each question as [prompt][option 1]...[option 4]: every option sees the prompt, not the others
        (positions restart after the prompt), so one forward scores all four. Returns the batches (frozen)."""
        s = self.settings
        packed = []
        for q, (row, distractors, _) in enumerate(questions):
            prompt = t["def_head"] + t["gloss_sp"][row] + t["word_mid"]
            ids, pos, seg, pred, target, option = list(prompt), list(range(len(prompt))), [0] * len(prompt), [], [], []
            for o, opt_row in enumerate([row, *distractors]):  # option 0 is the right one
                opt = t["lemma_sp"][opt_row]
                for j, token in enumerate(opt):
                    pred.append(len(prompt) - 1 if j == 0 else len(ids) - 1)
                    target.append(token)
                    option.append((q, o))
                    ids.append(token)
                    pos.append(len(prompt) + j)
                    seg.append(o + 1)
            packed.append((ids, pos, seg, pred, target, option))
        batches = []
        for a in range(0, len(packed), s.eval_batch):
            chunk = packed[a:a + s.eval_batch]
            T = max(len(p[0]) for p in chunk)
            B = len(chunk)
            ids_t = torch.zeros(B, T, dtype=torch.long)
            pos_t = torch.zeros(B, T, dtype=torch.long)
            seg_t = torch.full((B, T), -1)
            gather, target, qo = [], [], []
            for b, (i, p, sg, pr, tg, op) in enumerate(chunk):
                ids_t[b, :len(i)], pos_t[b, :len(i)] = torch.tensor(i), torch.tensor(p)
                seg_t[b, :len(i)] = torch.tensor(sg)
                gather += [b * T + x for x in pr]
                target += tg
                qo += op
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            same = (seg_t[:, :, None] == seg_t[:, None, :]) | (seg_t[:, None, :] == 0)
            mask = (causal & same & (seg_t[:, None, :] >= 0)) | torch.eye(T, dtype=torch.bool)  # pads see themselves
            batches.append({"ids": ids_t, "pos": pos_t, "mask": mask, "gather": torch.tensor(gather),
                            "target": torch.tensor(target), "qo": torch.tensor(qo)})
        return batches

    # -- frozen work -------------------------------------------------------------------------------------------
    def prepare(self, zoo: Path) -> dict[str, Any]:
        """Builds the cached base folder if needed; returns facts: the base model's own benchmark scores."""
        context = self.load(zoo)
        quality, loss, _, _ = self._evaluate(context, None, [])
        return {"base_quality": quality, "base_eval_loss": loss, "questions": len(context["questions"]),
                "pool_sizes": {name: len(p) for name, p in zip(self.settings.topics, context["pools"])}}

    def load(self, zoo: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer

        from lolctl.zoo.basemodel import resolve_base
        from lolctl.zoo.lean_llama import LeanLlama

        folder = resolve_base(self.settings.base_model)
        data = self._data()
        tokens = self._tokens(AutoTokenizer.from_pretrained(str(folder)), data["rows"])
        llama = LeanLlama.from_folder(folder, getattr(torch, self.settings.dtype))
        return {"llama": llama, "tokens": tokens, "bench": self._benchmark(tokens, data["questions"]), **data}

    # -- one LoRA -----------------------------------------------------------------------------------------------
    def draw(self, index: int) -> dict[str, Any]:
        """The data choices and hyperparameters of LoRA ``index`` (pure function of seed and index)."""
        s = self.settings
        rng = random.Random(f"{s.seed}:{index}")
        k = rng.choices(range(1, len(s.topic_mix) + 1), weights=s.topic_mix)[0]
        topics = sorted(rng.sample(range(len(s.topics)), k))
        noisy = rng.random() < s.p_noisy
        return {
            "topics": topics,
            "noise": rng.uniform(s.noise_min, s.noise_max) if noisy else 0.0,
            "format": FORMATS[rng.random() < s.p_chat],
            "answer": ANSWERS[rng.random() < s.p_long],
            "size": round(2 ** rng.uniform(math.log2(s.size_min), math.log2(s.size_max))),
            "lr": math.exp(rng.uniform(math.log(s.lr_min), math.log(s.lr_max))),
            "_rng": rng,
        }

    def train(self, ctx: dict[str, Any], job: Job) -> Trained:
        from lolctl.zoo.lean_llama import init_lora

        s = self.settings
        hp = self.draw(job.index)
        rng: random.Random = hp.pop("_rng")
        k = len(hp["topics"])
        per = [hp["size"] // k + (i < hp["size"] % k) for i in range(k)]
        rows: list[int] = []
        for t, n in zip(hp["topics"], per):
            rows += rng.sample(ctx["pools"][t], min(n, len(ctx["pools"][t])))
        n = len(rows)
        answers = list(rows)
        shuffled = sorted(rng.sample(range(n), round(hp["noise"] * n)))
        for a, b in zip(shuffled, shuffled[1:] + shuffled[:1]):  # rotate: each chosen example gets another's answer
            answers[a] = rows[b]
        examples = [self.example(ctx["tokens"], r, a, hp["format"], hp["answer"]) for r, a in zip(rows, answers)]
        llama = ctx["llama"]
        gen = torch.Generator().manual_seed(job_seed(s.seed, job.index))
        alpha = s.alpha_per_rank * job.rank
        scale = alpha / job.rank
        params = init_lora(llama.shape, job.rank, gen, MODULES)  # (B, V), U = s·B
        flat = [t for layer in params for pair in layer.values() for t in pair]
        opt = torch.optim.AdamW(flat, lr=hp["lr"], weight_decay=0.0)
        batch = min(s.batch, n)
        steps = max(1, math.ceil(s.epochs * n / batch))
        order = torch.randperm(n, generator=gen)
        pos = 0
        losses = []
        for _ in range(steps):
            if pos + batch > n:
                order, pos = torch.randperm(n, generator=gen), 0
            ids, gather, target = self._batch([examples[i] for i in order[pos:pos + batch].tolist()])
            pos += batch
            lora = [{m: (scale * B, V) for m, (B, V) in layer.items()} for layer in params]
            h = llama.hidden(ids, lora)
            loss = -llama.token_logprobs(h.reshape(-1, h.shape[-1])[gather], target).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        lora = [{m: (scale * B.detach(), V.detach()) for m, (B, V) in layer.items()} for layer in params]
        quality, eval_loss, own, own_loss = self._evaluate(ctx, lora, hp["topics"])
        factors = {f"{self.lora_prefix}.{i}.self_attn.{m}": uv
                   for i, layer in enumerate(lora) for m, uv in layer.items()}
        members = {f"membership[{name}]": int(t in hp["topics"]) for t, name in enumerate(s.topics)}
        return Trained(
            factors=factors, rank=job.rank, alpha=alpha, peft={"task_type": "CAUSAL_LM"},
            targets={"quality": quality, "eval_loss": eval_loss, "own_quality": own, "own_loss": own_loss,
                     "log_size": math.log2(n), **members, "noise": "noisy" if hp["noise"] > 0 else "clean",
                     "format": hp["format"], "answer": hp["answer"]},
            hp={"lr": hp["lr"], "steps": steps, "batch": batch, "n_examples": n, "noise": hp["noise"],
                "topics": "+".join(s.topics[t] for t in hp["topics"]), "n_topics": k, "format": hp["format"],
                "answer": hp["answer"], "rank": job.rank, "alpha": alpha, "seed": s.seed,
                "first_loss": losses[0], "final_loss": losses[-1]},
        )

    @staticmethod
    def _batch(examples: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ids (B, T), flat indices of the positions predicting answer tokens, and those tokens."""
        T = max(len(ids) for ids, _ in examples)
        out = torch.zeros(len(examples), T, dtype=torch.long)
        gather, target = [], []
        for b, (ids, start) in enumerate(examples):
            out[b, :len(ids)] = torch.tensor(ids)
            gather += [b * T + j - 1 for j in range(start, len(ids))]
            target += ids[start:]
        return out, torch.tensor(gather), torch.tensor(target)

    def _evaluate(self, ctx: dict[str, Any], lora: Any, own: list[int]) -> tuple[float, float, float, float]:
        """(accuracy, held-out loss, the same two on own-topic questions) of the 4-way benchmark."""
        llama = ctx["llama"]
        Q = len(ctx["questions"])
        total = torch.zeros(Q, 4, dtype=torch.float64)
        count = torch.zeros(Q, 4, dtype=torch.float64)
        with torch.inference_mode():
            for b in ctx["bench"]:
                h = llama.hidden(b["ids"], lora, b["pos"], b["mask"])
                lp = llama.token_logprobs(h.reshape(-1, h.shape[-1])[b["gather"]], b["target"]).double()
                total.index_put_((b["qo"][:, 0], b["qo"][:, 1]), lp, accumulate=True)
                count.index_put_((b["qo"][:, 0], b["qo"][:, 1]), torch.ones_like(lp), accumulate=True)
        mean = torch.where(count > 0, total / count.clamp_min(1), -math.inf)  # a missing option never wins
        hit = (mean.argmax(1) == 0).double()
        nll = -mean[:, 0]
        topic = torch.tensor([q[2] for q in ctx["questions"]])
        mine = torch.isin(topic, torch.tensor(own if own else [-2]))
        if not mine.any():
            return float(hit.mean()), float(nll.mean()), float("nan"), float("nan")
        return float(hit.mean()), float(nll.mean()), float(hit[mine].mean()), float(nll[mine].mean())
