"""Pruning bases: which weights of one matrix go, and, for some, how the kept ones change.

* ``magnitude``: the smallest |W| of each matrix (Wanda's baseline); no data.
* ``wanda`` (Sun et al. 2023): per output row, the smallest |W_ij|·‖X_j‖₂, with ‖X_j‖ the norm of
  input feature j over the calibration tokens.
* ``sparsegpt`` (Frantar & Alistarh 2023): masks chosen per block of columns from w²/[H⁻¹]_jj,
  each pruned weight's error compensated in the row's remaining weights.

A base that needs calibration data names a per-module statistic fed with the module's inputs
(``add_batch``, as Wanda's and SparseGPT's wrappers do). Each declares itself
(``actpat.registry.base``); torch is imported when a base computes, not when this module is
imported, so that the workflow plans its runs from the declarations without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from actpat.errors import PruningError
from actpat.registry import base


class Base:
    """What the layer loop asks of a base: which weights it compares (``per_row``, or ``block``
    columns at a time, else the whole matrix), whether its prune step changes the kept weights,
    its per-module calibration statistic (None: needs no data) and its prune step. A base that
    changes the kept weights rounds them to ``precision`` (the dense checkpoint's dtype, set by the
    layer loop; None: the weights' own), so that the model pruned is the model its mask store holds
    and the layers after it are calibrated on that model."""

    per_row = False
    block: int | None = None
    changes_weights = False
    precision = None  # torch.dtype

    def expected_share(self, shape, ratio: float, nm) -> float:
        from actpat.masks import expected_share

        return expected_share(shape, ratio, nm, self.per_row, self.block)

    def statistic(self, module: nn.Module):
        return None


class InputNorms:
    """Σ over calibration tokens of x_j² per input feature of a module (float64)."""

    def __init__(self, module: nn.Module):
        import torch

        self.sums = torch.zeros(module.weight.shape[1], dtype=torch.float64, device=module.weight.device)

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self.sums += (x * x).sum(0)


def wanda_metric(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ from the per-input-feature sums of squares."""
    return weight.detach().abs().float() * sq_norm.float().sqrt().unsqueeze(0)


@base("magnitude", title="magnitude", calibrated=False)
class Magnitude(Base):
    """The smallest |W| of the whole matrix (N:M: of each block)."""

    def prune(self, weight: torch.Tensor, statistic, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        from actpat.masks import matrix_mask, nm_mask, zero_where

        metric = weight.detach().abs().float()
        mask = nm_mask(metric, *nm) if nm else matrix_mask(metric, ratio)
        zero_where(weight, mask)
        return mask


@base("wanda", title="Wanda", calibrated=True)
class Wanda(Base):
    """Per output row, the smallest |W_ij|·‖X_j‖₂ (N:M: of each block of a row)."""

    per_row = True

    def statistic(self, module: nn.Module) -> InputNorms:
        return InputNorms(module)

    def prune(self, weight: torch.Tensor, statistic: InputNorms, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        from actpat.masks import nm_mask, row_mask, zero_where

        metric = wanda_metric(weight, statistic.sums)
        mask = nm_mask(metric, *nm) if nm else row_mask(metric, ratio)
        zero_where(weight, mask)
        return mask


class InputGram:
    """XᵀX over the calibration tokens of a module's input (float64; SparseGPT's Hessian up to a
    constant factor, which neither its mask nor its update depends on). Modules that read the same
    input share one (``actpat.pruning``), and so its factorization (``factor``)."""

    def __init__(self, module: nn.Module):
        import torch

        cols = module.weight.shape[1]
        self.gram = torch.zeros(cols, cols, dtype=torch.float64, device=module.weight.device)
        self._factor = None

    def add_batch(self, x: torch.Tensor) -> None:
        if self._factor is not None:
            raise PruningError("calibration inputs added after the Gram matrix was factorized")
        x = x.reshape(-1, x.shape[-1]).double()
        self.gram.addmm_(x.T, x)

    def factor(self, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(the input features never active: zero diagonal, the upper Cholesky factor of
        (XᵀX + λI)⁻¹ with λ = ``damp`` × the mean diagonal, a dead feature's diagonal taken as 1):
        computed on the first call, for every module that reads this input; the Gram matrix itself
        is dropped then (only the factor is needed)."""
        import torch

        if self._factor is None:
            h = self.gram
            dead = torch.diagonal(h) == 0
            h[dead, dead] = 1.0
            h.diagonal().add_(damp * torch.diagonal(h).mean())
            u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
            self._factor, self.gram = (damp, dead, u), None
        elif self._factor[0] != damp:
            raise PruningError(f"one input's Gram matrix factorized with dampening {self._factor[0]} and {damp}")
        return self._factor[1], self._factor[2]


@dataclass(frozen=True)
class SparseGPTOptions:
    block: int  # columns whose mask is chosen together
    damp: float  # dampening of XᵀX: damp x its mean diagonal


@base("sparsegpt", title="SparseGPT", calibrated=True, settings=SparseGPTOptions, section="sparsegpt")
class SparseGPT(Base):
    """SparseGPT (Frantar & Alistarh 2023): columns are processed left to right; the weights to
    prune in each block of ``block`` columns are the smallest w²/[H⁻¹]_jj over the block (N:M: over
    each group of M columns of a row), with H⁻¹ the inverse Hessian of the columns not yet processed
    (read off the upper Cholesky factor of (XᵀX + λI)⁻¹, λ = ``damp`` × mean diag XᵀX); each pruned
    weight's error is compensated in the row's remaining weights by the optimal-brain-surgeon
    update. Input features never active on the calibration data (zero diagonal) have their weights
    zeroed, as in the authors' code. The kept weights change, so a pruned model is the dense
    checkpoint plus its mask plus these weights, rounded from float64 once to the checkpoint's
    dtype (the authors write them back into the model's half-precision tensors). Computed in
    float64."""

    changes_weights = True

    def __init__(self, block: int = 128, damp: float = 0.01, inner: int = 16):
        self.block, self.damp, self.inner = block, damp, inner

    def statistic(self, module: nn.Module) -> InputGram:
        return InputGram(module)

    def prune(self, weight: torch.Tensor, statistic: InputGram, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        import torch

        from actpat.masks import matrix_mask, nm_mask

        rows, cols = weight.shape
        if nm and (self.block % nm[1] or cols % nm[1]):
            raise PruningError(f"SparseGPT's N:M needs the block ({self.block}) and the input width ({cols}) to be multiples of M = {nm[1]}")
        w = weight.detach().double().clone()
        dead, u = statistic.factor(self.damp)
        w[:, dead] = 0.0
        mask = torch.zeros(rows, cols, dtype=torch.bool, device=weight.device)
        # Inside a block, `inner` columns at a time (N:M: one group of M, whose mask is chosen from the
        # weights as the columns before it left them). With the sub-block's mask known, one row's
        # errors e over its k columns solve the sequential update at once: e_c = m_c (v_c − Σ_{j<c}
        # e_j U_jc) / U_cc is e (I + U_strict · diag(m / d)) = v · diag(m / d), an upper unitriangular
        # system per row (batched). The block's later columns then take the sub-block's errors in one
        # product, as the later blocks take the block's. The same arithmetic as one column at a time,
        # in another order, with a handful of operations per sub-block instead of per column
        # (benchmarks/sparsegpt_cost.py). Masks are chosen in the weights' own layout (the same ties).
        k_max = nm[1] if nm else self.inner
        for c1 in range(0, cols, self.block):
            c2 = min(c1 + self.block, cols)
            u1 = u[c1:c2, c1:c2]
            d = torch.diagonal(u1)
            w1 = w[:, c1:c2]  # a view: updated in place
            err = torch.zeros_like(w1)
            m1 = mask[:, c1:c2]
            if not nm:
                m1.copy_(matrix_mask(w1 ** 2 / d ** 2, ratio))
            for s1 in range(0, c2 - c1, k_max):
                s2 = min(s1 + k_max, c2 - c1)
                v = w1[:, s1:s2]
                if nm:
                    m1[:, s1:s2] = nm_mask(v ** 2 / d[s1:s2] ** 2, *nm)
                a = m1[:, s1:s2] / d[s1:s2]  # rows × k: m / d
                strict = torch.triu(u1[s1:s2, s1:s2], diagonal=1)
                # unitriangular: the solver takes the unit diagonal as given and reads only above it
                e = torch.linalg.solve_triangular(strict * a[:, None, :], (v * a)[:, None, :], upper=True, left=False,
                                                  unitriangular=True)[:, 0, :]
                err[:, s1:s2] = e
                v -= e @ strict  # every column of the sub-block as the sequential update leaves it
                v.masked_fill_(m1[:, s1:s2], 0.0)
                w1[:, s2:] -= e @ u1[s1:s2, s2:]
            w[:, c2:] -= err @ u[c1:c2, c2:]
        weight.copy_(w.to(self.precision or weight.dtype))  # rounded once; the pruned weights are exact zeros in w
        return mask
