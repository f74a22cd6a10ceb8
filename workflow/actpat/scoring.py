"""The activation score of the paper: s = w · ∂D/∂w for every scored weight matrix.

One forward and one backward pass per sample. Only the decoder-layer matrices require grad (no
gradient is computed for embeddings, norms or the head), and for the paper's target only the last
position's logits are computed. After the backward pass each weight gradient is turned in place
into |w · g| (in fp32, whatever the compute dtype) and:

* added to an fp32 accumulator (exact Σ|s| over the shard's samples, per weight);
* reduced to per-sample, per-layer, per-matrix statistics (L1, L2, counts above thresholds,
  exact zeros);
* summarised per layer as a CountSketch (``actpat.sketch``) from which LLMDcos between any two
  samples can be estimated later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actpat.errors import ActpatError
from actpat.models import WeightLayout, layer_weights
from actpat.settings import Scoring
from actpat.sketch import LayerHasher, sketch_scores

class NumericalError(ActpatError):
    """A non-finite score: it would poison every sum it enters."""


@dataclass
class SampleScores:
    """What one sample leaves behind, besides its share of the accumulated sums."""

    target_value: float
    target_token: int
    l1: np.ndarray  # (layer, matrix) float64
    l2: np.ndarray  # (layer, matrix) float64
    above: np.ndarray  # (layer, matrix, threshold) int64
    above_rel: np.ndarray  # (layer, matrix, multiple) int64: |s| > multiple × the sample's mean |s|
    zeros: np.ndarray  # (layer, matrix) int64
    sketch: np.ndarray  # (layer, bucket) float32
    hidden_mean: np.ndarray | None = None  # (layer + 1, hidden) float32, mean over positions


@dataclass(frozen=True)
class Target:
    """A scalar D to differentiate: ``last_logits_only`` lets the forward pass compute the logits of
    the last position alone; ``value`` maps (logits, input ids) of one sample to (D, token)."""

    last_logits_only: bool
    value: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]


def _max_logit(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The paper's D: the largest next-token logit at the last position (and its token)."""
    value, token = logits[0, -1].float().max(dim=-1)
    return value, int(token)


def _mean_loglik(logits: torch.Tensor, input_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The mean log-likelihood of the sample's own next tokens (no single token: -1)."""
    logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1).gather(-1, input_ids[0, 1:, None])
    return logprobs.mean(), -1


# the scoring targets (the schema's enum equals these keys; tested)
TARGETS: dict[str, Target] = {
    "max_logit": Target(last_logits_only=True, value=_max_logit),
    "mean_loglik": Target(last_logits_only=False, value=_mean_loglik),
}


def compute_target(model: nn.Module, input_ids: torch.Tensor, target: str) -> tuple[torch.Tensor, int, np.ndarray]:
    """The scalar D differentiated for one sample (batch of 1), the token it refers to, and the
    mean hidden state of every layer output over positions ((layers + 1, hidden); index 0 is the
    embedding output), a baseline representation from the same forward pass."""
    if target not in TARGETS:
        raise ActpatError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    spec = TARGETS[target]
    out = model(input_ids=input_ids, logits_to_keep=1 if spec.last_logits_only else 0, use_cache=False,
                output_hidden_states=True)
    hidden = torch.stack([h[0].detach().float().mean(0) for h in out.hidden_states]).cpu().numpy()
    value, token = spec.value(out.logits, input_ids)
    return value, token, hidden


def _abs_score(p: nn.Parameter, in_place: bool) -> torch.Tensor:
    """|w · g| in fp32. In fp32 the gradient buffer is turned into the score in place (and read
    back as such when ``in_place`` is False); half-precision gradients are upcast before the
    product, since half-precision products underflow (the authors' fp16 flaw)."""
    if p.grad is None:  # the target does not depend on this weight
        return torch.zeros(p.shape, dtype=torch.float32, device=p.device)
    if p.grad.dtype == torch.float32:
        return p.grad.mul_(p.detach()).abs_() if in_place else p.grad
    return p.grad.float().mul_(p.detach().float()).abs_()


