"""Pruning of the scored weight matrices (validations 1 and 2).

A method (``actpat.methods``) is a *base* and an *allocation*:

* bases (``BASES``), how the weights of one matrix are chosen: ``magnitude`` (the smallest |W| of
  each matrix, as in Wanda's baseline) and ``wanda`` (per output row, the smallest |W_ij|·‖X_j‖₂, with
  ‖X_j‖ the norm of input feature j over the calibration tokens; Sun et al. 2023). A base that needs
  calibration data names a per-module statistic fed with the module's inputs (``add_batch``, as
  Wanda's and SparseGPT's wrappers do) and may change the kept weights in its prune step:
  ``sparsegpt`` (Frantar & Alistarh 2023) does, from each matrix's XᵀX.
* allocations (``ALLOCATIONS``), how the target sparsity is spread over layers: ``uniform``, the
  paper's formula from a domain's activation density (``density-abs``: the absolute threshold γ;
  ``density-rel``: scale-free, above a multiple of the model-mean score), OWL's (Yin et al.
  2024) from the share of outlier Wanda scores of each layer, AlphaPruning's (``alpha``; Lu et
  al. 2024) from the heavy-tailed spectra of the weights (no data), and DLP's (``dlp``; Chen et al.
  2025) from the median Wanda score of each layer.

``structure`` is ``unstructured`` or N:M (N of every M consecutive input weights of a row are
zeroed; the sparsity is then N/M). Calibration runs layer by layer: the inputs of the current layer
for all windows are the only activations held, and each layer's calibration input is the output of
the already pruned previous layer (as in Wanda).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from actpat.errors import PruningError
from actpat.methods import METHODS, PruningMethod
from actpat.decoder import WeightLayout, find_decoder_layers, layer_weights


# ----------------------------------------------------------------------------------------------
# Layer-wise sparsities


@dataclass
class LayerRatios:
    """Per-layer sparsities with their mean exactly ``target``; ``clipped`` lists the layers whose
    raw value fell outside ``bounds`` (their value was clipped and the rest shifted to keep the mean)."""

    ratios: np.ndarray
    target: float
    raw: np.ndarray
    clipped: list[int] = field(default_factory=list)
    shift: float = 0.0


def clip_to_mean(raw: np.ndarray, target: float, bounds: tuple[float, float]) -> LayerRatios:
    """Clip ``raw`` into ``bounds`` and shift all unclipped values by one constant so that the
    mean is ``target`` again (bisection on the shift; the clipped mean is monotone in it)."""
    lo, hi = bounds
    if not lo <= target <= hi:
        raise PruningError(f"target sparsity {target} is outside the allowed per-layer range [{lo}, {hi}]")
    raw = np.asarray(raw, dtype=np.float64)
    outside = [int(i) for i in np.flatnonzero((raw < lo) | (raw > hi))]
    if not outside:
        return LayerRatios(raw.copy(), target, raw)
    a, b = lo - raw.max() - 1.0, hi - raw.min() + 1.0
    for _ in range(200):
        c = (a + b) / 2
        if np.clip(raw + c, lo, hi).mean() < target:
            a = c
        else:
            b = c
    c = (a + b) / 2
    ratios = np.clip(raw + c, lo, hi)
    free = (ratios > lo) & (ratios < hi)
    if free.any():  # remove the bisection's last rounding error from the unclipped layers
        ratios[free] -= (ratios.sum() - target * len(ratios)) / free.sum()
    return LayerRatios(ratios, target, raw, outside, float(c))


def density_ratios(
    counts: np.ndarray, target: float, alpha: float = 2.0, beta: float = 0.2, bounds: tuple[float, float] = (0.0, 0.99)
) -> LayerRatios:
    """The paper's layer-wise sparsities from the activated-weight count N_i of each layer:

    N'_i = sigmoid((N_i − mean N) / std N + α / i),  S_i = S + β·S·(1 − L·N'_i / Σ_j N'_j),

    i = 1..L, population standard deviation (a constant profile gives z = 0). The mean of S_i is S
    by construction; values outside ``bounds`` are clipped with the mean restored."""
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or len(n) < 1:
        raise PruningError("density counts must be one value per layer")
    std = n.std()
    z = (n - n.mean()) / std if std > 0 else np.zeros_like(n)
    i = np.arange(1, len(n) + 1)
    n_prime = 1.0 / (1.0 + np.exp(-(z + alpha / i)))
    raw = target + beta * target * (1.0 - len(n) * n_prime / n_prime.sum())
    return clip_to_mean(raw, target, bounds)


def owl_ratios(outlier_share: np.ndarray, target: float, lam: float = 0.08, bounds: tuple[float, float] = (0.0, 0.99)) -> LayerRatios:
    """OWL: layers with more outliers keep more weights. The outlier shares are rescaled to
    [0, 2λ], centred, and subtracted from the target, so S_i ∈ [S − λ, S + λ] with mean S."""
    d = np.asarray(outlier_share, dtype=np.float64)
    span = d.max() - d.min()
    scaled = (d - d.min()) / span * 2 * lam if span > 0 else np.zeros_like(d)
    raw = target - (scaled - scaled.mean())
    return clip_to_mean(raw, target, bounds)


def dlp_importance(unimportance: np.ndarray) -> np.ndarray:
    """DLP's relative importance distribution: I^l = 1 − S^l / Σ_i S^i (all ones when every S is 0)."""
    s = np.asarray(unimportance, dtype=np.float64)
    if s.ndim != 1 or len(s) < 1 or not np.isfinite(s).all() or (s < 0).any():
        raise PruningError("DLP: the layer un-importances must be one finite, non-negative value per layer")
    total = s.sum()
    return 1.0 - s / total if total > 0 else np.ones_like(s)


