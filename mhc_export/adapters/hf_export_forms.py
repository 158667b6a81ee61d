"""Export forms of DeepSeek-V4's non-mHC modules: same math, no shape-dependent branches.

HF's forwards branch in Python on sequence-dependent sizes (``if
chunk_kv.shape[1] > 0``, ``if n_windows > 1``, ``min(index_topk, len)``,
``if kv.shape[2] > mask.shape[-1]``) and loop over the experts a batch hits.
torch.export turns each such branch into a guard on the dynamic ``seq`` dim
(or cannot trace it at all), so the graph would be valid for one sequence
range only. These forms compute the same values for every length with tensor
ops alone (empty windows simply give empty tensors), for the cache-free
forward that the exported graph runs (``use_cache=False``), with one spare,
always-masked compressed entry so that no tensor is ever empty (see
:func:`_windows`). They are bound
only while exporting (``adapt(model, export=True)``); tests check them
against HF's own forwards at lengths below, at and above every compress rate.
"""

from __future__ import annotations

import torch


def _no_cache(past_key_values) -> None:
    if past_key_values is not None:
        raise ValueError("the export form of DeepSeek-V4 runs without a KV cache "
                         "(use_cache=False)")


def _windows(x: torch.Tensor, rate: int) -> torch.Tensor:
    """[B, S, C] -> [B, S // rate + 1, rate, C]: the complete windows plus one spare.

    The spare window (the incomplete tail, padded by repeating the last token)
    keeps every tensor non-empty: ONNX Reshape cannot infer a -1 dim of a
    zero-size tensor, and HF's RoPE helper reshapes with -1, so a sequence
    shorter than the compress rate would fail in ONNX Runtime. Its entry is at
    index S // rate >= (t + 1) // rate for every query t, so the causal block
    bias gives it -inf (and the indexer never keeps it): softmax weight exactly
    0, the attention output bit-for-bit unchanged.
    """
    batch, seq, channels = x.shape
    n_windows = seq // rate + 1
    # index_select rather than a slice: a slice of symbolic length makes torch.export
    # guard on `rate * (seq // rate) <= seq`, which it cannot prove.
    kept = torch.arange(n_windows * rate, device=x.device).clamp_max(seq - 1)
    return x.index_select(1, kept).reshape(batch, n_windows, rate, channels)


def _overlapped(chunk: torch.Tensor, head_dim: int, fill: float) -> torch.Tensor:
    """CSA's two series: window w = [Ca of window w-1 | Cb of window w] over 2*rate slots.

    Window 0 has no predecessor without a cache: its Ca half is ``fill``
    (zero kv, -inf gate: softmax weight 0), exactly as HF leaves it.
    """
    ca, cb = chunk[..., :head_dim], chunk[..., head_dim:]
    first = torch.full_like(ca[:, :1], fill)
    previous = torch.cat([first, ca], dim=1)[:, : ca.shape[1]]
    return torch.cat([previous, cb], dim=2)


def _compress(module, chunk_kv: torch.Tensor, chunk_gate: torch.Tensor) -> torch.Tensor:
    """Softmax-gated window pooling, kv_norm, RoPE at each window's first position."""
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import apply_rotary_pos_emb

    batch, n_windows = chunk_kv.shape[:2]
    weights = chunk_gate.softmax(dim=2, dtype=torch.float32).to(chunk_kv.dtype)
    compressed = module.kv_norm((chunk_kv * weights).sum(dim=2))
    positions = torch.arange(n_windows, device=compressed.device) * module.compress_rate
    positions = positions.unsqueeze(0).expand(batch, -1)
    cos, sin = module.rotary_emb(compressed, position_ids=positions,
                                 layer_type=module.rope_layer_type)
    return apply_rotary_pos_emb(compressed.unsqueeze(1), cos, sin).squeeze(1)


