"""The gauge space of Sinkhorn logits and its orthogonal complement.

Adding r 1^T + 1 c^T to the logits rescales rows and columns of exp(logits), which
the converged Sinkhorn projection undoes, so G = {r 1^T + 1 c^T} (dimension 2n - 1)
is invisible in the limit. Its complement G^perp is the set of n x n matrices with
zero row and column sums, and the projector onto it is double centring
Z -> H Z H with H = I - 11^T / n. That closed form replaces the QR of a spanning
set: it is exact, and U (x) U with U an orthonormal basis of 1^perp is an
orthonormal basis of G^perp, of dimension (n - 1)^2.
"""

from __future__ import annotations

import torch

__all__ = ["centering_basis", "gauge_perp_basis", "project_gauge_perp"]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the gauge complement needs an int number of streams n >= 2, got {n}")


def centering_basis(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal basis U [n, n-1] of the vectors with zero sum (so U U^T = I - 11^T/n)."""
    _check_n(n)
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    # H is a projector of rank n-1: its eigenvectors with eigenvalue 1 span 1^perp.
    _, vecs = torch.linalg.eigh(h)
    return vecs[:, 1:].to(dtype)


def gauge_perp_basis(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal basis [n*n, (n-1)^2] of G^perp for row-major flattened n x n matrices."""
    u = centering_basis(n, torch.float64)
    return torch.kron(u, u).to(dtype)


def project_gauge_perp(z: torch.Tensor) -> torch.Tensor:
    """The component of [..., n, n] logits (or logit updates) outside the gauge space."""
    if z.dim() < 2 or z.shape[-1] != z.shape[-2]:
        raise ValueError(f"expected [..., n, n] matrices, got shape {list(z.shape)}")
    _check_n(z.shape[-1])
    return (
        z
        - z.mean(dim=-1, keepdim=True)
        - z.mean(dim=-2, keepdim=True)
        + z.mean(dim=(-2, -1), keepdim=True)
    )
