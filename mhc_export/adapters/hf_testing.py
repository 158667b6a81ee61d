"""Random DeepSeek-V4 checkpoints for tests and measurements (no download).

HF's init makes the mHC trivial (base 0, scale 1, fn ~ N(0, 0.02): Sinkhorn
starts from a near-uniform matrix) and the hash table all zeros; these
helpers perturb every mHC parameter so the gates and comb do real work, give
the attention sinks and compressor position biases real values, and give the
hash router distinct experts per token, as a trained checkpoint has.
"""

from __future__ import annotations

import os
from typing import Any

import torch

TINY: dict[str, Any] = dict(
    vocab_size=97, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=1, head_dim=32, q_lora_rank=24,
    num_experts_per_tok=2, n_routed_experts=4, n_shared_experts=1, o_groups=2, o_lora_rank=16,
    # 8 indexer heads: with fewer, ReLU zeros make index scores tie exactly, and which tied
    # entry a top-k keeps is implementation-defined (torch and ONNX Runtime differ).
    index_n_heads=8, index_head_dim=16, index_topk=3, sliding_window=8,
    layer_types=["sliding_attention", "compressed_sparse_attention",
                 "heavily_compressed_attention"],
    mlp_layer_types=["hash_moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
    hc_mult=4, hc_sinkhorn_iters=20, max_position_embeddings=512,
)

# DeepSeek-V4-Flash widths (hidden 4096, 64 heads of 512, q/o LoRA 1024, 8 output groups,
# indexer 64 x 128 top-512), with 8 routed experts instead of 256 so a layer fits on a laptop.
FLASH_SLICE: dict[str, Any] = dict(
    vocab_size=129280, hidden_size=4096, moe_intermediate_size=2048, num_hidden_layers=2,
    num_attention_heads=64, num_key_value_heads=1, head_dim=512, q_lora_rank=1024,
    num_experts_per_tok=6, n_routed_experts=8, n_shared_experts=1, o_groups=8,
    o_lora_rank=1024, index_n_heads=64, index_head_dim=128, index_topk=512,
    sliding_window=128, layer_types=["compressed_sparse_attention",
                                     "heavily_compressed_attention"],
    mlp_layer_types=["hash_moe", "moe"], hc_mult=4, hc_sinkhorn_iters=20,
)


def make_config(**overrides: Any):
    from transformers import DeepseekV4Config

    return DeepseekV4Config(**{**TINY, **overrides})


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the mHC, sinks, position biases and hash table non-trivial values."""
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

    g = torch.Generator().manual_seed(seed)

    def fill(p: torch.Tensor, fn) -> None:
        p.copy_(fn(p.shape).to(p.dtype))

    for module in model.modules():
        if isinstance(module, m.DeepseekV4HyperConnection):
            fill(module.fn, lambda s: torch.randn(s, generator=g) * 0.5 / s[1] ** 0.5 * 8)
            fill(module.base, lambda s: torch.randn(s, generator=g))
            fill(module.scale, lambda s: 0.5 + 1.5 * torch.rand(s, generator=g))
        elif isinstance(module, m.DeepseekV4HyperHead):
            fill(module.hc_fn, lambda s: torch.randn(s, generator=g) * 0.5 / s[1] ** 0.5 * 8)
            fill(module.hc_base, lambda s: torch.randn(s, generator=g))
            fill(module.hc_scale, lambda s: 0.5 + 1.5 * torch.rand(s, generator=g))
        elif isinstance(module, m.DeepseekV4Attention):
            fill(module.sinks, lambda s: torch.randn(s, generator=g))
        elif isinstance(module, m.DeepseekV4HashRouter):
            e, k = module.num_experts, module.top_k
            table = torch.stack([torch.randperm(e, generator=g)[:k]
                                 for _ in range(module.tid2eid.shape[0])])
            module.tid2eid.copy_(table)
        if hasattr(module, "position_bias") and isinstance(module.position_bias, torch.Tensor):
            fill(module.position_bias, lambda s: torch.randn(s, generator=g) * 0.5)
    return model


def random_model(config=None, *, seed: int = 0, dtype: torch.dtype = torch.float32):
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(seed)
    config = config or make_config()
    config._experts_implementation = "eager"
    model = DeepseekV4ForCausalLM._from_config(config, dtype=dtype)
    return randomize(model.eval(), seed)


def save_random_checkpoint(path: str | os.PathLike[str], config=None, *, seed: int = 0,
                           dtype: torch.dtype = torch.float32,
                           max_shard_size: str | None = None):
    model = random_model(config, seed=seed, dtype=dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return model


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@torch.no_grad()
def bf16_errors(model: torch.nn.Module, ids: torch.Tensor) -> tuple[float, float, float]:
    """A float32 ``model`` cast to bf16 and run adapted (our ops) and as HF runs it:
    (ours vs HF's bf16, HF's bf16 vs float32, ours vs float32), as max_rel."""
    import copy

    from .hf_deepseek_v4 import adapted  # late, like transformers above: a light import

    ref32 = model(ids, use_cache=False).logits
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    hf16 = m16(ids, use_cache=False).logits
    with adapted(m16):
        ours16 = m16(ids, use_cache=False).logits
    return max_rel(ours16, hf16), max_rel(hf16, ref32), max_rel(ours16, ref32)