def dlp_ratios(unimportance: np.ndarray, target: float, alpha: float = 0.15,
               bounds: tuple[float, float] = (0.0, 0.99)) -> LayerRatios:
    """DLP (Chen et al., ICML 2025, arXiv 2505.23807, the method section's equations): from each
    layer's un-importance S^l (the median of its Wanda scores, ``_dlp``), the relative importance
    I^l = 1 − S^l / Σ_i S^i; min-max scaled onto [0, 2α], d_l = (I_l − I_min) / (I_max − I_min) · 2α;
    and the layer sparsity R_l = p + mean(d) − d_l. A more important layer (smaller median score)
    is pruned less; the mean is p and max − min is 2α; values outside ``bounds`` are clipped with
    the mean restored.

    Where this knowingly differs or the paper is loose:

    * the stated range of every R_l, [p − α, p + α], holds only when mean(d) = α. What the formula
      guarantees is the spread max − min = 2α, so a layer can reach p − 2α or p + 2α (d = (0, 0, 0,
      2α) gives p − 1.5α); it is implemented as written, not forced into [p − α, p + α] (OWL's
      mapping, ``owl_ratios``, behaves the same);
    * I is affine in S, so after the min-max scaling only S's ordering and relative gaps matter: the
      normalisation by Σ S, and any common factor of S, change nothing (hence the paper's ablation
      finds the layer sum and the layer mean of the scores identical);
    * all layers equal (I_max = I_min, or every S zero) leave d undefined (0/0): uniform here;
    * the authors' code floors a layer's sparsity at 0.01 and has no upper limit; here every
      allocation keeps ``bounds`` (actpat's ``pruning.ratios.bounds``)."""
    importance = dlp_importance(unimportance)
    span = importance.max() - importance.min()
    d = (importance - importance.min()) / span * 2 * alpha if span > 0 else np.zeros_like(importance)
    raw = target + d.mean() - d
    return clip_to_mean(raw, target, bounds)


def esd(weight: torch.Tensor) -> np.ndarray:
    """The empirical spectral density's eigenvalues of a weight matrix: the squared singular
    values, ascending, in float64 -- computed as the eigenvalues of the smaller of WᵀW and WWᵀ in
    float64 (rounding below zero clipped): 2.5x faster than the float32 SVD the AlphaPruning
    authors take, and exact to 1e-14 instead of 5e-6 (benchmarks/sparsegpt_cost.py)."""
    w = weight.detach().double()
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return np.sort(torch.linalg.eigvalsh(gram).clamp_min(0.0).cpu().numpy())


