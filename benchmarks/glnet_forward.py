"""Benchmark 2: GL-net forward, batched over shape groups (lolctl.nn) against a straightforward per-module loop of
the same network with identical weights, over the shapes of the paper's timing figure; plus each baseline's
preprocessing time and where MLP+Dense stops fitting in memory.

Shapes: the GPT-3 family (Brown et al. 2020, Table 2.1), 125M → 13B, one d × d LoRA module per layer, r = 4,
512 inputs (adapters) per forward, float32, no autograd. GL-net: h = 32, 2 equivariant layers, head 128 × 2.
Before timing, the two implementations are run in float64 on the first ``--check`` inputs and their outputs are
asserted equal (float64 keeps the sign gates away from rounding ties; in float32 a gate can flip on a value that
rounds differently, so the float32 difference is reported, not asserted).

Full run (≈ 3 min):   python -m benchmarks.glnet_forward
Reduced (tests):      python -m benchmarks.glnet_forward --sizes tiny:2:16,small:3:24 --batch 8 --repeat 1
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
from typing import Any

from benchmarks.common import gib, header, log, machine_info, markdown_table, mem_total_bytes, seconds, timed

# name: (layers, d_model) — GPT-3 paper, Table 2.1
GPT3 = {
    "125M": (12, 768),
    "350M": (24, 1024),
    "760M": (24, 1536),
    "1.3B": (24, 2048),
    "2.7B": (32, 2560),
    "6.7B": (32, 4096),
    "13B": (40, 5140),
}
COMMAND = "python -m benchmarks.glnet_forward"
DENSE_SAMPLE_BYTES = 2**30  # memory for the ΔW's formed while timing MLP+Dense's preprocessing


def make_loop_reference(net: Any) -> Any:
    """The same GL-net written the straightforward way: a Python loop over modules, plain matmuls per module.

    Weights are copied out of ``net`` (the batched model stores them stacked per shape group / per slot)."""
    import torch
    from torch import nn

    def gate(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = U @ V.sum(-2).unsqueeze(-1)  # (B, h, 1): row sums of U Vᵀ
        right = V @ U.sum(-2).unsqueeze(-1)  # (B, h, 1): column sums of U Vᵀ
        return U * (left > 0).to(U.dtype), V * (right > 0).to(V.dtype)

    class LoopGLNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            spec = net.spec
            L = len(spec)
            self.slots = [i for g in spec.groups for i in g.indices]  # module index at each slot position
            in_U: list[torch.Tensor] = [torch.empty(0)] * L
            in_V: list[torch.Tensor] = [torch.empty(0)] * L
            for k, g in enumerate(spec.groups):
                for j, i in enumerate(g.indices):
                    in_U[i] = net.in_U[k][j].detach().clone()
                    in_V[i] = net.in_V[k][j].detach().clone()
            self.in_U = nn.ParameterList([nn.Parameter(w) for w in in_U])
            self.in_V = nn.ParameterList([nn.Parameter(w) for w in in_V])
            # hidden layers: the batched model indexes them by slot position
            pos = {i: p for p, i in enumerate(self.slots)}
            self.hid_U = nn.ModuleList(
                nn.ParameterList([nn.Parameter(W[pos[i]].detach().clone()) for i in range(L)]) for W in net.hid_U
            )
            self.hid_V = nn.ModuleList(
                nn.ParameterList([nn.Parameter(W[pos[i]].detach().clone()) for i in range(L)]) for W in net.hid_V
            )
            self.register_buffer("input_scale", net.input_scale.detach().clone())
            self.head = copy.deepcopy(net.head)
            self.outputs = copy.deepcopy(net.outputs)

        def forward(self, factors: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
            feats = []
            for i in self.slots:
                U, V = factors[i]  # (B, n, R), (B, m, R)
                s = self.input_scale[i].sqrt()
                U, V = gate(self.in_U[i] @ (U / s), self.in_V[i] @ (V / s))  # (B, h, R) each
                for WU, WV in zip(self.hid_U, self.hid_V):
                    U, V = gate(WU[i] @ U, WV[i] @ V)
                feats.append((U @ V.transpose(-1, -2)).flatten(1))  # (B, h*h)
            x = self.head(torch.cat(feats, dim=1))
            return {name: layer(x) for name, layer in self.outputs.items()}

    return LoopGLNet().eval()


def make_layout_sketch(net: Any, batch: Any) -> tuple[Any, Any]:
    """NOT lolctl and no longer timed: the fix as first sketched (docs/performance.md §2), now what GLNet does; kept
    because tests/test_benchmarks.py checks it against the model (remove both together). With ``net``'s weights.
    Factors laid out (L_g, n, B·R) once when the batch is built, the per-module scale folded into the first-layer
    weights, so the first layer is one bmm per shape group with no input-sized temporary. Returns (laid-out
    factors, forward function)."""
    import torch

    from lolctl.nn.glnet import gl_gate

    B, R = batch.size, batch.max_rank
    laid = [(g.U.permute(1, 2, 0, 3).reshape(len(g.indices), -1, B * R),
             g.V.permute(1, 2, 0, 3).reshape(len(g.indices), -1, B * R)) for g in batch.groups]

    def forward(laid: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        root = net.input_scale.sqrt()
        Us, Vs = [], []
        for k, g in enumerate(net.spec.groups):
            s = root[list(g.indices)].view(-1, 1, 1)
            Us.append(torch.bmm(net.in_U[k] / s, laid[k][0]))  # (L_g, h, B·R)
            Vs.append(torch.bmm(net.in_V[k] / s, laid[k][1]))
        L, h = len(net.spec), net.config.hidden
        U = torch.cat(Us).view(L, h, B, R).permute(2, 0, 1, 3)  # (B, L, h, R): small from here on
        V = torch.cat(Vs).view(L, h, B, R).permute(2, 0, 1, 3)
        U, V = gl_gate(U, V)
        for WU, WV in zip(net.hid_U, net.hid_V):
            U, V = gl_gate(torch.einsum("lij,bljr->blir", WU, U), torch.einsum("lij,bljr->blir", WV, V))
        x = net.head(torch.einsum("blir,bljr->blij", U, V).reshape(B, -1))
        return {name: layer(x) for name, layer in net.outputs.items()}

    return laid, forward


def make_batch(L: int, d: int, B: int, r: int, seed: int = 0) -> Any:
    """B random adapters with L modules of shape d × d, rank r (factors scaled like trained LoRAs)."""
    import torch

    from lolctl.nn import InputSpec, LoraBatch, ModuleSpec
    from lolctl.nn.batch import GroupFactors, laid_out

    spec = InputSpec(tuple(ModuleSpec(f"h.{i}.attn.c_attn", d, d) for i in range(L)))
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(B, L, d, r, generator=gen) * 1e-2
    V = torch.randn(B, L, d, r, generator=gen) / d**0.5
    ranks = torch.full((B, L), r, dtype=torch.long)
    # stored (L, d, B, r) like every LoraBatch constructor does (laid_out frees the (B, L, d, r) originals on return)
    return LoraBatch(spec, (GroupFactors(tuple(range(L)), laid_out(U), laid_out(V)),), ranks)


def build(name: str, spec: Any, **config: Any) -> Any:
    from lolctl.nn import TaskSpec, build_model

    tasks = (TaskSpec("quality", "regression", ("quality",)),)
    return build_model(name, config, spec, tasks).eval()


def check_equal(net: Any, batch: Any, k: int) -> float:
    """Assert the batched and loop implementations agree in float64 on the first k inputs; return max |Δ|."""
    import torch

    net64 = copy.deepcopy(net).double()
    loop64 = make_loop_reference(net64).double()
    sub = batch.select(list(range(min(k, batch.size)))).to(dtype=torch.float64)
    with torch.no_grad():
        a, b = net64(sub), loop64(sub.factors())
    worst = 0.0
    for task in a:
        torch.testing.assert_close(a[task], b[task], rtol=1e-10, atol=1e-12)
        worst = max(worst, float((a[task] - b[task]).abs().max()))
    return worst


def preprocessing(batch: Any, repeat: int) -> dict[str, Any]:
    """Per-baseline feature computation on the whole batch (head not included); MLP+Dense sampled (see below)."""
    import torch

    from lolctl.errors import LolctlError

    spec, B = batch.spec, batch.size
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, cfg in (("mlp", {"rank": 4}), ("mlp_svd", {"max_rank": 4}), ("mlp_oalign", {"rank": 4})):
            model = build(name, spec, head_layers=0, **cfg)
            if name == "mlp_oalign":
                model.prepare(batch.select(list(range(min(8, B)))))  # template: fitted once at training time
            timing, _ = timed(lambda model=model: model.features(batch), repeat)
            out[name] = timing.median
            del model
            gc.collect()
        # MLP+Dense: form ΔW for k inputs (one module at a time, bounded memory) and extrapolate to B inputs
        nm_max = max(mod.n * mod.m for mod in spec.modules)
        k = max(1, min(B, DENSE_SAMPLE_BYTES // (4 * nm_max)))
        sub = batch.select(list(range(k)))

        def form() -> None:
            for g in sub.groups:
                for j in range(len(g.indices)):
                    torch.einsum("bnr,bmr->bnm", g.U[:, j], g.V[:, j])  # what MLPDense.features does per module

        timing, _ = timed(form, repeat)
        out["mlp_dense"] = timing.median * B / k
        out["dense_sampled"] = k
    d_in = sum(mod.n * mod.m for mod in spec.modules)
    out["dense_input_bytes"] = B * d_in * 4
    out["dense_layer_bytes"] = d_in * 128 * 4  # first Linear(d_in, 128) in float32
    try:  # the library's own check (weights, grads, 2 AdamW moments against memory_budget_mb)
        build("mlp_dense", spec)
        out["dense_refused"] = "no"
    except LolctlError as err:
        out["dense_refused"] = f"refuses ({err.code})"
    gc.collect()
    return out


def bench_size(name: str, L: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    log(f"{name}: {L} modules of {d}x{d}, {args.batch} inputs ...")
    batch = make_batch(L, d, args.batch, args.rank)
    # data_init=False: the first layer's initialisation does not change the forward's cost, and fitting it (two
    # d x d eigendecompositions per module) would dominate the run at 13B shapes
    net = build("glnet", batch.spec, hidden=args.hidden, layers=args.layers, data_init=False)
    net.prepare(batch.select(list(range(min(16, batch.size)))))  # realistic per-module input scales
    loop = make_loop_reference(net)
    worst64 = check_equal(net, batch, args.check)
    with torch.no_grad():
        t_batched, out_b = timed(lambda: net(batch), args.repeat, warmup=1)
        # the loop gets each module's factors contiguous, its best layout (built outside the timing, like the batch)
        factors = [(U.contiguous(), V.contiguous()) for U, V in batch.factors()]
        t_loop, out_l = timed(lambda f=factors: loop(f), args.repeat, warmup=1)
        del factors  # freed before the preprocessing below
    worst32 = max(float((out_b[t] - out_l[t]).abs().max()) for t in out_b)
    scale32 = max(float(out_b[t].abs().max()) for t in out_b)
    pre = preprocessing(batch, args.repeat)
    row = {
        "name": name, "L": L, "d": d, "batched": t_batched.median, "loop": t_loop.median,
        "worst64": worst64, "worst32": worst32, "scale32": scale32,
        "input_bytes": sum(g.U.nbytes + g.V.nbytes for g in batch.groups), **pre,
    }
    return row


def report(args: argparse.Namespace, rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    ram = mem_total_bytes()
    fwd = [
        [r["name"], r["L"], r["d"], gib(r["input_bytes"]), seconds(r["batched"]), seconds(r["loop"]),
         f"{r['loop'] / r['batched']:.2f}x", "yes" if r["loop"] / r["batched"] >= 2 else "MISSED",
         f"{r['worst64']:.1e}", f"{r['worst32']:.1e} (of {r['scale32']:.2g})"]
        for r in rows
    ]
    pre = [
        [r["name"], "0 (none)", seconds(r["mlp"]), seconds(r["mlp_svd"]), seconds(r["mlp_oalign"]),
         f"{seconds(r['mlp_dense'])} (from {r['dense_sampled']})", gib(r["dense_input_bytes"]),
         gib(r["dense_layer_bytes"]),
         "yes" if r["dense_input_bytes"] + r["dense_layer_bytes"] <= ram else "NO",
         "yes" if r["dense_input_bytes"] + 4 * r["dense_layer_bytes"] <= ram else "NO", r["dense_refused"]]
        for r in rows
    ]
    no_fit = next((r["name"] for r in rows if r["dense_input_bytes"] + r["dense_layer_bytes"] > ram), None)
    return "\n".join([
        header("GL-net forward: batched vs per-module loop", COMMAND, info),
        f"{args.batch} inputs per forward, r = {args.rank}, one d × d module per layer, float32, no autograd; "
        f"GL-net hidden {args.hidden}, {args.layers} equivariant layers. Median of {args.repeat} runs after a "
        f"warm-up. Outputs asserted equal in float64 on the first {args.check} inputs. Inputs built before timing: "
        "the LoraBatch (stored (L, n, B, R)), and for the loop each module's (B, n, R) factors, contiguous.\n",
        markdown_table(
            ["model", "modules", "d", "input (U, V)", "batched", "loop", "speedup", "≥ 2x", "max |Δ| f64",
             "max |Δ| f32"],
            fwd,
        ),
        "",
        f"Preprocessing of {args.batch} inputs per baseline (feature computation before the MLP; median of "
        f"{args.repeat}). MLP+Dense forms ΔW for a sample of inputs (count in brackets), one module at a time, and "
        f"is EXTRAPOLATED to {args.batch}. Dense memory: the {args.batch} ΔW inputs in float32 and a first "
        f"Linear(Σ n·m, 128); 'fits' compares with this machine's RAM ({gib(ram)}); training also needs grads and "
        "2 AdamW moments (4x the layer).\n",
        markdown_table(
            ["model", "GL-net", "MLP (flatten)", "MLP+SVD (QR)", "MLP+O-Align (Procrustes)", "MLP+Dense (form ΔW)",
             "dense inputs", "dense 1st layer", "fits (inference)", "fits (training)", "lolctl mlp_dense"],
            pre,
        ),
        "",
        f"MLP+Dense stops fitting in {gib(ram)} of RAM at: {no_fit or 'none of these sizes'} "
        f"({args.batch} inputs, inference).",
    ])


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    """'125M,1.3B' (GPT-3 names) or 'name:layers:d' items."""
    out = []
    for item in text.split(","):
        if item in GPT3:
            out.append((item, *GPT3[item]))
        else:
            name, L, d = item.split(":")
            out.append((name, int(L), int(d)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default=",".join(GPT3), help="GPT-3 sizes, or name:layers:d items")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--check", type=int, default=8, help="inputs compared in float64")
    args = p.parse_args(argv)
    info = machine_info()
    rows = []
    for name, L, d in parse_sizes(args.sizes):
        rows.append(bench_size(name, L, d, args))
        gc.collect()  # the previous size's tensors are gone before the next is allocated
    print(report(args, rows, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
