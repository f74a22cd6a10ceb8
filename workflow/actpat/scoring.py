"""The activation score of the paper: s = w · ∂D/∂w for every scored weight matrix, formed inside
one batched backward pass.

No weight requires grad and no weight gradient is ever stored. The forward pass keeps each scored
linear module's input x; the backward pass hands each module its output gradient δ; the weight
gradient of sample b is then Σ_t δ_bt x_btᵀ, formed for the batch one module at a time, turned into
|w · g| in float32 (whatever the compute dtype) and reduced at once, before the next module:

* added to a float32 accumulator (exact Σ|s| over the shard's samples, per weight), which lives on
  the weight's device (a model spread over GPUs keeps each layer's sums beside the layer);
* reduced to per-sample statistics per layer and matrix: L1 and L2 (row or tile sums in float32,
  summed in float64), counts above the absolute thresholds, exact zeros;
* added to the layer's CountSketch (``actpat.sketch``), from which LLMDcos between any two
  samples is estimated later.

Once the backward pass is done, each sample's model-wide mean score is known, and a second pass
counts exactly the weights above each multiple of it (the relative counts).

On the CPU the first pass is one pass per weight (``actpat.fused``); on a GPU one Triton kernel per
matrix (``actpat.triton_kernels``), which forms each tile of the gradient itself; the torch path
(``_reduce_eager``) is the reference.

Several samples share one forward/backward pass. Samples of different lengths are padded on the
right with an attention mask: padded positions feed no real position, so their output gradient is
zero and a padded sample scores as it would alone. Memory: weights, the float32 sums, per module
batch × rows × cols × 4 bytes for the batch's weight gradients (none with the ``triton`` kernel),
the activations, and the scored modules' inputs and output gradients kept for the second pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from actpat import fused, triton_kernels
from actpat.decoder import WeightLayout
from actpat.errors import ActpatError
from actpat.modeljob import JobRuntime, ModelRef
from actpat.settings import Scoring
from actpat.sketch import LayerHasher, sketch_into

class NumericalError(ActpatError):
    """A non-finite score: it would poison every sum it enters."""


@dataclass(frozen=True)
class Target:
    """A scalar D to differentiate. ``last_only``: D needs the logits of each sample's last real
    position only (the head is applied to those hidden states alone); ``value`` maps (logits,
    input ids, mask) of a batch to (D per sample, token per sample)."""

    last_only: bool
    value: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _max_logit(logits, input_ids, mask):
    """The paper's D: the largest next-token logit at the last position (and its token)."""
    value, token = logits.float().max(dim=-1)
    return value, token


def _mean_loglik(logits, input_ids, mask):
    """The mean log-likelihood of each sample's own next tokens (no single token: -1)."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    m = mask[:, 1:].float()
    return (logprobs * m).sum(1) / m.sum(1), torch.full((len(input_ids),), -1, device=logits.device)


# the scoring targets (the schema's enum equals these keys; tested)
TARGETS: dict[str, Target] = {
    "max_logit": Target(last_only=True, value=_max_logit),
    "mean_loglik": Target(last_only=False, value=_mean_loglik),
}


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
    hidden_mean: np.ndarray | None = None  # (layer + 1, hidden) float32, mean over real positions


# How a half-precision batch's per-sample gradients are multiplied on CUDA (``benchmarks/gpu_check.py``
# times each): "auto" (bf16/fp16 operands with a float32 result where torch has it, else "tf32"),
# "tf32" (operands widened to float32, TensorFloat-32 products), "float32" (plain float32 matmul).
# All three give exact products of the half-precision operands (8 or 11 significant bits fit in
# TF32's 11 and float32's 24) summed in float32: they differ in the order of the sums only.
GRAD_MATMUL = "auto"


def _linear_grad(module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients (batch, *weight.shape) of a linear map, float32: Σ_t δ_t x_tᵀ."""
    if type(module).__name__ == "Conv1D":  # GPT-2 stores the transpose: weight (in, out)
        a, b = x.transpose(1, 2), delta
    else:
        a, b = delta.transpose(1, 2), x
    if a.device.type == "cuda" and a.dtype in (torch.bfloat16, torch.float16) and b.dtype == a.dtype:
        return _half_bmm(a, b, GRAD_MATMUL)
    return torch.bmm(a.float(), b.float())


