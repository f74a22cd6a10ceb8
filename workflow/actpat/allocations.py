"""Allocations: how a target sparsity S is spread over the decoder layers. Every layer holds the
same number of scored weights, so the layer sparsities have the mean S exactly; values outside the
allowed bounds (``pruning.ratios.bounds``) are clipped and the rest shifted to keep the mean.

* ``uniform``: S in every layer.
* ``density-abs``, ``density-rel``: the paper's formula from a domain's activation density (the
  absolute threshold γ; scale-free, above a multiple of the model-mean score).
* ``owl`` (Yin et al. 2024): from the share of outlier Wanda scores of each layer.
* ``alpha`` (AlphaPruning, Lu et al. 2024): from the heavy-tailed spectra of the weights (no data).
* ``dlp`` (Chen et al. 2025): from the median Wanda score of each layer.
* ``atp`` (Huang et al. 2025): an increasing arithmetic progression whose common difference is
  chosen on the calibration windows.

Each declares itself (``actpat.registry.allocation``) with its settings, a frozen dataclass read
from its section of the config's ``pruning:``. torch is imported where a tensor is at hand, not
when this module is imported: the workflow plans its runs from the declarations without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from actpat.errors import PruningError
from actpat.registry import allocation


@dataclass
class LayerRatios:
    """Per-layer sparsities with their mean exactly ``target``; ``clipped`` lists the layers whose
    raw value fell outside ``bounds`` (their value was clipped and the rest shifted to keep the mean)."""

    ratios: np.ndarray
    target: float
    raw: np.ndarray
    clipped: list[int] = field(default_factory=list)
    shift: float = 0.0


@dataclass
class AllocationInputs:
    """What an allocation may use: its own settings (its declared dataclass), the bounds every
    allocation keeps, the density dataset of a domain, the dense weights, and, for calibrated
    methods, two passes the layer loop (``actpat.pruning``) provides:

    * ``layer_scores(statistic)``: one value per layer, ``statistic`` applied to the Wanda scores
      |W|·‖X‖ of the layer's matrices on the dense model;
    * ``trial(ratios)``: the mean next-token NLL of the calibration windows (nats per token) after
      pruning with these layer sparsities; the model is left dense again."""

    n_layers: int
    bounds: tuple[float, float]
    settings: object | None = None
    density: object | None = None  # xarray Dataset of actpat.reduce.density
    weights: list | None = None  # [layer][matrix] the dense weights (set by prune_model)
    layer_scores: Callable[[Callable[[list], float]], np.ndarray] | None = None
    trial: Callable[[np.ndarray], float] | None = None


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


# ----------------------------------------------------------------------------------------------
# uniform


@allocation("uniform", suffix="", title="uniform")
def _uniform(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    r = np.full(inputs.n_layers, target)
    return LayerRatios(r, target, r.copy()), {}


# ----------------------------------------------------------------------------------------------
# The paper's density formula


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


@dataclass(frozen=True)
class AbsoluteDensity:
    """The paper's formula on the weights above an absolute threshold γ (config ``pruning.ratios``)."""

    threshold: float
    alpha: float
    beta: float


@dataclass(frozen=True)
class RelativeDensity:
    """The paper's formula on the weights above a multiple of the model-wide mean score."""

    multiple: float
    alpha: float
    beta: float


