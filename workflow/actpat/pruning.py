"""Pruning of the scored weight matrices (validations 1 and 2).

Methods, all without weight updates:

* ``magnitude``: the smallest |W| of each matrix (one threshold per matrix, as in Wanda's baseline);
* ``wanda``: per output row, the smallest |W_ij|·‖X_j‖₂, where ‖X_j‖ is the norm of input feature j
  over the calibration tokens (Sun et al. 2023), one sparsity for every layer;
* ``wanda-density`` / ``wanda-density-rel``: Wanda with the paper's layer-wise sparsities computed
  from a domain's activation density (absolute threshold / scale-free relative threshold);
* ``wanda-owl``: Wanda with OWL's layer-wise sparsities (Yin et al. 2024), from the share of
  outlier Wanda scores of each layer.

``structure`` is ``unstructured`` or N:M (N of every M consecutive input weights of a row are
zeroed; the sparsity is then N/M). Calibration runs layer by layer: the inputs of the current layer
for all windows are the only activations held, and each layer's calibration input is the output of
the already pruned previous layer (as in Wanda).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from actpat.errors import ActpatError
from actpat.models import WeightLayout, _find_decoder_layers, layer_weights

METHODS = ("magnitude", "wanda", "wanda-density", "wanda-density-rel", "wanda-owl")
CALIBRATED = {"wanda", "wanda-density", "wanda-density-rel", "wanda-owl"}


class PruningError(ActpatError):
    """Pruning was asked something impossible, or did not reach its target."""


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
    rounding rather than Wanda's floor, so layer-wise targets are not biased towards less pruning)."""
    rows, cols = metric.shape
    k = round(cols * ratio)
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(metric, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, idx, True)
    return mask