def _half_bmm(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """a @ b of half-precision CUDA operands as float32, by ``mode`` (see GRAD_MATMUL)."""
    if mode == "auto":
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # a torch without bmm's out_dtype
            mode = "tf32"
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = mode == "tf32"
    try:
        return torch.bmm(a.float(), b.float())
    finally:
        matmul.allow_tf32 = before


KERNELS = ("auto", "fused", "eager", "triton", "triton-gradients")


class ShardScorer:
    """Scores batches of samples and accumulates Σ|s| per weight in float32.

    ``kernel``: how a matrix's scores are reduced: ``fused`` (the CPU, ``actpat.fused``: one pass
    per weight over the batch's gradients), ``triton`` (a GPU, ``actpat.triton_kernels``: each
    gradient tile formed and reduced in one kernel, never written to memory), ``triton-gradients``
    (a GPU: the batch's gradients formed by a batched matmul, then reduced by one kernel),
    ``eager`` (torch operations: the reference), or ``auto`` (fused on the CPU where numba is
    available, triton on CUDA where triton is, else eager).

    The relative counts (weights above a multiple of the sample's model-wide mean score) need that
    mean, which is known only when the whole backward pass is done: the scorer keeps each scored
    module's inputs and output gradients until then, and counts in a second pass over the gradients
    formed again from them (``_count_relative``): exact counts, for the memory of the batch's
    activations once more (``benchmarks/scoring_memory.py``)."""

    def __init__(self, model: nn.Module, layout: WeightLayout, settings: Scoring, kernel: str = "auto"):
        if settings.target not in TARGETS:
            raise ActpatError(f"unknown target {settings.target!r}; choose one of {', '.join(TARGETS)}")
        self.model, self.layout, self.settings = model, layout, settings
        self.target = TARGETS[settings.target]
        self.modules = [[model.get_submodule(f"{layout.layer_prefix}.{i}.{m}") for m in layout.matrices]
                        for i in range(layout.n_layers)]
        for p in model.parameters():
            p.requires_grad_(False)
        self.sums = [[torch.zeros(mod.weight.shape, dtype=torch.float32, device=mod.weight.device) for mod in layer]
                     for layer in self.modules]
        self.hasher = LayerHasher(layout.shapes, settings.sketch_size, settings.sketch_seed)
        self.n_samples = 0
        self.kernel = _pick_kernel(kernel, {str(p.device) for p in model.parameters()})
        self.fused = self.kernel == "fused"
        self._chunks = fused.set_threads(torch.get_num_threads()) if self.fused else 1
        self._thresholds = np.asarray(settings.thresholds, np.float32)
        self._scratch: dict[str, np.ndarray] = {}
        self._device_thresholds: dict[str, torch.Tensor] = {}
        self._where = {id(mod): (i, j) for i, layer in enumerate(self.modules) for j, mod in enumerate(layer)}

    # --- one batch -----------------------------------------------------------------------------

    def score_batch(self, input_ids: torch.Tensor, lengths, sample_ids: list[str] | None = None) -> list[SampleScores]:
        """Score a batch: ``input_ids`` (batch, positions), each row padded on the right beyond its
        ``lengths[b]`` real tokens (any pad id)."""
        device = input_ids.device
        b_size, width = input_ids.shape
        lengths = torch.as_tensor(lengths, device=device)
        mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
        L, M = self.layout.n_layers, len(self.layout.matrices)
        st = {
            "l1": torch.zeros(b_size, L, M, dtype=torch.float64), "l2": torch.zeros(b_size, L, M, dtype=torch.float64),
            "above": torch.zeros(b_size, L, M, len(self.settings.thresholds), dtype=torch.int64),
            "zeros": torch.zeros(b_size, L, M, dtype=torch.int64),
        }
        sketches = [None] * L
        inputs: dict[int, torch.Tensor] = {}
        kept: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []  # for the relative counts
        handles = []
        lengths32 = lengths.to(torch.int32)

        def keep_input(module, args, output):
            inputs[id(module)] = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad, module=module: on_grad(module, grad))

        def on_grad(module, delta):
            i, j = self._where[id(module)]
            x = inputs.pop(id(module))
            with torch.no_grad():
                self._reduce(module, x, delta, lengths32, i, j, st, sketches)
            if self.settings.relative_multiples:
                kept.append((module, x, delta))

        def grad_from_embeddings(module, args, output):
            return output.detach().requires_grad_(True)

        for layer in self.modules:
            for mod in layer:
                handles.append(mod.register_forward_hook(keep_input))
        handles.append(self.model.get_input_embeddings().register_forward_hook(grad_from_embeddings))
        try:
            value, token, hidden = self._forward(input_ids, mask, lengths)
            value.sum().backward()
        finally:
            for h in handles:
                h.remove()
            inputs.clear()
        _gather(st)
        with torch.no_grad():
            above_rel = self._count_relative(kept, lengths32, st["l1"])
        kept.clear()
        # the fused kernel's per-chunk sketches, added up
        sketches = [torch.from_numpy(sk.sum(0)) if isinstance(sk, np.ndarray) else sk for sk in sketches]
        return self._results(st, above_rel, sketches, value, token, hidden, sample_ids or [str(n) for n in range(b_size)])

    def score(self, input_ids: torch.Tensor, sample_id: str = "?") -> SampleScores:
        """One unpadded sample (batch of 1)."""
        return self.score_batch(input_ids, [input_ids.shape[1]], [sample_id])[0]

    # --- pieces ----------------------------------------------------------------------------------

    def _forward(self, input_ids, mask, lengths):
        base = getattr(self.model, self.model.base_model_prefix)
        out = base(input_ids=input_ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        head = self.model.get_output_embeddings()
        rows = torch.arange(len(input_ids), device=input_ids.device)
        if self.target.last_only:
            logits = head(out.last_hidden_state[rows, lengths - 1])
        else:
            logits = head(out.last_hidden_state)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        value, token = self.target.value(logits, input_ids, mask)
        m = mask[..., None].float()
        hidden = torch.stack([(h.detach().float() * m).sum(1) / m.sum(1) for h in out.hidden_states], dim=1)
        return value, token, hidden.cpu().numpy()

    def _reduce(self, module, x, delta, lengths, i: int, j: int, st: dict, sketches: list) -> None:
        """The first pass over one matrix's scores of the batch, by the scorer's kernel."""
        weight = module.weight.detach()
        if self.kernel == "triton":
            self._reduce_triton(weight, i, j, st, sketches, pq=triton_kernels.operands(module, x, delta),
                                lengths=lengths)
            return
        g = _linear_grad(module, x, delta)
        if self.kernel == "triton-gradients":
            self._reduce_triton(weight, i, j, st, sketches, g=g)
        elif self.fused and g.device.type == "cpu":
            self._reduce_fused(g, weight, i, j, st, sketches)
        else:
            self._reduce_eager(g.mul_(weight.float()).abs_(), i, j, st, sketches)  # |w · g|, in place of g

    def _batch_sketch(self, sketches: list, i: int, b_size: int, device) -> torch.Tensor:
        if sketches[i] is None:
            sketches[i] = torch.zeros(b_size, self.settings.sketch_size, dtype=torch.float32, device=device)
        return sketches[i]

    def _reduce_triton(self, weight, i, j, st, sketches, g=None, pq=None, lengths=None) -> None:
        """``_reduce_eager``'s results by one Triton kernel (``actpat.triton_kernels``): partial
        sums per tile, added here in float64 (L1, L2) and int64 (counts)."""
        b_size = len(g) if g is not None else len(pq[0])
        device = weight.device
        thresholds = self._device_thresholds.setdefault(str(device), torch.as_tensor(self._thresholds, device=device))
        sketch = self._batch_sketch(sketches, i, b_size, device)
        part = triton_kernels.reduce(weight, self.sums[i][j], thresholds, self.hasher.codes(i, j, device), sketch,
                                     g=g, pq=pq, lengths=lengths)
        d = _on_device(st, device)
        d["l1"][:, i, j] = part["l1"].double().sum(0)
        d["l2"][:, i, j] = part["l2"].double().sum(0).sqrt()
        d["above"][:, i, j] = part["above"].long().sum(0)
        d["zeros"][:, i, j] = part["zeros"].long().sum(0)

    def _reduce_fused(self, g: torch.Tensor, weight: torch.Tensor, i: int, j: int, st: dict, sketches: list) -> None:
        """``_reduce_eager``'s results from the gradients g (batch, rows, cols) in one pass
        (``actpat.fused``). Its partial outputs live in buffers made once per batch size and
        zeroed before use (a fresh allocation per matrix left the allocator holding more memory at
        the peak)."""
        b_size, chunks, k = len(g), self._chunks, self.settings.sketch_size
        if not self._scratch or self._scratch["l1"].shape[1] != b_size:
            self._scratch = {
                "l1": np.zeros((chunks, b_size)), "l2": np.zeros((chunks, b_size)),
                "above": np.zeros((chunks, b_size, len(self._thresholds)), dtype=np.int64),
                "zeros": np.zeros((chunks, b_size), dtype=np.int64),
                "sketch": np.zeros((self.layout.n_layers, chunks, b_size, k), dtype=np.float32),
            }
        part = self._scratch
        for key in ("l1", "l2", "above", "zeros"):
            part[key].fill(0)
        if sketches[i] is None:
            sketches[i] = part["sketch"][i]
            sketches[i].fill(0)
        codes = tuple(c.numpy() for c in self.hasher.codes(i, j, "cpu"))
        fused.reduce_batch(g.contiguous().numpy(), weight.float().contiguous().numpy(), self.sums[i][j].numpy(),
                           self._thresholds, codes, part["l1"], part["l2"], part["above"], part["zeros"], sketches[i])
        st["l1"][:, i, j] = torch.from_numpy(part["l1"].sum(0))
        st["l2"][:, i, j] = torch.from_numpy(np.sqrt(part["l2"].sum(0)))
        st["above"][:, i, j] = torch.from_numpy(part["above"].sum(0))
        st["zeros"][:, i, j] = torch.from_numpy(part["zeros"].sum(0))

    def _reduce_eager(self, s: torch.Tensor, i: int, j: int, st: dict, sketches: list) -> None:
        """Everything the store keeps from one matrix's scores of a batch (batch, rows, cols).
        Counts go one sample at a time through count_nonzero, which counts without converting the
        comparison's booleans to int64 (a sum over a boolean tensor copies it). The statistics stay
        on the scores' device until the batch is done (``_on_device``): a copy to the host per
        matrix would wait for the GPU each time."""
        acc = self.sums[i][j]
        for b in range(len(s)):
            acc.add_(s[b])
        d = _on_device(st, s.device)
        d["l1"][:, i, j] = s.sum(-1).double().sum(-1)
        d["l2"][:, i, j] = torch.linalg.vector_norm(s, dim=-1).double().square().sum(-1).sqrt()
        sketch_into(self._batch_sketch(sketches, i, len(s), s.device), s, self.hasher.codes(i, j, s.device))
        for b in range(len(s)):
            flat = s[b].reshape(-1)
            for t, thr in enumerate(self.settings.thresholds):
                d["above"][b, i, j, t] = torch.count_nonzero(flat > thr)
            d["zeros"][b, i, j] = flat.numel() - torch.count_nonzero(flat)

    def _count_relative(self, kept: list, lengths: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """The second pass: per sample, layer and matrix, the weights whose score exceeds each
        multiple of the sample's model-wide mean score (Σ L1 / weights), counted exactly on |w·g|
        formed again from the kept inputs and output gradients, the same way as in the first pass.
        The float64 threshold t is compared as the largest float32 not above it, t₃₂: for a
        float32 score s, s > t exactly when s > t₃₂."""
        multiples = self.settings.relative_multiples
        b_size, L, M = l1.shape
        out = torch.zeros(b_size, L, M, len(multiples), dtype=torch.int64)
        if not multiples:
            return out
        mean = l1.sum((1, 2)).numpy() / (self.layout.weights_per_layer * L)
        thresholds = float32_below(np.outer(mean, multiples))  # (batch, multiple)
        on_device: dict[str, torch.Tensor] = {}
        for module, x, delta in kept:
            i, j = self._where[id(module)]
            weight = module.weight.detach()
            device = weight.device
            dev_out = out if device.type == "cpu" else on_device.setdefault(str(device), torch.zeros_like(out, device=device))
            relative = torch.as_tensor(thresholds, device=device)
            if self.kernel == "triton":
                counts = triton_kernels.count_above(weight, relative, pq=triton_kernels.operands(module, x, delta),
                                                    lengths=lengths).long().sum(0)
            else:
                g = _linear_grad(module, x, delta)
                if self.kernel == "triton-gradients":
                    counts = triton_kernels.count_above(weight, relative, g=g).long().sum(0)
                elif self.fused and g.device.type == "cpu":
                    part = np.zeros((self._chunks, b_size, len(multiples)), dtype=np.int64)
                    fused.count_above(g.contiguous().numpy(), weight.float().contiguous().numpy(), thresholds, part)
                    counts = torch.from_numpy(part.sum(0))
                else:
                    s = g.mul_(weight.float()).abs_()
                    counts = torch.stack([torch.stack([torch.count_nonzero(s[b] > relative[b, t])
                                                       for t in range(len(multiples))]) for b in range(b_size)])
            dev_out[:, i, j] = counts
        for v in on_device.values():
            out += v.cpu()
        return out

    def _results(self, st, above_rel, sketches, value, token, hidden, sample_ids) -> list[SampleScores]:
        l1 = st["l1"].numpy()
        bad = ~np.isfinite(l1)
        if bad.any():
            b, i, j = (int(v[0]) for v in np.nonzero(bad))
            raise NumericalError(f"sample {sample_ids[b]}: non-finite score in layer {i} ({self.layout.matrices[j]})")
        out = []
        for b in range(len(sample_ids)):
            sketch = torch.stack([sk[b] for sk in sketches]).cpu().numpy()
            out.append(SampleScores(float(value[b].detach()), int(token[b]), l1[b], st["l2"][b].numpy(),
                                    st["above"][b].numpy(), above_rel[b].numpy(), st["zeros"][b].numpy(), sketch,
                                    hidden[b]))
        self.n_samples += len(out)
        return out


def float32_below(values: np.ndarray) -> np.ndarray:
    """Each value as the largest float32 not above it (float64 in, float32 out)."""
    values = np.asarray(values, np.float64)
    down = values.astype(np.float32)
    over = down.astype(np.float64) > values
    down[over] = np.nextafter(down[over], np.float32(-np.inf))
    return down


def _pick_kernel(kernel: str, devices: set[str]) -> str:
    """The kernel ``auto`` means for a model on ``devices``; a named kernel checked against them."""
    if kernel not in KERNELS:
        raise ActpatError(f"unknown kernel {kernel!r}: {', '.join(KERNELS)}")
    cuda = any(d.startswith("cuda") for d in devices)
    if kernel == "auto":
        if cuda:
            return "triton" if all(triton_kernels.available(d) for d in devices) else "eager"
        return "fused" if fused.available() else "eager"
    if kernel == "fused" and not fused.available():
        raise ActpatError("the fused kernel needs numba (pip install numba), and ACTPAT_EAGER unset")
    if kernel == "fused" and cuda:
        raise ActpatError("the fused kernel runs on the CPU; a model on a GPU takes kernel triton or eager")
    if kernel.startswith("triton") and not all(triton_kernels.available(d) for d in devices):
        raise ActpatError(f"kernel {kernel} needs triton and a CUDA device (or TRITON_INTERPRET=1 on the CPU)")
    return kernel


def _gather(st: dict) -> None:
    """Add the statistics that each device kept (``_on_device``) into the host's ``st``."""
    for d in st.pop("devices", {}).values():  # each (layer, matrix) was written on one device
        for key, v in d.items():
            st[key] += v.cpu()


def _on_device(st: dict, device: torch.device) -> dict:
    """The batch's statistics (``st``, on the host) as zeroed copies on ``device`` (made once per
    device and batch; ``_results`` adds them up), or ``st`` itself on the CPU."""
    if device.type == "cpu":
        return st
    on = st.setdefault("devices", {})
    if str(device) not in on:
        on[str(device)] = {key: torch.zeros_like(v, device=device) for key, v in st.items() if key != "devices"}
    return on[str(device)]


# ----------------------------------------------------------------------------------------------
# The job


def batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Sample indices in batches of up to ``batch_size``, longest first within the shard's order
    of lengths (little padding); the results are put back in the shard's order by the caller."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[a:a + batch_size] for a in range(0, len(order), batch_size)]


def compute_dtype(requested: str, device: str) -> str:
    """``auto``: float32 on the CPU (bfloat16 matmuls are not faster there for this work), bfloat16
    on CUDA (the sums accumulate in float32 either way)."""
    if requested != "auto":
        return requested
    return "bfloat16" if device == "cuda" else "float32"


# samples per forward/backward pass when the config leaves it open (resources.score_batch_size:
# null), by device; chosen with benchmarks/scoring_throughput.py
DEFAULT_BATCH = {"cpu": 4, "cuda": 16}


@dataclass(frozen=True)
class Shard:
    """A score_shard job's files: the domain's samples store, which of its shards, and the score
    store it writes."""

    samples: Path
    index: int
    out: Path


def score_shard(job, model: ModelRef, shard: Shard, runtime: JobRuntime) -> None:
    """The score_shard job (``job``: ``actpat.settings.ScoringJob``): score one shard of a samples
    store and write its score store."""
    from actpat.store import exclusive

    with exclusive(shard.out):  # one writer per store, from the first sample on
        _score_shard(job, model, shard, runtime)


def _score_shard(job, model: ModelRef, shard: Shard, runtime: JobRuntime) -> None:
    import sys

    from tqdm import tqdm

    from actpat.modeljob import start
    from actpat.provenance import scores_attrs
    from actpat.samples import length_span, shard_slices
    from actpat.sketch import GROUP_ROWS, HASH_VERSION
    from actpat.store import open_samples, sample_lengths, sample_tokens, write_scores

    log = runtime.log
    samples = open_samples(shard.samples)
    slices = shard_slices(samples.sizes["sample"], job.shard_size or 0, job.n_shards or 0)
    if not 0 <= shard.index < len(slices):
        raise ActpatError(f"shard {shard.index} does not exist: {shard.samples} has {len(slices)} shards")
    rows = samples.isel(sample=slices[shard.index])
    loaded = start(f"scoring {samples.attrs['domain']} shard {shard.index}", model, runtime,
                   lambda device: compute_dtype(job.scoring.compute_dtype, device), spread=True)
    batch_size = runtime.batch_size or DEFAULT_BATCH.get(loaded.device, 1)
    placed = sorted({str(p.device) for p in loaded.model.parameters()})
    tokens, lengths = sample_tokens(rows), sample_lengths(rows)
    log(f"{rows.sizes['sample']} samples of {length_span(lengths)} tokens on {', '.join(placed)}, batches of {batch_size}")
    scorer = ShardScorer(loaded.model, loaded.layout, job.scoring)
    ids = [str(x) for x in rows["sample"].values]
    results: list[SampleScores | None] = [None] * len(ids)
    first = loaded.model.get_input_embeddings().weight.device
    with tqdm(total=len(ids), desc="scoring", unit="sample", file=sys.stderr, mininterval=5, ascii=True) as bar:
        for idx in batches(lengths, batch_size):
            width = int(lengths[idx].max())
            batch = np.zeros((len(idx), width), dtype=np.int64)
            for r, n in enumerate(idx):
                batch[r, : lengths[n]] = tokens[n]
            scored = scorer.score_batch(torch.as_tensor(batch, device=first), lengths[idx], [ids[n] for n in idx])
            for n, res in zip(idx, scored):
                results[n] = res
            bar.update(len(idx))
    log(f"scored {len(results)} samples in {loaded.seconds():.1f}s; writing {shard.out}")
    attrs = scores_attrs(model.name, loaded.checkpoint, samples.attrs, shard.index, job, loaded.device, runtime.threads,
                         HASH_VERSION)
    attrs |= {"batch_size": batch_size, "dtype": loaded.dtype, "devices": placed, "kernel": scorer.kernel,
              "sketch_group_rows": GROUP_ROWS,
              "count_above_rel": "exact: counted in a second pass once each sample's mean score is known"}
    write_scores(shard.out, loaded.layout, scorer.sums, rows, results, job.scoring.thresholds, attrs, job.scoring.relative_multiples)
    log(f"done in {loaded.seconds():.1f}s")