def hill_alpha(eigs: np.ndarray, xmin: str = "peak", bins: int = 100) -> float:
    """AlphaPruning's PL_Alpha_Hill (Lu et al. 2024): the Hill estimate of the power-law exponent
    of the ESD's tail, α = 1 + n / Σ_{λ ≥ λ_min} ln(λ / λ_min) over the n eigenvalues in the tail.
    ``xmin="mid"`` takes λ_min at the median eigenvalue; ``"peak"`` (the paper's fix-finger rule)
    tries every λ_min within [0.95, 1.5] × the left edge of the fullest of ``bins`` log-spaced
    histogram bins and keeps the one whose fitted tail is closest to the data (Kolmogorov-Smirnov
    distance). The authors' code compares λ with log10(0.95 x) for the lower end, which leaves it
    practically open; here both ends are eigenvalues. Exact zero eigenvalues are left out."""
    lam = np.sort(np.asarray(eigs, dtype=np.float64))
    lam = lam[lam > 0]
    if len(lam) < 3:
        return float("nan")
    logs = np.log(lam)
    tail_sums = np.cumsum(logs[::-1])[::-1]  # Σ_{j ≥ i} ln λ_j

    def fit(i: int) -> tuple[float, float]:
        n = len(lam) - i
        alpha = 1.0 + n / (tail_sums[i] - n * logs[i])
        if not np.isfinite(alpha) or alpha <= 1:
            return alpha, np.inf
        model = 1.0 - (lam[i:] / lam[i]) ** (1.0 - alpha)
        return alpha, float(np.abs(model - np.arange(n) / n).max())

    if xmin == "mid":
        return float(fit(len(lam) // 2)[0])
    if xmin != "peak":
        raise PruningError(f"unknown λ_min rule {xmin!r}; use 'peak' or 'mid'")
    edges = np.linspace(np.log10(lam[0]), np.log10(lam[-1]), bins + 1)
    counts, _ = np.histogram(np.log10(lam), bins=edges)
    peak = 10 ** edges[int(np.argmax(counts))]
    candidates = [i for i in range(len(lam) - 1) if 0.95 * peak <= lam[i] <= 1.5 * peak] or list(range(len(lam) - 1))
    fits = [fit(i) for i in candidates]
    return float(min(fits, key=lambda f: f[1])[0])


def alpha_ratios(metric: np.ndarray, target: float, epsilon: float = 0.2, bounds: tuple[float, float] = (0.0, 0.99)) -> LayerRatios:
    """AlphaPruning's allocation: a layer's heavy-tail metric (the sum of its matrices' α; a larger
    α means a less well-trained layer) is mapped linearly onto [1 − ε, 1 + ε], and the result is
    scaled so that the mean is ``target`` (every layer holds the same number of weights); values
    outside ``bounds`` are clipped with the mean restored."""
    m = np.asarray(metric, dtype=np.float64)
    if not np.isfinite(m).all():
        raise PruningError("AlphaPruning: a layer's heavy-tail metric is undefined (a matrix with fewer than 3 non-zero singular values)")
    span = m.max() - m.min()
    raw = ((m - m.min()) / span * 2 * epsilon + 1 - epsilon) if span > 0 else np.ones_like(m)
    raw = raw * target / raw.mean()
    return clip_to_mean(raw, target, bounds)


# ----------------------------------------------------------------------------------------------
# Masks (True = prune)


def parse_structure(structure: str) -> tuple[int, int] | None:
    """``unstructured`` → None; ``"2:4"`` or ``"2of4"`` → (2, 4)."""
    if structure == "unstructured":
        return None
    for sep in (":", "of"):
        if sep in structure:
            n, m = structure.split(sep)
            n, m = int(n), int(m)
            if not 0 < n < m:
                raise PruningError(f"N:M structure {structure!r} needs 0 < N < M")
            return n, m
    raise PruningError(f"unknown structure {structure!r}; use 'unstructured' or N:M such as '2:4'")


def nm_mask(metric: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the ``n`` smallest of every ``m`` consecutive entries of each row."""
    rows, cols = metric.shape
    if cols % m:
        raise PruningError(f"N:M pruning needs the input width {cols} to be a multiple of M = {m}")
    blocks = metric.reshape(rows, cols // m, m)
    idx = torch.topk(blocks, n, dim=-1, largest=False).indices
    mask = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


def row_mask(metric: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(cols · ratio)`` smallest entries of each row (Wanda's comparison group;
    rounding rather than Wanda's floor, so layer-wise targets are not biased towards less pruning).
    Ties at the cut go to the lower column, as a stable sort would take them."""
    return _smallest(metric, round(metric.shape[1] * ratio))


def matrix_mask(metric: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(numel · ratio)`` smallest entries of the whole matrix (ties at the cut:
    the first in row-major order)."""
    return _smallest(metric.reshape(1, -1), round(metric.numel() * ratio)).reshape(metric.shape)


def _smallest(metric: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` smallest entries of each row, ties broken towards the lower index: the first ``k``
    of a stable ascending sort, found by selection (the k-th value, then the ties up to it) in
    linear time rather than by sorting. NaN counts as the largest value, as in a sort."""
    rows, cols = metric.shape
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if k <= 0:
        return mask
    if k >= cols:
        return mask.fill_(True)
    if torch.isnan(metric).any():  # selection's order of NaN is undefined: sort such rare matrices
        mask.scatter_(1, torch.sort(metric, dim=1, stable=True).indices[:, :k], True)
        return mask
    cut = torch.kthvalue(metric, k, dim=1, keepdim=True).values
    torch.lt(metric, cut, out=mask)
    ties = metric == cut
    room = k - mask.sum(1, keepdim=True)  # how many of the tied entries each row still takes
    return mask.logical_or_(ties & (ties.cumsum(1) <= room))


def wanda_metric(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ from the per-input-feature sums of squares."""
    return weight.detach().abs().float() * sq_norm.float().sqrt().unsqueeze(0)


def expected_share(shape: tuple[int, int], ratio: float, nm: tuple[int, int] | None, per_row: bool,
                   block: int | None = None) -> float:
    """Share of a matrix's weights a mask of this kind zeroes (integer rounding included): chosen
    per row (``per_row``), per block of ``block`` columns over all rows, or over the whole matrix."""
    rows, cols = shape
    if nm:
        return nm[0] / nm[1]
    if per_row:
        return round(cols * ratio) / cols
    if block:
        widths = [min(block, cols - c) for c in range(0, cols, block)]
        return sum(round(rows * w * ratio) for w in widths) / (rows * cols)
    return round(rows * cols * ratio) / (rows * cols)


# ----------------------------------------------------------------------------------------------
# Layer-by-layer calibration


class _Stop(Exception):
    pass


def _first_layer_inputs(model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor, device):
    """The first decoder layer's positional inputs for every window, stacked, and the keyword
    arguments the model passes to its layers (the same for windows of equal length)."""
    call: dict = {}
    held: list[torch.Tensor] = []  # one tensor for all windows, filled in place (no concatenated copy)

    def catch(module, args, kwargs):
        x = args[0].detach()
        if not held:
            held.append(torch.empty((len(windows), *x.shape[1:]), dtype=x.dtype, device=x.device))
            call["args"] = args[1:]
            call["kwargs"] = kwargs
        held[0][caught[0]] = x[0]
        caught[0] += 1
        raise _Stop

    caught = [0]

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for w in windows:
                try:
                    model(w.unsqueeze(0).to(device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return held[0], call


def _run_layer(layer: nn.Module, hidden: torch.Tensor, call: dict) -> torch.Tensor:
    """The layer's output for every window, one window at a time."""
    out = torch.empty_like(hidden)
    with torch.no_grad():
        for j in range(hidden.shape[0]):
            y = layer(hidden[j : j + 1], *call["args"], **call["kwargs"])
            out[j : j + 1] = y[0] if isinstance(y, tuple) else y
    return out


def _linear_modules(layer: nn.Module, layout: WeightLayout) -> list[nn.Module]:
    """The layer's scored matrices as modules. Wanda's ‖X_j‖ indexes the input features, i.e. the
    columns of an nn.Linear weight; GPT-2's Conv1D stores the transpose and would be pruned along
    the wrong axis, so calibrated pruning accepts nn.Linear only."""
    mods = [layer.get_submodule(name) for name in layout.matrices]
    for name, mod in zip(layout.matrices, mods):
        if not isinstance(mod, nn.Linear):
            raise PruningError(
                f"{name} is a {type(mod).__name__}, not nn.Linear; calibrated pruning supports models whose "
                "decoder matrices are nn.Linear (Llama, Qwen2, Gemma, GPT-NeoX, ...)"
            )
    return mods


def _collect(layer: nn.Module, modules: list[nn.Module], statistics: list, hidden: torch.Tensor, call: dict,
             output: bool = True) -> torch.Tensor | None:
    """Run the layer on every window with each module's statistic fed its inputs (``add_batch``);
    returns the layer's output. Without ``output`` a window's pass stops once every module has had
    its input (in a Llama layer before the down projection's product, a quarter of its matrix work)."""
    fed: set[int] = set()
    wanted = {id(mod) for mod, st in zip(modules, statistics) if st is not None}

    def take(module, args, st):
        st.add_batch(args[0].detach())
        fed.add(id(module))
        if not output and fed == wanted:
            raise _Stop

    handles = [mod.register_forward_pre_hook(lambda module, args, st=st: take(module, args, st))
               for mod, st in zip(modules, statistics) if st is not None]
    out = torch.empty_like(hidden) if output else None
    try:
        with torch.no_grad():
            for j in range(hidden.shape[0]):
                fed.clear()
                try:
                    y = layer(hidden[j : j + 1], *call["args"], **call["kwargs"])
                except _Stop:
                    continue
                if fed != wanted:
                    raise PruningError("a calibration pass did not reach every matrix of the layer")
                out[j : j + 1] = y[0] if isinstance(y, tuple) else y
    finally:
        for h in handles:
            h.remove()
    return out


# ----------------------------------------------------------------------------------------------
# Bases: how the weights of one matrix are chosen (and, for some, how the kept ones change)


class InputNorms:
    """Σ over calibration tokens of x_j² per input feature of a module (float64)."""

    def __init__(self, module: nn.Module):
        self.sums = torch.zeros(module.weight.shape[1], dtype=torch.float64, device=module.weight.device)

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self.sums += (x * x).sum(0)


class Base:
    """What the loop asks of a base: which weights it compares (``per_row``, or ``block`` columns
    at a time, else the whole matrix), whether its prune step changes the kept weights, its
    per-module calibration statistic (None: needs no data) and its prune step."""

    per_row = False
    block: int | None = None
    changes_weights = False

    def expected_share(self, shape, ratio: float, nm) -> float:
        return expected_share(shape, ratio, nm, self.per_row, self.block)

    def statistic(self, module: nn.Module):
        return None


class Magnitude(Base):
    """The smallest |W| of the whole matrix (N:M: of each block)."""

    def prune(self, weight: torch.Tensor, statistic, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        metric = weight.detach().abs().float()
        mask = nm_mask(metric, *nm) if nm else matrix_mask(metric, ratio)
        zero_where(weight, mask)
        return mask


class Wanda(Base):
    """Per output row, the smallest |W_ij|·‖X_j‖₂ (N:M: of each block of a row)."""

    per_row = True

    def statistic(self, module: nn.Module) -> InputNorms:
        return InputNorms(module)

    def prune(self, weight: torch.Tensor, statistic: InputNorms, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        metric = wanda_metric(weight, statistic.sums)
        mask = nm_mask(metric, *nm) if nm else row_mask(metric, ratio)
        zero_where(weight, mask)
        return mask


class InputGram:
    """XᵀX over the calibration tokens of a module's input (float64; SparseGPT's Hessian up to a
    constant factor, which neither its mask nor its update depends on)."""

    def __init__(self, module: nn.Module):
        cols = module.weight.shape[1]
        self.gram = torch.zeros(cols, cols, dtype=torch.float64, device=module.weight.device)

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        self.gram.addmm_(x.T, x)


class SparseGPT(Base):
    """SparseGPT (Frantar & Alistarh 2023): columns are processed left to right; the weights to
    prune in each block of ``block`` columns are the smallest w²/[H⁻¹]_jj over the block (N:M: over
    each group of M columns of a row), with H⁻¹ the inverse Hessian of the columns not yet processed
    (read off the upper Cholesky factor of (XᵀX + λI)⁻¹, λ = ``damp`` × mean diag XᵀX); each pruned
    weight's error is compensated in the row's remaining weights by the optimal-brain-surgeon
    update. Input features never active on the calibration data (zero diagonal) have their weights
    zeroed, as in the authors' code. The kept weights change, so a pruned model is the dense
    checkpoint plus its mask plus these weights. Computed in float64."""

    changes_weights = True

    def __init__(self, block: int = 128, damp: float = 0.01, inner: int = 16):
        self.block, self.damp, self.inner = block, damp, inner

    def statistic(self, module: nn.Module) -> InputGram:
        return InputGram(module)

    def prune(self, weight: torch.Tensor, statistic: InputGram, ratio: float, nm: tuple[int, int] | None) -> torch.Tensor:
        rows, cols = weight.shape
        if nm and (self.block % nm[1] or cols % nm[1]):
            raise PruningError(f"SparseGPT's N:M needs the block ({self.block}) and the input width ({cols}) to be multiples of M = {nm[1]}")
        w = weight.detach().double().clone()
        h = statistic.gram.clone()
        dead = torch.diagonal(h) == 0
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
        h.diagonal().add_(self.damp * torch.diagonal(h).mean())
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
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
        weight.copy_(w.to(weight.dtype))  # the pruned weights are exact zeros in w
        return mask


# the bases of actpat.methods.BASES (tested to agree): name -> class, built with the job's options
BASES = {"magnitude": Magnitude, "wanda": Wanda, "sparsegpt": SparseGPT}


# ----------------------------------------------------------------------------------------------
# Allocations: the per-layer sparsities, with the mean equal to the target


@dataclass
class AllocationInputs:
    """What an allocation may use: the job's settings of it (``actpat.settings.Ratios``, ``Owl``,
    ``AlphaPruning``, ``Dlp``), the density dataset of a domain, and a pass over the dense model's
    calibration: ``layer_scores(statistic)`` is one value per layer, ``statistic`` applied to the
    Wanda scores |W|·‖X‖ of the layer's matrices (``_dense_layer_scores``; set by prune_model for
    calibrated methods)."""

    n_layers: int
    bounds: tuple[float, float]
    ratios: object | None = None
    owl: object | None = None
    density: object | None = None  # xarray Dataset of actpat.reduce.density
    layer_scores: Callable[[Callable[[list[torch.Tensor]], float]], np.ndarray] | None = None
    alpha: object | None = None  # actpat.settings.AlphaPruning
    dlp: object | None = None  # actpat.settings.Dlp
    weights: list | None = None  # [layer][matrix] the dense weights (set by prune_model)


def _uniform(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    r = np.full(inputs.n_layers, target)
    return LayerRatios(r, target, r.copy()), {}


def _density(measure: str) -> Callable:
    def allocate(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
        from actpat.reduce import activated_counts

        if inputs.density is None or inputs.ratios is None:
            raise PruningError(f"the density-{measure} allocation needs a density store and its ratio settings")
        r = inputs.ratios
        value = r.threshold if measure == "abs" else r.multiple
        counts = activated_counts(inputs.density, measure, value)
        info = density_ratios(counts, target, r.alpha, r.beta, inputs.bounds)
        d = inputs.density.attrs
        details = {"density": {"domain": d["domain"], "measure": measure, "threshold": r.threshold, "multiple": r.multiple,
                               "n_samples": d["n_samples"], "counts": counts, "alpha": r.alpha, "beta": r.beta,
                               "raw_ratios": info.raw, "clipped_layers": info.clipped, "clip_shift": info.shift}}
        return info, details
    return allocate


def _owl(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    if inputs.layer_scores is None or inputs.owl is None:
        raise PruningError("the OWL allocation needs calibration windows and its settings")
    factor = inputs.owl.outlier_factor
    shares = inputs.layer_scores(lambda metrics: outlier_share(metrics, factor))
    info = owl_ratios(shares, target, inputs.owl.spread, inputs.bounds)
    return info, {"owl": {"lambda": inputs.owl.spread, "M": inputs.owl.outlier_factor, "outlier_share": shares}}


def _alpha(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    if inputs.alpha is None or inputs.weights is None:
        raise PruningError("the AlphaPruning allocation needs the model's weights and its settings")
    per_matrix = np.asarray([[hill_alpha(esd(w), inputs.alpha.xmin) for w in layer] for layer in inputs.weights])
    metric = per_matrix.sum(1)
    info = alpha_ratios(metric, target, inputs.alpha.epsilon, inputs.bounds)
    return info, {"alpha": {"epsilon": inputs.alpha.epsilon, "xmin": inputs.alpha.xmin, "layer_alpha_sum": metric,
                            "matrix_alpha": per_matrix, "raw_ratios": info.raw, "clipped_layers": info.clipped}}


def _dlp(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    """DLP: a layer's un-importance S^l is the median of the Wanda scores |W_ij|·‖X_j‖₂ of all the
    layer's matrices together, on the dense model, each layer fed the dense previous layer's
    output (as OWL's outlier shares, and as the authors' code does); see ``dlp_ratios``.

    * The paper writes S^l = Σ_i Σ_j Median(A^l_ij), which read literally is a sum of scalars; the
      authors' code (``get_dlp_structure_ratios``, strategy "median") takes one median over the
      concatenated scores of all the block's linear layers, which is what is done here.
    * ``statistic: mean`` gives the layer mean instead: what the authors' released
      ``get_dlp_ratios`` (the function their ``run.py`` calls) computes despite the paper's
      median; the paper's ablation reports the median as better.
    * One sparsity per decoder layer (Transformer block) for all its matrices, as in the authors'
      code; an appendix of the paper compares allocating per block with allocating per layer, and
      which granularity its main results use is ambiguous (finer allocation is not done here)."""
    if inputs.layer_scores is None or inputs.dlp is None:
        raise PruningError("the DLP allocation needs calibration windows and its settings")
    statistic = {"median": score_median, "mean": score_mean}[inputs.dlp.statistic]
    unimportance = inputs.layer_scores(statistic)
    info = dlp_ratios(unimportance, target, inputs.dlp.alpha, inputs.bounds)
    return info, {"dlp": {"alpha": inputs.dlp.alpha, "statistic": inputs.dlp.statistic,
                          "layer_unimportance": unimportance, "layer_importance": dlp_importance(unimportance),
                          "raw_ratios": info.raw, "clipped_layers": info.clipped}}


# the allocations of actpat.methods.ALLOCATIONS (tested to agree)
ALLOCATIONS: dict[str, Callable[[float, AllocationInputs], tuple[LayerRatios, dict]]] = {
    "uniform": _uniform,
    "density-abs": _density("abs"),
    "density-rel": _density("rel"),
    "owl": _owl,
    "alpha": _alpha,
    "dlp": _dlp,
}


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class PruneResult:
    ratios: np.ndarray  # target sparsity per layer
    actual: np.ndarray  # zeroed share of the scored weights per layer (mask)
    expected: np.ndarray  # share the masks should zero given integer rounding
    zeros_after: np.ndarray  # share of exactly-zero weights per layer after pruning
    allocation: dict = field(default_factory=dict)  # what the allocation used (counts, outlier shares, ...)
    masks: list = field(default_factory=list)  # [layer][matrix] pruned weights as packed bits (uint8)
    weights: list | None = None  # [layer][matrix] the kept weights, for bases that change them (float32)


def prune_model(
    model: nn.Module,
    layout: WeightLayout,
    method: str | PruningMethod,
    sparsity: float,
    structure: str = "unstructured",
    calibration: torch.Tensor | None = None,
    inputs: AllocationInputs | None = None,
    progress=None,
    base_options: dict | None = None,
) -> PruneResult:
    """Prune ``model`` in place; returns the per-layer targets and the measured sparsities.
    ``calibration`` (window, position) token ids are needed by calibrated methods; ``inputs`` holds
    what the method's allocation uses (bounds (0, 0.99) and nothing else by default);
    ``base_options`` are the base's settings (SparseGPT: ``block``, ``damp``)."""
    if isinstance(method, str):
        if method not in METHODS:
            raise PruningError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
        method = METHODS[method]
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"sparsity {sparsity} is outside [0, 1)")
    nm = parse_structure(structure)
    if nm and method.allocation != "uniform":
        raise PruningError(f"N:M structure applies to uniform allocations, not {method.name} (its sparsity varies by layer)")
    target = nm[0] / nm[1] if nm else sparsity
    base = BASES[method.base](**(base_options or {}))
    _, layers = find_decoder_layers(model)
    weights = layer_weights(model, layout)
    device = weights[0][0].device
    inputs = inputs or AllocationInputs(layout.n_layers, (0.0, 0.99))
    inputs.weights = weights
    if method.calibrated:
        if calibration is None or len(calibration) == 0:
            raise PruningError(f"{method.name} needs calibration windows")
        modules = [_linear_modules(layer, layout) for layer in layers]
        hidden, call = _first_layer_inputs(model, layers, calibration, device)
        inputs.layer_scores = lambda statistic: _dense_layer_scores(layers, modules, hidden, call, statistic)
    allocation, details = ALLOCATIONS[method.allocation](target, inputs)
    ratios = allocation.ratios
    if len(ratios) != layout.n_layers:
        raise PruningError(f"{method.name}: {len(ratios)} layer sparsities for {layout.n_layers} layers")
    n_layers = layout.n_layers
    expected, actual, zeros_after = np.zeros(n_layers), np.zeros(n_layers), np.zeros(n_layers)
    sizes = np.asarray([r * c for r, c in layout.shapes], dtype=np.float64)
    packed: list[list[np.ndarray]] = []
    changed: list[list[np.ndarray]] = [[] for _ in range(n_layers)]
    for i in range(n_layers):
        statistics = [None] * len(layout.matrices)
        if method.calibrated:
            statistics = [base.statistic(mod) for mod in modules[i]]
            _collect(layers[i], modules[i], statistics, hidden, call, output=False)
        masked = np.zeros(len(layout.matrices))
        packed.append([])
        with torch.no_grad():
            for j, w in enumerate(weights[i]):
                mask = base.prune(w, statistics[j], ratios[i], nm)
                masked[j] = mask.sum().item()
                zeros_after[i] += (w == 0).sum().item()
                packed[i].append(np.packbits(mask.cpu().numpy(), axis=1, bitorder="little"))
                if base.changes_weights:
                    changed[i].append(w.detach().float().cpu().numpy())
        shares = [base.expected_share(s, ratios[i], nm) for s in layout.shapes]
        expected[i] = float(np.dot(shares, sizes) / sizes.sum())
        actual[i] = masked.sum() / sizes.sum()
        zeros_after[i] /= sizes.sum()
        if method.calibrated:
            hidden = _run_layer(layers[i], hidden, call)  # the pruned layer feeds the next one
        if progress:
            progress(i)
    check_sparsity(ratios, actual, expected, layout)
    return PruneResult(ratios, actual, expected, zeros_after, details, packed, changed if base.changes_weights else None)


def zero_where(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """``weight[mask] = 0`` in place, exactly (+0.0, also over a NaN or an infinity): the weight's
    bits ANDed with 0 where ``mask`` holds and with all ones elsewhere. On the CPU boolean indexing
    writes scattered elements at 6-12 ns a weight; this is one streaming pass (a 1536 x 576
    float32 matrix at half sparsity: 3.0 against 11.1 ms with its unpacking, on one thread)."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(weight.element_size())
    if ints is None or weight.is_complex() or not weight.is_contiguous() or mask.shape != weight.shape:
        weight.masked_fill_(mask, 0)
        return
    weight.view(ints).bitwise_and_(mask.to(ints).sub_(1))  # True -> 0, False -> -1 (all bits set)


def apply_mask(model: nn.Module, layout: WeightLayout, mask) -> float:
    """Make ``model`` the pruned model of a mask store (``actpat.store.open_mask``): zero its
    pruned weights (and take its changed weights, for methods that change them). Returns the
    pruned share of the scored weights, checked against the store's own record."""
    if list(mask.attrs["matrices"]) != list(layout.matrices) or [list(s) for s in layout.shapes] != mask.attrs["shapes"] \
            or mask.attrs["n_layers"] != layout.n_layers:
        raise PruningError("the mask was made for other weight matrices than this model's")
    weights = layer_weights(model, layout)
    pruned = 0
    with torch.no_grad():
        for j, (name, (rows, cols)) in enumerate(zip(layout.matrices, layout.shapes)):
            bits = mask[name].values
            for i in range(layout.n_layers):
                w = weights[i][j]
                m = np.unpackbits(bits[i], axis=1, count=cols, bitorder="little").view(bool)
                if mask.attrs.get("changed_weights"):
                    w.copy_(torch.from_numpy(mask[f"{name}.weight"].values[i]).to(w))
                zero_where(w, torch.from_numpy(m).to(w.device))
                pruned += int(np.count_nonzero(m))
    share = pruned / (layout.weights_per_layer * layout.n_layers)
    if abs(share - mask.attrs["overall_sparsity"]) > 1e-9:
        raise PruningError(f"the mask prunes {share:.6f} of the weights, its record says {mask.attrs['overall_sparsity']:.6f}")
    return share


def _dense_layer_scores(layers, modules, hidden, call, statistic: Callable[[list[torch.Tensor]], float]) -> np.ndarray:
    """One value per layer from the dense model: ``statistic`` of the Wanda scores of the layer's
    matrices, each layer's inputs the dense previous layer's outputs (OWL's and DLP's signal)."""
    values = []
    for layer, mods in zip(layers, modules):
        norms = [InputNorms(mod) for mod in mods]
        hidden = _collect(layer, mods, norms, hidden, call)
        values.append(statistic([wanda_metric(mod.weight, n.sums) for mod, n in zip(mods, norms)]))
    return np.asarray(values, dtype=np.float64)


def score_mean(metrics: list[torch.Tensor]) -> float:
    """The mean of all the scores of a layer's matrices (summed in float64)."""
    return sum(float(x.double().sum()) for x in metrics) / sum(x.numel() for x in metrics)


def outlier_share(metrics: list[torch.Tensor], m_factor: float) -> float:
    """OWL's layer outlier share: the share of a layer's scores above ``m_factor`` × their mean."""
    mean = score_mean(metrics)
    return sum(int((x > m_factor * mean).sum()) for x in metrics) / sum(x.numel() for x in metrics)


def score_median(metrics: list[torch.Tensor]) -> float:
    """The median of all the scores of a layer's matrices together (for an even count the mean of
    the two middle values; torch.median would take the lower one)."""
    flat = torch.cat([x.flatten() for x in metrics])
    n = flat.numel()
    upper = float(torch.kthvalue(flat, n // 2 + 1).values)
    return upper if n % 2 else (float(torch.kthvalue(flat, n // 2).values) + upper) / 2


def check_sparsity(ratios: np.ndarray, actual: np.ndarray, expected: np.ndarray, layout: WeightLayout) -> None:
    """Fail loudly when a layer's zeroed share misses its target by more than integer rounding."""
    tol = max(0.5 / c for _, c in layout.shapes) + 1e-9
    for i, (r, a, e) in enumerate(zip(ratios, actual, expected)):
        if abs(a - e) > 1e-9 or abs(a - r) > tol:
            raise PruningError(
                f"layer {i}: pruned {a:.6f} of its weights, target {r:.6f} (expected {e:.6f} after rounding)"
            )



def prune_checkpoint(job, model_dir, model_name: str, calibration_store, density_store, mask_path, report_path,
                     device: str, threads: int, log=print) -> dict:
    """The prune job (``job``: ``actpat.settings.PruneJob``): prune a prepared checkpoint with the
    run's method; write the pruned model as a mask store (the dense checkpoint plus the mask is the
    pruned model) and a report of per-layer targets and sparsities."""
    import sys
    import time
    from pathlib import Path

    from tqdm import tqdm

    from actpat.decoder import weight_layout
    from actpat.models import load_checkpoint, pick_device
    from actpat.provenance import code_version, mask_attrs
    from actpat.store import open_reduction, open_samples, window_tokens, write_json, write_mask

    run = job.run
    torch.set_num_threads(threads)
    device = pick_device(device, log)
    t0 = time.time()
    model, _, checkpoint = load_checkpoint(Path(model_dir), "float32", device)
    layout = weight_layout(model)
    report = {"model": model_name, "run": run.key, "method": run.method, "structure": run.structure,
              "target_sparsity": run.sparsity, "checkpoint_sha256": checkpoint["checkpoint_sha256"],
              "code_version": code_version(), "device": device}
    inputs = AllocationInputs(layout.n_layers, tuple(job.bounds), ratios=job.ratios, owl=job.owl, alpha=job.alpha, dlp=job.dlp,
                              density=open_reduction(Path(density_store)) if density_store else None)
    base_options = dict(job.base_options or {})
    if base_options:
        report["base_options"] = base_options
    calibration = None
    if calibration_store:
        cal = open_samples(Path(calibration_store))
        calibration = torch.as_tensor(window_tokens(cal).astype(np.int64))
        report["calibration"] = {"store": str(calibration_store), "domain": cal.attrs["domain"],
                                 "windows": int(calibration.shape[0]), "seq_len": int(calibration.shape[1]),
                                 "seed": cal.attrs["seed"], "sample_ids": cal["sample"].values.tolist()}
    log(f"pruning {model_name}: {run.method} {run.structure} to {run.sparsity:.3f} on {device}, {layout.n_layers} layers"
        + (f", {len(calibration)} calibration windows of {calibration.shape[1]} tokens" if calibration is not None else ""))
    bar = tqdm(total=layout.n_layers, desc="pruning", unit="layer", file=sys.stderr, mininterval=5, ascii=True)
    result = prune_model(model, layout, run.method, run.sparsity, run.structure, calibration, inputs,
                         progress=lambda i: bar.update(1), base_options=base_options)
    bar.close()
    if "density" in result.allocation:
        result.allocation["density"]["store"] = str(density_store)
        if result.allocation["density"]["clipped_layers"]:
            log(f"layers {result.allocation['density']['clipped_layers']} fell outside {job.bounds} and were clipped")
    report.update(result.allocation)
    report.update({"layer_sparsity_target": result.ratios, "layer_sparsity_actual": result.actual,
                   "layer_zero_share": result.zeros_after, "overall_sparsity": float(np.mean(result.actual)),
                   "seconds": time.time() - t0})
    if device == "cuda":
        report["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    log(f"overall sparsity {report['overall_sparsity']:.4f}; per layer {result.actual.min():.4f}..{result.actual.max():.4f}")
    write_mask(Path(mask_path), layout, result.masks, mask_attrs(report, checkpoint), weights=result.weights)
    write_json(report, Path(report_path))
    log(f"done in {time.time() - t0:.1f}s -> {report_path}")
    return report