def matrix_mask(metric: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune the ``round(numel · ratio)`` smallest entries of the whole matrix."""
    k = round(metric.numel() * ratio)
    mask = torch.zeros(metric.numel(), dtype=torch.bool, device=metric.device)
    if k > 0:
        mask[torch.sort(metric.flatten(), stable=True).indices[:k]] = True
    return mask.reshape(metric.shape)


def wanda_metric(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ from the per-input-feature sums of squares."""
    return weight.detach().abs().float() * sq_norm.float().sqrt().unsqueeze(0)


def expected_share(shape: tuple[int, int], ratio: float, nm: tuple[int, int] | None, per_row: bool) -> float:
    """Share of a matrix's weights a mask of this kind zeroes (integer rounding included)."""
    rows, cols = shape
    if nm:
        return nm[0] / nm[1]
    if per_row:
        return round(cols * ratio) / cols
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


def _input_sq_norms(layer: nn.Module, modules: list[nn.Module], hidden: torch.Tensor, call: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per scored matrix, Σ over calibration tokens of x_j² of its input; and the layer's output."""
    sums = [torch.zeros(m.weight.shape[1], dtype=torch.float64, device=m.weight.device) for m in modules]
    handles = []
    for k, mod in enumerate(modules):
        def hook(module, args, output, k=k):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[k] += (x * x).sum(0)
        handles.append(mod.register_forward_hook(hook))
    try:
        out = _run_layer(layer, hidden, call)
    finally:
        for h in handles:
            h.remove()
    return sums, out


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


@dataclass
class PruneSettings:
    method: str
    sparsity: float
    structure: str = "unstructured"
    layer_ratios: np.ndarray | None = None  # wanda-density*: precomputed per-layer sparsities
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    bounds: tuple[float, float] = (0.0, 0.99)


@dataclass
class PruneResult:
    ratios: np.ndarray  # target sparsity per layer
    actual: np.ndarray  # zeroed share of the scored weights per layer (mask)
    expected: np.ndarray  # share the masks should zero given integer rounding
    zeros_after: np.ndarray  # share of exactly-zero weights per layer after pruning
    outlier_share: np.ndarray | None = None


def prune_model(
    model: nn.Module,
    layout: WeightLayout,
    settings: PruneSettings,
    calibration: torch.Tensor | None = None,
    progress=None,
) -> PruneResult:
    """Prune ``model`` in place; returns the per-layer targets and the measured sparsities.
    ``calibration`` (window, position) token ids are needed by the Wanda methods."""
    if settings.method not in METHODS:
        raise PruningError(f"unknown pruning method {settings.method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 <= settings.sparsity < 1.0:
        raise PruningError(f"sparsity {settings.sparsity} is outside [0, 1)")
    nm = parse_structure(settings.structure)
    if nm and settings.method not in ("magnitude", "wanda"):
        raise PruningError(f"N:M structure applies to magnitude and wanda, not {settings.method} (its sparsity varies by layer)")
    target = nm[0] / nm[1] if nm else settings.sparsity
    n_layers = layout.n_layers
    _, layers = _find_decoder_layers(model)
    weights = layer_weights(model, layout)
    device = weights[0][0].device
    ratios = np.full(n_layers, target)
    if settings.method in ("wanda-density", "wanda-density-rel"):
        if settings.layer_ratios is None or len(settings.layer_ratios) != n_layers:
            raise PruningError(f"{settings.method} needs one precomputed sparsity per layer ({n_layers})")
        ratios = np.asarray(settings.layer_ratios, dtype=np.float64)
    outliers = None
    if settings.method in CALIBRATED:
        if calibration is None or len(calibration) == 0:
            raise PruningError(f"{settings.method} needs calibration windows")
        modules = [_linear_modules(layer, layout) for layer in layers]
        hidden, call = _first_layer_inputs(model, layers, calibration, device)
        if settings.method == "wanda-owl":
            outliers = _outlier_shares(layers, modules, hidden, call, settings.owl_m)
            ratios = owl_ratios(outliers, target, settings.owl_lambda, settings.bounds).ratios
    expected = np.zeros(n_layers)
    actual = np.zeros(n_layers)
    zeros_after = np.zeros(n_layers)
    sizes = np.asarray([r * c for r, c in layout.shapes], dtype=np.float64)
    for i in range(n_layers):
        layer = layers[i]
        if settings.method in CALIBRATED:
            sums, _ = _input_sq_norms(layer, modules[i], hidden, call)
        masked = np.zeros(len(layout.matrices))
        with torch.no_grad():
            for j, w in enumerate(weights[i]):
                if settings.method == "magnitude":
                    metric = w.detach().abs().float()
                    mask = nm_mask(metric, *nm) if nm else matrix_mask(metric, ratios[i])
                else:
                    metric = wanda_metric(w, sums[j])
                    mask = nm_mask(metric, *nm) if nm else row_mask(metric, ratios[i])
                w[mask] = 0
                masked[j] = mask.sum().item()
                zeros_after[i] += (w == 0).sum().item()
        shares = [expected_share(s, ratios[i], nm, settings.method != "magnitude") for s in layout.shapes]
        expected[i] = float(np.dot(shares, sizes) / sizes.sum())
        actual[i] = masked.sum() / sizes.sum()
        zeros_after[i] /= sizes.sum()
        if settings.method in CALIBRATED:
            hidden = _run_layer(layer, hidden, call)  # the pruned layer feeds the next one
        if progress:
            progress(i)
    check_sparsity(ratios, actual, expected, layout)
    return PruneResult(ratios, actual, expected, zeros_after, outliers)


def _outlier_shares(layers, modules, hidden, call, m_factor: float) -> np.ndarray:
    """OWL's layer outlier distribution on the dense model: the share of a layer's Wanda scores
    above ``m_factor`` × their mean over the layer."""
    shares = []
    for layer, mods in zip(layers, modules):
        sums, hidden = _input_sq_norms(layer, mods, hidden, call)
        metrics = [wanda_metric(mod.weight, s) for mod, s in zip(mods, sums)]
        total = sum(x.numel() for x in metrics)
        mean = sum(float(x.double().sum()) for x in metrics) / total
        shares.append(sum(int((x > m_factor * mean).sum()) for x in metrics) / total)
    return np.asarray(shares)


def check_sparsity(ratios: np.ndarray, actual: np.ndarray, expected: np.ndarray, layout: WeightLayout) -> None:
    """Fail loudly when a layer's zeroed share misses its target by more than integer rounding."""
    tol = max(0.5 / c for _, c in layout.shapes) + 1e-9
    for i, (r, a, e) in enumerate(zip(ratios, actual, expected)):
        if abs(a - e) > 1e-9 or abs(a - r) > tol:
            raise PruningError(
                f"layer {i}: pruned {a:.6f} of its weights, target {r:.6f} (expected {e:.6f} after rounding)"
            )

