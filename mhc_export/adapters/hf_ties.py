"""Index ties in DeepSeek-V4's lightning indexer, found in the HF eager reference run.

The indexer keeps the top-k compressed entries per query by score. With few
indexer heads, ReLU zeros make scores tie exactly; when the k-th and (k+1)-th
scores of a row are equal, which entry is kept is implementation-defined, and
torch and ONNX Runtime may keep different ones. Validation records every such
row so a mismatch there is reported as what it is (docs/HF.md).
"""

from __future__ import annotations

from typing import Any

import torch


class IndexTies:
    """Context manager: hooks every indexer of ``graph`` and counts tied top-k rows."""

    def __init__(self, graph: torch.nn.Module) -> None:
        self.graph = graph
        self.rows: dict[int, list[int]] = {}  # layer -> [tied rows, rows, top_k]
        self._hooks: list[Any] = []

    def __enter__(self) -> IndexTies:
        from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4Indexer

        for module in self.graph.modules():
            if isinstance(module, DeepseekV4Indexer):
                seen: dict[str, torch.Tensor] = {}
                self._hooks.append(module.scorer.register_forward_hook(
                    lambda _m, _a, out, seen=seen: seen.__setitem__("scores", out)))
                self._hooks.append(module.register_forward_hook(
                    lambda m, a, kw, _o, seen=seen: self._count(m, a, kw, seen["scores"]),
                    with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any],
               scores: torch.Tensor) -> None:
        def arg(i: int, name: str) -> Any:
            return args[i] if len(args) > i else kwargs.get(name)

        position_ids, layer = arg(2, "position_ids"), int(arg(4, "layer_idx"))
        tied, rows, k = count_ties(scores, position_ids, module.compress_rate, module.index_topk)
        have = self.rows.setdefault(layer, [0, 0, k])
        have[0] += tied
        have[1] += rows

    @property
    def found(self) -> bool:
        return any(tied for tied, _, _ in self.rows.values())

    def summary(self) -> str:
        return "; ".join(f"layer {layer}: {tied} of {rows} query rows tie at the k-th score "
                         f"(top_k {k})" for layer, (tied, rows, k) in sorted(self.rows.items())
                         if tied)


def count_ties(scores: torch.Tensor, position_ids: torch.Tensor, compress_rate: int,
               index_topk: int) -> tuple[int, int, int]:
    """(rows whose k-th and (k+1)-th visible scores are equal, rows, k) of [B, S, T] scores.

    Entries a query cannot see yet (the indexer's causal mask) do not count.
    """
    entries = scores.shape[-1]
    rows = scores.shape[0] * scores.shape[1]
    k = min(index_topk, entries)
    if entries == 0 or k == entries:
        return 0, rows, k
    visible = torch.arange(entries, device=scores.device).view(1, 1, -1) < (
        (position_ids + 1) // compress_rate).unsqueeze(-1)
    s = scores.detach().float().masked_fill(~visible, float("-inf"))
    top = s.topk(k + 1, dim=-1).values
    choice = visible.sum(-1) > k  # a row chooses among its visible entries
    tied = choice & (top[..., k - 1] == top[..., k])
    return int(tied.sum()), rows, k