def _density(measure: str) -> Callable:
    def allocate(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
        from actpat.reduce import activated_counts

        s = inputs.settings
        if inputs.density is None or s is None:
            raise PruningError(f"the density-{measure} allocation needs a density store and its ratio settings")
        threshold, multiple = getattr(s, "threshold", None), getattr(s, "multiple", None)
        counts = activated_counts(inputs.density, measure, threshold if measure == "abs" else multiple)
        info = density_ratios(counts, target, s.alpha, s.beta, inputs.bounds)
        d = inputs.density.attrs
        details = {"density": {"domain": d["domain"], "measure": measure, "threshold": threshold, "multiple": multiple,
                               "n_samples": d["n_samples"], "counts": counts, "alpha": s.alpha, "beta": s.beta,
                               "raw_ratios": info.raw, "clipped_layers": info.clipped, "clip_shift": info.shift}}
        return info, details
    return allocate


allocation("density-abs", suffix="-density", title="the paper's density formula", density=True,
           settings=AbsoluteDensity, section="ratios")(_density("abs"))
allocation("density-rel", suffix="-density-rel", title="scale-free density", density=True,
           settings=RelativeDensity, section="ratios")(_density("rel"))


# ----------------------------------------------------------------------------------------------
# Layer statistics of the dense model's Wanda scores (OWL, DLP)


def score_mean(metrics: list) -> float:
    """The mean of all the scores of a layer's matrices (summed in float64)."""
    return sum(float(x.double().sum()) for x in metrics) / sum(x.numel() for x in metrics)


def outlier_share(metrics: list, m_factor: float) -> float:
    """OWL's layer outlier share: the share of a layer's scores above ``m_factor`` × their mean."""
    mean = score_mean(metrics)
    return sum(int((x > m_factor * mean).sum()) for x in metrics) / sum(x.numel() for x in metrics)


def score_median(metrics: list) -> float:
    """The median of all the scores of a layer's matrices together (for an even count the mean of
    the two middle values; torch.median would take the lower one)."""
    import torch

    flat = torch.cat([x.flatten() for x in metrics])
    n = flat.numel()
    upper = float(torch.kthvalue(flat, n // 2 + 1).values)
    return upper if n % 2 else (float(torch.kthvalue(flat, n // 2).values) + upper) / 2


# ----------------------------------------------------------------------------------------------
# OWL


def owl_ratios(outlier_share: np.ndarray, target: float, lam: float = 0.08, bounds: tuple[float, float] = (0.0, 0.99)) -> LayerRatios:
    """OWL: layers with more outliers keep more weights. The outlier shares are rescaled to
    [0, 2λ], centred, and subtracted from the target, so S_i ∈ [S − λ, S + λ] with mean S."""
    d = np.asarray(outlier_share, dtype=np.float64)
    span = d.max() - d.min()
    scaled = (d - d.min()) / span * 2 * lam if span > 0 else np.zeros_like(d)
    raw = target - (scaled - scaled.mean())
    return clip_to_mean(raw, target, bounds)


@dataclass(frozen=True)
class Owl:
    spread: float  # config key "lambda"
    outlier_factor: float  # config key "M"

    @classmethod
    def from_config(cls, section: dict) -> "Owl":
        return cls(float(section["lambda"]), float(section["M"]))


@allocation("owl", suffix="-owl", title="OWL baseline", calibrated=True, settings=Owl, section="owl")
def _owl(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    s = inputs.settings
    if inputs.layer_scores is None or s is None:
        raise PruningError("the OWL allocation needs calibration windows and its settings")
    shares = inputs.layer_scores(lambda metrics: outlier_share(metrics, s.outlier_factor))
    info = owl_ratios(shares, target, s.spread, inputs.bounds)
    return info, {"owl": {"lambda": s.spread, "M": s.outlier_factor, "outlier_share": shares}}


# ----------------------------------------------------------------------------------------------
# AlphaPruning


def esd(weight) -> np.ndarray:
    """The empirical spectral density's eigenvalues of a weight matrix: the squared singular
    values, ascending, in float64 -- computed as the eigenvalues of the smaller of WᵀW and WWᵀ in
    float64 (rounding below zero clipped), which is both faster and more exact than the float32
    SVD the AlphaPruning authors take (``benchmarks/sparsegpt_cost.py``)."""
    import torch

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


@dataclass(frozen=True)
class AlphaPruning:
    epsilon: float  # layer sparsities within target x [1 - epsilon, 1 + epsilon] before clipping
    xmin: str  # "peak" | "mid": how the tail of each weight spectrum is chosen


@allocation("alpha", suffix="-alpha", title="AlphaPruning baseline", settings=AlphaPruning, section="alpha")
def _alpha(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    s = inputs.settings
    if s is None or inputs.weights is None:
        raise PruningError("the AlphaPruning allocation needs the model's weights and its settings")
    per_matrix = np.asarray([[hill_alpha(esd(w), s.xmin) for w in layer] for layer in inputs.weights])
    metric = per_matrix.sum(1)
    info = alpha_ratios(metric, target, s.epsilon, inputs.bounds)
    return info, {"alpha": {"epsilon": s.epsilon, "xmin": s.xmin, "layer_alpha_sum": metric,
                            "matrix_alpha": per_matrix, "raw_ratios": info.raw, "clipped_layers": info.clipped}}


# ----------------------------------------------------------------------------------------------
# DLP


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


@dataclass(frozen=True)
class Dlp:
    alpha: float  # DLP's spread: layer sparsities span 2 alpha around the target
    statistic: str  # "median" (the paper) | "mean" (the authors' released ratio code): a layer's un-importance


@allocation("dlp", suffix="-dlp", title="DLP baseline", calibrated=True, settings=Dlp, section="dlp")
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
    s = inputs.settings
    if inputs.layer_scores is None or s is None:
        raise PruningError("the DLP allocation needs calibration windows and its settings")
    statistic = {"median": score_median, "mean": score_mean}[s.statistic]
    unimportance = inputs.layer_scores(statistic)
    info = dlp_ratios(unimportance, target, s.alpha, inputs.bounds)
    return info, {"dlp": {"alpha": s.alpha, "statistic": s.statistic,
                          "layer_unimportance": unimportance, "layer_importance": dlp_importance(unimportance),
                          "raw_ratios": info.raw, "clipped_layers": info.clipped}}


# ----------------------------------------------------------------------------------------------
# ATP


def atp_ratios(n_layers: int, target: float, beta: float, bounds: tuple[float, float] = (0.0, 0.99)) -> LayerRatios:
    """ATP's layer sparsities (Huang et al., ICML 2025, arXiv 2502.14770): a monotonically
    increasing arithmetic progression with mean S and common difference β,

    s_i = S − β (L − 1) / 2 + β (i − 1),  i = 1..L,

    so the first layers, whose reconstruction errors every later layer amplifies, are pruned least.
    A β beyond ``atp_beta_max`` puts layers outside ``bounds``: they are clipped and the mean
    restored, as in every allocation."""
    if n_layers < 1 or beta < 0:
        raise PruningError(f"ATP needs at least one layer and a common difference β ≥ 0, not {beta}")
    raw = target - beta * (n_layers - 1) / 2 + beta * np.arange(n_layers)
    return clip_to_mean(raw, target, bounds)


def atp_beta_max(n_layers: int, target: float, bounds: tuple[float, float] = (0.0, 0.99)) -> float:
    """The largest common difference whose progression stays within ``bounds`` (the paper's
    sparsities within [0, 1]): s_1 = S − β(L − 1)/2 ≥ low and s_L = S + β(L − 1)/2 ≤ high."""
    lo, hi = bounds
    return 2 * min(target - lo, hi - target) / (n_layers - 1) if n_layers > 1 else 0.0


def atp_candidates(n_layers: int, target: float, trials: int, bounds: tuple[float, float] = (0.0, 0.99)) -> np.ndarray:
    """The common differences tried: ``trials`` values evenly spaced over (0, β_max], the largest
    ``atp_beta_max`` (β = 0 is the uniform allocation, not tried)."""
    return atp_beta_max(n_layers, target, bounds) * np.arange(1, trials + 1) / trials


@dataclass(frozen=True)
class Atp:
    beta: float | None  # the common difference; None: the best of `trials` on the calibration windows
    trials: int  # common differences tried, evenly spaced over (0, beta_max]


@allocation("atp", suffix="-atp", title="ATP baseline", calibrated=True, settings=Atp, section="atp")
def _atp(target: float, inputs: AllocationInputs) -> tuple[LayerRatios, dict]:
    """ATP: layer sparsities in an increasing arithmetic progression around the target
    (``atp_ratios``), with the one hyperparameter, the common difference β, chosen as the paper
    does: a few trials, each the model pruned with that progression (the method's own base,
    calibrated layer by layer as in the final run) and scored by the perplexity of the calibration
    windows; the lowest wins (on a tie the smaller β, the closer to uniform). The paper searches a
    grid of β with a fixed step; here ``trials`` values spread evenly up to the largest β that keeps
    every layer within the bounds. A fixed ``beta`` skips the search."""
    s = inputs.settings
    if s is None or (s.beta is None and inputs.trial is None):
        raise PruningError("the ATP allocation needs its settings and, to choose its common difference, calibration windows")
    n, bounds = inputs.n_layers, inputs.bounds
    beta_max = atp_beta_max(n, target, bounds)
    tried, nll = [], []
    if s.beta is None:
        tried = atp_candidates(n, target, s.trials, bounds)
        nll = [inputs.trial(atp_ratios(n, target, b, bounds).ratios) for b in tried]
        beta = float(tried[int(np.argmin(nll))])  # the first of equal minima: the smallest β
    else:
        beta = float(s.beta)
    info = atp_ratios(n, target, beta, bounds)
    return info, {"atp": {"beta": beta, "beta_max": beta_max, "chosen_from_trials": s.beta is None,
                          "trial_betas": list(tried), "trial_calibration_nll": nll, "raw_ratios": info.raw,
                          "clipped_layers": info.clipped}}
