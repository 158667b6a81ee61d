"""The reference model: the DeepSeek-V4 or V4.1 block structure around the mHC ops.

V4 (``family="V4"``):
```
h = embed(tokens); X = repeat h over n streams            # [T, n, d]
per layer, per sublayer (attention, ffn):
    y, post, comb = MhcPre(X); X = MhcPost(sub(norm(y)), X, post, comb)
logits = lm_head(final_norm(MhcHead(X)))
```
V4.1 (``family="V4.1"``, delayed pre; no head mix weights):
```
h = embed(tokens); X = repeat h over n streams; p = one-hot(0)
per layer, per sublayer (attention, ffn):
    p_next, post, comb = MhcMix(X); y = MhcCollapse(X, p)   # the PREVIOUS site's pre
    X = MhcPost(sub(norm(y)), X, post, comb); p = p_next
logits = lm_head(final_norm(MhcCollapse(X, p)))
```
Site 1's collapse is skipped (y = h): the streams are n copies of h and p is one-hot,
so MhcCollapse(X, e_0) = h (the spec's "Site 1 may skip its collapse").

``mode="fused"`` routes the mHC math through the ``mhc::*`` custom ops (one
ONNX node each on export); ``mode="decomposed"`` uses the plain reference
functions (standard ONNX ops on export). Both compute the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..core import checks
from ..core.preflight import check_streams
from ..core.spec import FAMILIES, MHC_HEAD, MHC_PRE, V41_FLASH, num_mixes, parse_dtype
from . import eager as reference
from . import ops

MODES = ("fused", "decomposed")
_PRE_ATTRS = tuple(MHC_PRE.defaults())


@dataclass(frozen=True)
class ModelConfig:
    name: str
    vocab_size: int
    hidden: int  # d
    streams: int  # n
    layers: int
    heads: int
    ffn_hidden: int
    norm_eps: float = 1e-6
    rms_eps: float = float(MHC_PRE.defaults()["rms_eps"])
    pre_eps: float = float(MHC_PRE.defaults()["pre_eps"])
    sinkhorn_eps: float = float(MHC_PRE.defaults()["sinkhorn_eps"])
    post_mult: float = float(MHC_PRE.defaults()["post_mult"])
    sinkhorn_iters: int = int(MHC_PRE.defaults()["sinkhorn_iters"])
    head_eps: float = float(MHC_HEAD.defaults()["eps"])
    family: str = "V4"  # "V4.1": delayed pre, no head mix (FAMILIES)
    # V4.1: layers whose attention site first rewrites the whole stream (Engram, in
    # V4.1-Flash on layers 1 and 14); those boundaries stay unfused.
    engram_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"config {self.name}: family must be one of {FAMILIES}, "
                             f"got {self.family!r}")
        object.__setattr__(self, "engram_layers", tuple(self.engram_layers))  # JSON: lists
        if self.engram_layers and self.family != "V4.1":
            raise ValueError(f"config {self.name}: engram_layers are a V4.1 feature")
        bad = [i for i in self.engram_layers if not 0 <= i < self.layers]
        if bad:
            raise ValueError(f"config {self.name}: engram_layers {bad} outside "
                             f"0..{self.layers - 1}")
        for field_name in ("vocab_size", "hidden", "streams", "layers", "heads", "ffn_hidden"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"config {self.name}: {field_name} must be >= 1")
        check_streams(self.streams, f"config {self.name}: streams")
        if self.hidden % self.heads:
            raise ValueError(
                f"config {self.name}: hidden={self.hidden} is not divisible by heads={self.heads}"
            )
        checks.check_attributes(
            rms_eps=self.rms_eps, pre_eps=self.pre_eps, sinkhorn_eps=self.sinkhorn_eps,
            post_mult=self.post_mult, sinkhorn_iters=self.sinkhorn_iters, head_eps=self.head_eps,
        )

    def to_dict(self) -> dict:
        """JSON-shaped (engram_layers as a list), as the metadata and checkpoints hold it."""
        return {**asdict(self), "engram_layers": list(self.engram_layers)}


_V41_EPS = {"rms_eps": V41_FLASH["rms_eps"], "norm_eps": V41_FLASH["rms_eps"]}

CONFIGS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        ModelConfig("tiny", vocab_size=128, hidden=64, streams=4, layers=2, heads=4,
                    ffn_hidden=128),
        ModelConfig("small", vocab_size=1024, hidden=256, streams=4, layers=4, heads=4,
                    ffn_hidden=704),
        # One V4-Pro-sized layer (d=7168, n=4) for benchmarks; dense FFN of
        # V4's expert width stands in for the MoE.
        ModelConfig("v4-pro-layer", vocab_size=1024, hidden=7168, streams=4, layers=1,
                    heads=56, ffn_hidden=2048),
        # V4.1 (delayed pre) with V4.1-Flash's rms_norm_eps = 1e-20 as both the mixes'
        # rms_eps and the norms' eps, as an exporter of the real model writes them.
        ModelConfig("tiny-v41", vocab_size=128, hidden=64, streams=4, layers=2, heads=4,
                    ffn_hidden=128, family="V4.1", **_V41_EPS),
        # Engram on layer 1, as V4.1-Flash (layers 1 and 14): one boundary stays plain.
        ModelConfig("small-v41", vocab_size=1024, hidden=256, streams=4, layers=4, heads=4,
                    ffn_hidden=704, family="V4.1", engram_layers=(1,), **_V41_EPS),
        # One V4.1-Flash-sized layer (d=5120, n=4) for benchmarks; dense FFN as above.
        ModelConfig("v41-flash-layer", vocab_size=1024, hidden=V41_FLASH["hidden"],
                    streams=V41_FLASH["streams"], layers=1, heads=40, ffn_hidden=2048,
                    family="V4.1", **_V41_EPS),
    )
}


def get_config(name: str, **overrides: object) -> ModelConfig:
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(CONFIGS)}") from None
    return replace(cfg, **overrides) if overrides else cfg


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head self-attention over [B, S, d]; softmax in float32."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(d // self.heads)
        causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        attn = torch.softmax(scores, dim=-1).to(v.dtype)
        return self.out((attn @ v).transpose(1, 2).reshape(b, s, d))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, ffn_hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * ffn_hidden, bias=False)
        self.down = nn.Linear(ffn_hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MhcWeights(nn.Module):
    """hc_fn [rows, n*d], hc_scale [scales], hc_base [rows]; always float32."""

    def __init__(self, rows: int, cols: int, scales: int) -> None:
        super().__init__()
        self.hc_fn = nn.Parameter(torch.empty(rows, cols, dtype=torch.float32))
        self.hc_scale = nn.Parameter(torch.empty(scales, dtype=torch.float32))
        self.hc_base = nn.Parameter(torch.empty(rows, dtype=torch.float32))


class Engram(nn.Module):
    """Stand-in for V4.1's Engram: a learned rewrite of every stream (X + X W), enough to
    put a non-mhc reader and writer of the stream between a post and the next site."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