def _compressed(module, hidden_states: torch.Tensor, *, overlap: bool) -> torch.Tensor:
    """The compressor's entries [B, W, C]: kv and position-biased gate windows, pooled.
    ``overlap`` (CSA and its indexer) gives each window the previous one's Ca half too."""
    chunk_kv = _windows(module.kv_proj(hidden_states), module.compress_rate)
    chunk_gate = _windows(module.gate_proj(hidden_states), module.compress_rate)
    chunk_gate = chunk_gate + module.position_bias
    if overlap:
        chunk_kv = _overlapped(chunk_kv, module.head_dim, 0.0)
        chunk_gate = _overlapped(chunk_gate, module.head_dim, float("-inf"))
    return _compress(module, chunk_kv, chunk_gate)


def _future(position_ids: torch.Tensor, rate: int, n_entries: int,
            device: torch.device) -> torch.Tensor:
    """[B, S, W] True where query t may not see compressed entry w (w >= (t+1) // rate)."""
    threshold = (position_ids + 1) // rate
    entries = torch.arange(n_entries, device=device)
    return entries.view(1, 1, -1) >= threshold.unsqueeze(-1)


def hca_compressor_forward(self, hidden_states, q_residual, position_ids, past_key_values,
                           layer_idx):
    """DeepseekV4HCACompressor.forward, cache-free and branch-free."""
    _no_cache(past_key_values)
    batch, seq_len, _ = hidden_states.shape
    compressed_kv = _compressed(self, hidden_states, overlap=False).unsqueeze(1)
    future = _future(position_ids, self.compress_rate, compressed_kv.shape[2],
                     compressed_kv.device)
    block_bias = compressed_kv.new_zeros((batch, 1, seq_len, compressed_kv.shape[2]))
    return compressed_kv, block_bias.masked_fill(future.unsqueeze(1), float("-inf"))