@dataclass
class ShardScorer:
    """Scores samples one at a time and accumulates Σ|s| per weight in fp32."""

    model: nn.Module
    layout: WeightLayout
    settings: Scoring
    cache_hashes: bool = True  # keep sketch bucket indices on the device (4 bytes per weight)
    sums: list[list[torch.Tensor]] = field(init=False)
    weights: list[list[nn.Parameter]] = field(init=False)

    def __post_init__(self):
        self.weights = layer_weights(self.model, self.layout)
        scored = {id(p) for layer in self.weights for p in layer}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in scored)
        device = self.weights[0][0].device
        self.sums = [[torch.zeros(p.shape, dtype=torch.float32, device=device) for p in layer] for layer in self.weights]
        self.hasher = LayerHasher(
            self.layout, self.settings.sketch_size, self.settings.sketch_seed, device, self.cache_hashes
        )
        self.n_samples = 0

    def score(self, input_ids: torch.Tensor, sample_id: str = "?") -> SampleScores:
        L, M, T = self.layout.n_layers, len(self.layout.matrices), len(self.settings.thresholds)
        l1 = np.zeros((L, M))
        l2 = np.zeros((L, M))
        above = np.zeros((L, M, T), dtype=np.int64)
        above_rel = np.zeros((L, M, len(self.settings.relative_multiples)), dtype=np.int64)
        zeros = np.zeros((L, M), dtype=np.int64)
        sketch = np.zeros((L, self.settings.sketch_size), dtype=np.float32)

        for layer in self.weights:
            for p in layer:
                p.grad = None
        value, token, hidden = compute_target(self.model, input_ids, self.settings.target)
        value.backward()

        for i, layer in enumerate(self.weights):
            scores = []
            for j, p in enumerate(layer):
                s = _abs_score(p, in_place=True)
                self.sums[i][j].add_(s)
                flat = s.view(-1)
                stats = torch.stack(
                    [flat.sum().double(), torch.dot(flat, flat).double()]  # fp32 pairwise sums: float64 is far slower on CPU
                    + [torch.count_nonzero(flat > t).double() for t in self.settings.thresholds]
                    + [torch.count_nonzero(flat).double()]
                ).cpu().numpy()
                l1[i, j], l2[i, j] = stats[0], np.sqrt(stats[1])
                above[i, j] = stats[2 : 2 + T]
                zeros[i, j] = flat.numel() - int(stats[-1])
                scores.append(flat)
            if not np.isfinite(l1[i]).all():
                bad = [m for m, v in zip(self.layout.matrices, l1[i]) if not np.isfinite(v)]
                raise NumericalError(f"sample {sample_id}: non-finite score in layer {i} ({', '.join(bad)})")
            sketch[i] = sketch_scores(scores, self.hasher.layer(i), self.settings.sketch_size).cpu().numpy()

        # counts relative to this sample's model-wide mean |s| (scale-free), known only now
        mean = l1.sum() / (self.layout.weights_per_layer * L)
        for i, layer in enumerate(self.weights):
            counts = [
                torch.count_nonzero(_abs_score(p, in_place=False) > m * mean)
                for p in layer
                for m in self.settings.relative_multiples
            ]
            above_rel[i] = torch.stack(counts).cpu().numpy().reshape(M, -1)

        for layer in self.weights:
            for p in layer:
                p.grad = None
        self.n_samples += 1
        return SampleScores(float(value.detach()), token, l1, l2, above, above_rel, zeros, sketch, hidden)


def score_shard(job, samples_path: Path, shard: int, model_dir: Path, model_name: str, device: str, threads: int,
                out: Path, log=print) -> None:
    """The score_shard job (``job``: ``actpat.settings.ScoringJob``): score one shard of a samples
    store and write its score store."""
    from actpat.store import exclusive

    with exclusive(out):  # one writer per store, from the first sample on
        _score_shard(job, samples_path, shard, model_dir, model_name, device, threads, out, log)


def _score_shard(job, samples_path, shard, model_dir, model_name, device, threads, out, log) -> None:
    import sys
    import time

    from tqdm import tqdm

    from actpat.models import load_checkpoint, pick_device, weight_layout
    from actpat.provenance import scores_attrs
    from actpat.samples import shard_slices
    from actpat.sketch import HASH_VERSION
    from actpat.store import open_samples, write_scores

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = pick_device(device)
    samples = open_samples(samples_path)
    slices = shard_slices(samples.sizes["sample"], job.shard_size or 0, job.n_shards or 0)
    if not 0 <= shard < len(slices):
        raise ActpatError(f"shard {shard} does not exist: {samples_path} has {len(slices)} shards")
    rows = samples.isel(sample=slices[shard])
    t0 = time.time()
    model, _, checkpoint = load_checkpoint(model_dir, job.scoring.compute_dtype, device)
    layout = weight_layout(model)
    log(f"{samples.attrs['domain']} shard {shard}: {rows.sizes['sample']} samples of {rows.sizes['position']} tokens, "
        f"{checkpoint['architecture']} on {device} ({job.scoring.compute_dtype}), loaded in {time.time() - t0:.1f}s")
    scorer = ShardScorer(model, layout, job.scoring, cache_hashes=device == "cpu")
    token_ids = rows["token_ids"].values
    lengths = rows["length"].values if "length" in rows else np.full(len(token_ids), token_ids.shape[1])
    ids = rows["sample"].values
    results = []
    for row, length, sample_id in tqdm(zip(token_ids, lengths, ids), total=len(ids), desc="scoring", unit="sample",
                                       file=sys.stderr, mininterval=5, ascii=True):
        input_ids = torch.as_tensor(np.asarray(row[:length], dtype=np.int64), device=device)[None]
        results.append(scorer.score(input_ids, str(sample_id)))
    log(f"scored {len(results)} samples in {time.time() - t0:.1f}s; writing {out}")
    attrs = scores_attrs(model_name, checkpoint, samples.attrs, shard, job, device, threads, HASH_VERSION)
    write_scores(out, layout, scorer.sums, rows, results, job.scoring.thresholds, attrs, job.scoring.relative_multiples)
    log(f"done in {time.time() - t0:.1f}s")
