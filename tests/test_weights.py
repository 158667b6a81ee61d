"""Seed 000 and MaxText (seed 002) weight layouts map onto the spec's weights.

Each seed's forward math is transcribed here from the seed document, in plain
torch, and compared with the project's reference driven by the loaded weights.
"""

from __future__ import annotations

import pytest
import torch

from mhc_export.reference.weights import from_maxtext, from_seed000, variant_post, variant_pre


def seed000_forward(X, W_pre, W_res, W_post, S_pre, S_res, S_post, a_pre, a_res, a_post, F_out,
                    t_max=20, eps=1e-6):
    """Seed 000's mHCLayer (float32, fallback path) pre_block + post_block."""
    T, n, d = X.shape
    K = n * d
    x = X.reshape(T, K).float()
    W = torch.cat([W_pre, W_res, W_post], 0)
    proj = (x @ W.T) * torch.sqrt(K / (x.pow(2).sum(-1) + eps)).unsqueeze(-1)
    A = torch.sigmoid(a_pre * proj[:, :n] + S_pre)
    B = torch.exp(a_res * proj[:, n : n + n * n] + S_res.flatten()).reshape(T, n, n)
    for _ in range(t_max):
        B = B / (B.sum(-1, keepdim=True) + eps)
        B = B / (B.sum(-2, keepdim=True) + eps)
    C = 2 * torch.sigmoid(a_post * proj[:, n + n * n :] + S_post.flatten())
    x_in = torch.bmm(A.unsqueeze(1), X).squeeze(1)
    X_next = torch.bmm(B, X) + C.unsqueeze(-1) * F_out.unsqueeze(1)
    return x_in, C, B, X_next


def test_seed000_loader_reproduces_seed000():
    g = torch.Generator().manual_seed(0)
    T, n, d = 6, 4, 32
    K = n * d
    W_pre, W_res, W_post = (torch.randn(r, K, generator=g) / K**0.5 for r in (n, n * n, n))
    S_pre, S_res, S_post = (torch.randn(*s, generator=g) for s in ((1, n), (n, n), (n, 1)))
    alphas = (0.7, 1.3, 0.4)
    X = torch.randn(T, n, d, generator=g)
    F_out = torch.randn(T, d, generator=g)
    x_in, C, B, X_next = seed000_forward(X, W_pre, W_res, W_post, S_pre, S_res, S_post,
                                         *alphas, F_out)
    w = from_seed000(W_pre, W_res, W_post, S_pre, S_res, S_post, *alphas)
    layer_input, post, comb = variant_pre(X, w)
    torch.testing.assert_close(layer_input, x_in, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(post, C, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(comb, B, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(variant_post(F_out, X, post, comb, w.variant), X_next,
                               rtol=1e-5, atol=1e-5)


def maxtext_forward(x, p, iters=20, norm_eps=1e-6):
    """Seed 002's ManifoldConstrainedHyperConnections.__call__ (mhc part), in torch."""
    b, s, k, d = x.shape
    flat = x.reshape(b, s, k * d)
    norm = flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + norm_eps) * p["mhc_norm.scale"]
    pre = torch.sigmoid(p["pre_alpha_scale"] * (norm @ p["pre_alpha"]) + p["pre_beta"])
    post = 2.0 * torch.sigmoid(p["post_alpha_scale"] * (norm @ p["post_alpha"]) + p["post_beta"])
    h = (norm @ p["res_alpha"]).reshape(b, s, k, k) * p["res_alpha_scale"] + p["res_beta"]
    t = torch.softmax(h, dim=-2)
    for _ in range(iters):
        t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
        t = t / t.sum(-2, keepdim=True).clamp_min(1e-12)
    layer_input = torch.einsum("bskd,bsk->bsd", x, pre)
    return layer_input, post, t


def test_maxtext_loader_reproduces_maxtext():
    g = torch.Generator().manual_seed(1)
    b, s, n, d = 2, 3, 4, 16
    K = n * d
    p = {
        "mhc_norm/scale": 1 + 0.1 * torch.randn(K, generator=g),
        "pre_alpha": torch.randn(K, n, generator=g) / K**0.5,
        "post_alpha": torch.randn(K, n, generator=g) / K**0.5,
        "res_alpha": torch.randn(K, n * n, generator=g) / K**0.5,
        "pre_beta": torch.randn(n, generator=g),
        "post_beta": torch.randn(n, generator=g),
        "res_beta": torch.randn(n, n, generator=g),
        "pre_alpha_scale": torch.tensor([0.9]),
        "post_alpha_scale": torch.tensor([1.1]),
        "res_alpha_scale": torch.tensor([0.8]),
    }
    x = torch.randn(b, s, n, d, generator=g)
    li, post, comb = maxtext_forward(x, {k.replace("/", "."): v for k, v in p.items()})
    w = from_maxtext(p)
    got = variant_pre(x.reshape(b * s, n, d), w)
    torch.testing.assert_close(got[0], li.reshape(b * s, d), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], post.reshape(b * s, n), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], comb.reshape(b * s, n, n), rtol=1e-5, atol=1e-6)


def test_loaders_reject_bad_layouts():
    with pytest.raises(ValueError, match=r"W_res must have shape \[16, 8\]"):
        from_seed000(torch.zeros(4, 8), torch.zeros(15, 8), torch.zeros(4, 8), torch.zeros(1, 4),
                     torch.zeros(4, 4), torch.zeros(4, 1), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"MaxText parameters missing: \['mhc_norm.scale'"):
        from_maxtext({"pre_alpha": torch.zeros(8, 2)})