def indexer_forward(self, hidden_states, q_residual, position_ids, past_key_values, layer_idx):
    """DeepseekV4Indexer.forward, cache-free and branch-free: top-k indices, -1 = invalid."""
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import apply_rotary_pos_emb

    _no_cache(past_key_values)
    batch, seq_len, _ = hidden_states.shape
    compressed_kv = _compressed(self, hidden_states, overlap=True)
    cos_q, sin_q = self.rotary_emb(hidden_states, position_ids=position_ids,
                                   layer_type=self.rope_layer_type)
    q = self.q_b_proj(q_residual).view(batch, seq_len, -1, self.head_dim).transpose(1, 2)
    q = apply_rotary_pos_emb(q, cos_q, sin_q).transpose(1, 2)
    scores = self.scorer(q, compressed_kv, hidden_states)  # [B, S, W]
    n_entries = compressed_kv.shape[1]
    future = _future(position_ids, self.compress_rate, n_entries, scores.device)
    scores = scores.masked_fill(future, float("-inf"))
    # HF takes the top min(index_topk, W); padding the scores with index_topk -inf
    # columns keeps k constant (no guard on W) and picks the same valid entries: every
    # pick at or past W is marked invalid below, as HF marks picks of future entries.
    pad = scores.new_full((*scores.shape[:-1], self.index_topk), float("-inf"))
    indices = torch.cat([scores, pad], dim=-1).topk(self.index_topk, dim=-1).indices
    threshold = ((position_ids + 1) // self.compress_rate).unsqueeze(-1)
    return torch.where(indices >= threshold, torch.full_like(indices, -1), indices)


def csa_compressor_forward(self, hidden_states, q_residual, position_ids, past_key_values,
                           layer_idx):
    """DeepseekV4CSACompressor.forward, cache-free and branch-free."""
    _no_cache(past_key_values)
    batch, seq_len, _ = hidden_states.shape
    compressed_kv = _compressed(self, hidden_states, overlap=True).unsqueeze(1)
    top_k_indices = self.indexer(hidden_states, q_residual, position_ids, None, layer_idx)
    n_entries = compressed_kv.shape[2]
    valid = top_k_indices >= 0
    safe = torch.where(valid, top_k_indices, torch.full_like(top_k_indices, n_entries))
    block_bias = compressed_kv.new_full((batch, 1, seq_len, n_entries + 1), float("-inf"))
    block_bias = block_bias.scatter(-1, safe.unsqueeze(1), 0.0)
    return compressed_kv, block_bias[..., :n_entries]


def attention_forward(self, hidden_states, position_embeddings, position_ids, attention_mask,
                      past_key_values=None, **kwargs):
    """DeepseekV4Attention.forward, cache-free: the compressor's block bias always joins the mask.

    HF appends it only ``if kv.shape[2] > attention_mask.shape[-1]``, i.e. when
    the compressor produced entries; appending an empty bias is the same.
    """
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import (
        apply_rotary_pos_emb,
        eager_attention_forward,
    )

    _no_cache(past_key_values)
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    cos, sin = position_embeddings[self.rope_layer_type]
    q_residual = self.q_a_norm(self.q_a_proj(hidden_states))
    q = self.q_b_norm(self.q_b_proj(q_residual).view(*hidden_shape).transpose(1, 2))
    q = apply_rotary_pos_emb(q, cos, sin)
    kv = self.kv_norm(self.kv_proj(hidden_states)).view(*hidden_shape).transpose(1, 2)
    kv = apply_rotary_pos_emb(kv, cos, sin)
    if self.compressor is not None:
        compressed_kv, block_bias = self.compressor(hidden_states, q_residual, position_ids,
                                                    None, self.layer_idx)
        kv = torch.cat([kv, compressed_kv], dim=2)
        if isinstance(attention_mask, torch.Tensor):
            attention_mask = torch.cat([attention_mask, block_bias.to(attention_mask.dtype)],
                                       dim=-1)
    attn_output, attn_weights = eager_attention_forward(
        self, q, kv, kv, attention_mask, dropout=0.0, scaling=self.scaling,
        sliding_window=self.sliding_window, s_aux=self.sinks,
    )
    attn_output = apply_rotary_pos_emb(attn_output.transpose(1, 2), cos, -sin).transpose(1, 2)
    grouped = attn_output.reshape(*input_shape, self.config.o_groups, -1)
    return self.o_b_proj(self.o_a_proj(grouped).flatten(2)), attn_weights


def dense_experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                          top_k_weights: torch.Tensor) -> torch.Tensor:
    """DeepseekV4Experts.forward without data-dependent control flow.

    Every expert runs on every token (two batched matmuls over all experts) and
    the outputs are summed in expert order, each weighted by the token's routing
    weight for that expert (0 where not routed). HF's loop adds the same
    products in the same order, so with distinct experts per token the sum is
    the same up to the matmuls' blocking. Cost: num_experts / top_k times the
    routed expert FLOPs and an [E, T, d] intermediate; a serving engine runs a
    grouped GEMM over the routed tokens instead (docs/HF.md).
    """
    num_experts = self.gate_up_proj.shape[0]
    gate_up = torch.matmul(hidden_states.unsqueeze(0), self.gate_up_proj.transpose(1, 2))
    routed = torch.matmul(self._apply_gate(gate_up), self.down_proj.transpose(1, 2))  # [E, T, d]
    hit = top_k_index.unsqueeze(-1) == torch.arange(num_experts, device=top_k_index.device)
    weights = torch.where(hit, top_k_weights.unsqueeze(-1), 0).sum(dim=1)  # [T, E]
    final = torch.zeros_like(hidden_states)
    for e in range(num_experts):
        final = final + (routed[e] * weights[:, e, None]).to(final.dtype)
    return final


def sqrt_softplus_forward(self, x: torch.Tensor) -> torch.Tensor:
    """sqrt(softplus(x)) with the softplus in float32: ONNX Softplus has no bf16 type.

    Bit-identical to HF's bf16 computation: torch evaluates an elementwise bf16 op in
    float32 and rounds the result once, which is what the cast back does here.
    """
    return torch.nn.functional.softplus(x.float()).to(x.dtype).sqrt()


def forms() -> dict[type, tuple[str, object]]:
    """HF class -> (name, export-form forward)."""
    from transformers.activations import SqrtSoftplusActivation
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

    return {
        SqrtSoftplusActivation: ("sqrt_softplus", sqrt_softplus_forward),
        m.DeepseekV4Attention: ("attention", attention_forward),
        m.DeepseekV4HCACompressor: ("hca_compressor", hca_compressor_forward),
        m.DeepseekV4CSACompressor: ("csa_compressor", csa_compressor_forward),
        m.DeepseekV4Indexer: ("indexer", indexer_forward),
        m.DeepseekV4Experts: ("dense_experts", dense_experts_forward),
    }