class Sublayer(nn.Module):
    """norm -> attention or FFN, wrapped by MhcPre / MhcPost."""

    def __init__(self, cfg: ModelConfig, kind: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = kind
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.body: nn.Module = (
            Attention(cfg.hidden, cfg.heads) if kind == "attention"
            else SwiGLU(cfg.hidden, cfg.ffn_hidden)
        )
        self.mhc = MhcWeights(num_mixes(cfg.streams), cfg.streams * cfg.hidden, 3)

    def forward(self, x: torch.Tensor, batch: int, mode: str, probe: list | None = None
                ) -> torch.Tensor:
        cfg, w = self.cfg, self.mhc
        attrs = (cfg.rms_eps, cfg.pre_eps, cfg.sinkhorn_eps, cfg.post_mult, cfg.sinkhorn_iters)
        if mode == "fused":
            y, post, comb = ops.pre(x, w.hc_fn, w.hc_scale, w.hc_base, *attrs)
        else:
            y, post, comb = reference.mhc_pre(
                x, w.hc_fn, w.hc_scale, w.hc_base, rms_eps=cfg.rms_eps, pre_eps=cfg.pre_eps,
                sinkhorn_eps=cfg.sinkhorn_eps, post_mult=cfg.post_mult,
                sinkhorn_iters=cfg.sinkhorn_iters,
            )
        if probe is not None:
            probe.append((x, y, post, comb))
        return self._post(self._body(y, batch), x, post, comb, mode)

    def forward_v41(self, x: torch.Tensor, pre: torch.Tensor | None, batch: int, mode: str,
                    probe: list | None = None, y: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """V4.1 site: mixes from X, the sublayer input collapsed with the PREVIOUS site's
        ``pre`` (or ``y`` given: site 1's skipped collapse); returns (X', own pre)."""
        cfg, w = self.cfg, self.mhc
        attrs = (cfg.rms_eps, cfg.pre_eps, cfg.sinkhorn_eps, cfg.post_mult, cfg.sinkhorn_iters)
        if mode == "fused":
            next_pre, post, comb = ops.mix(x, w.hc_fn, w.hc_scale, w.hc_base, *attrs)
            y = ops.collapse(x, pre) if y is None else y
        else:
            next_pre, post, comb = reference.mhc_mix(
                x, w.hc_fn, w.hc_scale, w.hc_base, **dict(zip(_PRE_ATTRS, attrs, strict=True)))
            y = reference.mhc_collapse(x, pre) if y is None else y
        if probe is not None:
            probe.append((next_pre, post, comb))
        return self._post(self._body(y, batch), x, post, comb, mode), next_pre

    def _body(self, y: torch.Tensor, batch: int) -> torch.Tensor:
        h = self.norm(y)
        if self.kind == "attention":
            return self.body(h.view(batch, -1, self.cfg.hidden)).reshape(-1, self.cfg.hidden)
        return self.body(h)

    @staticmethod
    def _post(h: torch.Tensor, x: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
              mode: str) -> torch.Tensor:
        if mode == "fused":
            return ops.post(h, x, post, comb)
        return reference.mhc_post(h, x, post, comb)


class MhcModel(nn.Module):
    """Token ids [B, S] -> logits [B, S, vocab] with an n-stream mHC residual."""

    def __init__(self, cfg: ModelConfig, mode: str = "fused") -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        self.cfg = cfg
        self.mode = mode
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.sublayers = nn.ModuleList(
            Sublayer(cfg, kind) for _ in range(cfg.layers) for kind in ("attention", "ffn")
        )
        # V4.1 has no head mix: the streams end in a collapse with the carried pre.
        self.head_mhc = (MhcWeights(cfg.streams, cfg.streams * cfg.hidden, 1)
                         if cfg.family == "V4" else None)
        self.engrams = nn.ModuleDict({str(i): Engram(cfg.hidden) for i in cfg.engram_layers})
        self.final_norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        # Validation sets this to a list to collect every MhcPre's (residual,
        # layer_input, post_mix, comb_mix); export never does.
        self.probe: list | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [batch, seq], got {list(tokens.shape)}")
        cfg = self.cfg
        batch = tokens.shape[0]
        h = self.embed(tokens).reshape(-1, cfg.hidden)
        x = h.unsqueeze(1).expand(-1, cfg.streams, -1).contiguous()
        y = self._v41_streams(x, h, batch) if cfg.family == "V4.1" else self._v4_streams(x, batch)
        logits = self.lm_head(self.final_norm(y))
        return logits.view(batch, -1, cfg.vocab_size)

    def _v4_streams(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        cfg = self.cfg
        for sub in self.sublayers:
            x = sub(x, batch, self.mode, self.probe)
        w = self.head_mhc
        if self.mode == "fused":
            return ops.head(x, w.hc_fn, w.hc_scale, w.hc_base, cfg.rms_eps, cfg.head_eps)
        return reference.mhc_head(x, w.hc_fn, w.hc_scale, w.hc_base, rms_eps=cfg.rms_eps,
                                  eps=cfg.head_eps)

    def _v41_streams(self, x: torch.Tensor, h: torch.Tensor, batch: int) -> torch.Tensor:
        # Site 1 collapses n copies of h with the one-hot seed: that is h itself, unless
        # an engram rewrites the stream first (then the one-hot is a real input).
        pre, y = None, h
        if "0" in self.engrams:
            pre = torch.zeros_like(x[:, :, 0], dtype=torch.float32)
            pre[:, 0] = 1.0
            y = None
        for i, sub in enumerate(self.sublayers):
            if i % 2 == 0 and str(i // 2) in self.engrams:  # attention site of layer i // 2
                x = self.engrams[str(i // 2)](x)
            x, pre = sub.forward_v41(x, pre, batch, self.mode, self.probe, y)
            y = None
        if self.mode == "fused":
            return ops.collapse(x, pre)
        return reference.mhc_collapse(x, pre)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype


def init_mhc_weights(w: MhcWeights, streams: int, gen: torch.Generator) -> None:
    """Gates that vary per token: mixes ~ N(0, 1) for unit-RMS inputs; comb biased to identity."""
    rows, cols = w.hc_fn.shape
    with torch.no_grad():
        w.hc_fn.copy_(torch.randn(rows, cols, generator=gen) / math.sqrt(cols))
        w.hc_scale.copy_(0.5 + torch.rand(w.hc_scale.shape, generator=gen))
        base = 0.5 * torch.randn(rows, generator=gen)
        if rows == num_mixes(streams):
            base[2 * streams :] += torch.eye(streams).flatten()
        w.hc_base.copy_(base)


def build_model(
    config: str | ModelConfig = "small",
    *,
    dtype: str | torch.dtype = torch.float32,
    mode: str = "fused",
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> MhcModel:
    """A deterministically initialised model: same config and seed give the same weights."""
    cfg = get_config(config) if isinstance(config, str) else config
    dtype = parse_dtype(dtype)
    gen = torch.Generator().manual_seed(seed)
    model = MhcModel(cfg, mode=mode)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif ".mhc." in f".{name}" or name.startswith("head_mhc"):
                continue
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        for sub in model.sublayers:
            init_mhc_weights(sub.mhc, cfg.streams, gen)
        if model.head_mhc is not None:
            init_mhc_weights(model.head_mhc, cfg.streams, gen)
    return cast_model(model, dtype).to(device).eval()


def cast_model(model: MhcModel, dtype: torch.dtype) -> MhcModel:
    """Cast everything but the mHC weights, which the contract keeps in float32."""
    for module in model.modules():
        if isinstance(module, MhcWeights):
            continue
        for name, p in module.named_parameters(recurse=False):
            p.data = p.data.to(dtype)
            setattr(module, name, p)
    return model


def random_tokens(cfg: ModelConfig, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=gen)
