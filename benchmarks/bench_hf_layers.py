#!/usr/bin/env python3
"""HF DeepSeek-V4 layers on the GPU: HF eager vs HF + our mhc ops vs HF torch.compile.

    python benchmarks/bench_hf_layers.py [--json OUT.json] [--layers 2] [--budget-s 60]

Random weights, bf16, n=4, a few decoder layers at d=4096 (V4-Flash widths)
and d=7168 (V4-Pro widths), 8 routed experts, HF's eager expert loop. Shapes:
decode (batch 1 and 8, one token) and prefill (batch 1, 4096 tokens), all
``use_cache=False`` forwards of the model. For each: median time of HF eager,
HF adapted onto the mhc ops (our CUDA kernels through torch.library when the
kernel library loads), HF under torch.compile; and the mHC share: the median
time of the model's mHC alone (every HyperConnection, residual update and the
head on the same shapes) in HF's eager form and on our ops, over the model time.
Shapes past ``--budget-s`` are skipped (named in the output).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mhc_export.adapters.hf_deepseek_v4 import adapted
from mhc_export.adapters.hf_testing import make_config, random_model
from mhc_export.reference.ops import kernel_backend
from mhc_export.testing.bench import median_seconds, write_json

WIDTHS = {
    4096: dict(hidden_size=4096, num_attention_heads=64, head_dim=512, q_lora_rank=1024,
               o_groups=8, o_lora_rank=1024, moe_intermediate_size=2048),
    7168: dict(hidden_size=7168, num_attention_heads=128, head_dim=512, q_lora_rank=1536,
               o_groups=16, o_lora_rank=1024, moe_intermediate_size=3072),
}
SHAPES = [("decode b1", 1, 1), ("decode b8", 8, 1), ("prefill 4096", 1, 4096)]


def config(d: int, layers: int):
    types = ["compressed_sparse_attention", "heavily_compressed_attention"] * layers
    return make_config(
        vocab_size=4096, num_hidden_layers=layers, num_key_value_heads=1,
        num_experts_per_tok=6, n_routed_experts=8, n_shared_experts=1, index_n_heads=64,
        index_head_dim=128, index_topk=512, sliding_window=128,
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        layer_types=types[:layers], mlp_layer_types=["hash_moe"] + ["moe"] * (layers - 1),
        hc_mult=4, max_position_embeddings=8192, **WIDTHS[d],
    )


def timed(fn, reps: int) -> float:
    """Median milliseconds over ``reps`` CUDA-event-timed calls after 2 warm-ups."""
    return median_seconds(fn, reps) * 1e3


def mhc_only(model, tokens: int, ours: bool, reps: int) -> float:
    """The model's mHC alone: 2 pre + 2 post per layer and the head, on [tokens, n, d]."""
    cfg = model.config
    n, d = cfg.hc_mult, cfg.hidden_size
    streams = torch.randn(1, tokens, n, d, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, tokens, d, device="cuda", dtype=torch.bfloat16)
    layers = model.model.layers

    def run():
        h = streams
        for layer in layers:
            for hc in (layer.attn_hc, layer.ffn_hc):
                post, comb, _ = hc(h)
                if ours:
                    h = torch.ops.mhc.post(x.view(tokens, d), h.view(tokens, n, d),
                                           post.view(tokens, n),
                                           comb.view(tokens, n, n)).view(1, tokens, n, d)
                else:
                    h = post.to(h.dtype).unsqueeze(-1) * x.unsqueeze(-2) + torch.matmul(
                        comb.to(h.dtype).transpose(-1, -2), h)
        return model.model.hc_head(h)

    with torch.no_grad():
        if ours:
            with adapted(model):
                return timed(run, reps)
        return timed(run, reps)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--widths", default="4096,7168")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=60.0)
    p.add_argument("--compile", default="4096:decode b1",
                   help="comma-separated D:SHAPE cases timed under torch.compile too (each "
                        "compiles afresh, ~30-60 s); 'none' for none (default: 4096:decode b1)")
    args = p.parse_args()
    start = time.perf_counter()
    dev = torch.cuda.get_device_name()
    rows, skipped = [], []
    print(f"device {dev} | torch {torch.__version__} | mhc ops on CUDA: {kernel_backend()} | "
          f"{args.layers} layers, bf16, n=4, 8 experts", flush=True)
    for d in (int(w) for w in args.widths.split(",")):
        model = random_model(config(d, args.layers), dtype=torch.bfloat16).cuda()
        compiled = torch.compile(model)
        for name, b, s in SHAPES:
            if time.perf_counter() - start > args.budget_s:
                skipped.append(f"d={d} {name}")
                continue
            ids = torch.randint(0, 4096, (b, s), device="cuda")
            reps = args.reps if s == 1 else max(3, args.reps // 3)
            with torch.no_grad():
                eager = timed(lambda m=model, i=ids: m(i, use_cache=False), reps)
                with adapted(model):
                    ours = timed(lambda m=model, i=ids: m(i, use_cache=False), reps)
                comp = None
                if f"{d}:{name}" in args.compile.split(","):
                    try:
                        comp = timed(lambda c=compiled, i=ids: c(i, use_cache=False), reps)
                    except Exception as e:  # record, do not hide
                        comp = f"failed: {type(e).__name__}: {str(e)[:120]}"
                mhc_hf = mhc_only(model, b * s, False, reps)
                mhc_ours = mhc_only(model, b * s, True, reps)
            row = dict(d=d, shape=name, batch=b, seq=s, hf_eager_ms=eager, hf_ours_ms=ours,
                       hf_compile_ms=comp, mhc_hf_ms=mhc_hf, mhc_ours_ms=mhc_ours,
                       mhc_share_hf=mhc_hf / eager, mhc_share_ours=mhc_ours / ours)
            rows.append(row)
            c = f"{comp:9.3f}" if isinstance(comp, float) else f"{comp or 'not run':>9}"
            print(f"d={d:5d} {name:13s} eager {eager:9.3f} ms | ours {ours:9.3f} ms "
                  f"({eager / ours:4.2f}x) | compile {c} ms | mHC {mhc_hf:7.3f} -> "
                  f"{mhc_ours:7.3f} ms (share {mhc_hf / eager:5.1%} -> {mhc_ours / ours:5.1%})",
                  flush=True)
        model = compiled = None
        torch.cuda.empty_cache()
    if skipped:
        print(f"skipped (past --budget-s {args.budget_s:g}): {', '.join(skipped)}")
    if args.json:
        write_json(args.json, dict(device=dev, torch=torch.__version__, backend=kernel_backend(),
                                   layers=args.layers, rows=rows, skipped=skipped), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
