"""The FlashInfer benchmark peer's CPU-side logic (benchmarks/peers/flashinfer_mhc.py).

Its timing runs on the GPU machine (`scripts/gpu_stream.sh peer`); here: the
loader says why it cannot run, the correctness gate refuses wrong outputs, and the
projection handed to FlashInfer is the raw hc_fn @ x and sum of squares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peers import flashinfer_mhc


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_load_without_a_gpu_says_why():
    mod, why = flashinfer_mhc.load()
    assert mod is None and why == "no CUDA GPU"


def test_gate_accepts_rounding_and_refuses_wrong_outputs():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(8, 64, generator=g)
    mixes = torch.rand(8, 4, generator=g)
    got = (ref.bfloat16(), mixes + 1e-7)
    errs = flashinfer_mhc.gate(got, (ref, mixes))
    assert 0 < errs[0] < 1e-2 and errs[1] < 1e-4
    with pytest.raises(AssertionError, match="output 1"):
        flashinfer_mhc.gate((ref.bfloat16(), mixes * 1.01), (ref, mixes))
    nan = mixes.clone()
    nan[3, 2] = float("nan")
    with pytest.raises(AssertionError, match="output 0"):
        flashinfer_mhc.gate((nan,), (mixes,))


def test_projection_is_the_raw_dot_and_sum_of_squares():
    g = torch.Generator().manual_seed(2)
    t, n, d = 3, 4, 16
    residual = torch.randn(t, n, d, generator=g).bfloat16()
    hc_fn = torch.randn(24, n * d, generator=g)
    dot, sq = flashinfer_mhc.projection(residual, hc_fn)
    x = residual.double().reshape(t, n * d)
    assert dot.shape == (t, 24) and sq.shape == (t,)
    assert torch.allclose(dot.double(), x @ hc_fn.double().t(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(sq.double(), (x * x).sum(-1), rtol=1e-6)
