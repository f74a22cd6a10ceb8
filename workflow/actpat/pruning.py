"""Pruning a model layer by layer (validations 1 and 2), and the prune job.

A method (``actpat.methods``) is a base (``actpat.bases``: which weights of a matrix go) and an
allocation (``actpat.allocations``: each layer's sparsity). ``structure`` is ``unstructured`` or
N:M (N of every M consecutive input weights of a row are zeroed; the sparsity is then N/M).
Calibration runs layer by layer: the inputs of the current layer for all windows are the only
activations held, and each layer's calibration input is the output of the already pruned previous
layer (as in Wanda).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from actpat import methods
from actpat.allocations import AllocationInputs
from actpat.bases import InputNorms, wanda_metric
from actpat.decoder import WeightLayout, find_decoder_layers, layer_weights
from actpat.errors import PruningError
from actpat.methods import PruningMethod, parse_structure
from actpat.modeljob import JobRuntime, ModelRef


class _Stop(Exception):
    pass


class _Calibration(NamedTuple):
    """What calibrated pruning runs the layers with: the decoder layers, their scored modules, the
    first layer's inputs for every window and the arguments the model passes to its layers."""

    layers: nn.ModuleList
    modules: list[list[nn.Module]]
    hidden: torch.Tensor
    call: dict


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


def _collect(layer: nn.Module, modules: list[nn.Module], make: Callable[[nn.Module], object], hidden: torch.Tensor,
             call: dict, output: bool = True, share: bool = True) -> tuple[list, torch.Tensor | None]:
    """Run the layer on every window with a statistic per distinct input fed that input
    (``add_batch``); returns each module's statistic and the layer's output. Modules that read the
    same tensor (the same object, not modified in place since: q, k and v of a Llama layer, gate and
    up) share one statistic (``make(module)`` of the first of them), fed once per window: what the
    forward hooks receive decides it on the first window, not the modules' names, and every later
    window must agree. ``share=False``: one statistic per module (each fed its own copy of the sums).
    Without ``output`` a window's pass stops once every module has had its input (in a Llama layer
    before the down projection's product, a quarter of its matrix work)."""
    statistics: list = [None] * len(modules)
    names = {id(m): n for n, m in layer.named_modules()}
    seen: list[tuple[torch.Tensor, int, object]] = []  # this window's inputs so far: (tensor, its version, statistic)
    fed: set[int] = set()

    def take(j: int, module: nn.Module, args) -> None:
        x = args[0]
        owner = next((st for y, version, st in seen if y is x and x._version == version), None) if share else None
        if owner is None:  # the first module to read x in this window
            if statistics[j] is None:
                statistics[j] = make(module)
            elif any(statistics[j] is st for *_, st in seen):
                raise PruningError(f"{names[id(module)]} read another input than the modules it shared one with on the "
                                   "first calibration window")
            statistics[j].add_batch(x.detach())
            seen.append((x, x._version, statistics[j]))
        elif statistics[j] is None:
            statistics[j] = owner
        elif statistics[j] is not owner:
            raise PruningError(f"{names[id(module)]} read the input of another module, unlike on the first calibration window")
        fed.add(j)
        if not output and len(fed) == len(modules):
            raise _Stop

    handles = [mod.register_forward_pre_hook(lambda module, args, j=j: take(j, module, args))
               for j, mod in enumerate(modules)]
    out = torch.empty_like(hidden) if output else None
    try:
        with torch.no_grad():
            for j in range(hidden.shape[0]):
                fed.clear()
                seen.clear()
                try:
                    y = layer(hidden[j : j + 1], *call["args"], **call["kwargs"])
                except _Stop:
                    continue
                if len(fed) != len(modules):
                    raise PruningError("a calibration pass did not reach every matrix of the layer")
                out[j : j + 1] = y[0] if isinstance(y, tuple) else y
    finally:
        seen.clear()
        for h in handles:
            h.remove()
    return statistics, out


def _dense_layer_scores(layers, modules, hidden, call, statistic: Callable[[list[torch.Tensor]], float]) -> np.ndarray:
    """One value per layer from the dense model: ``statistic`` of the Wanda scores of the layer's
    matrices, each layer's inputs the dense previous layer's outputs (OWL's and DLP's signal)."""
    values = []
    for layer, mods in zip(layers, modules):
        norms, hidden = _collect(layer, mods, InputNorms, hidden, call)
        values.append(statistic([wanda_metric(mod.weight, n.sums) for mod, n in zip(mods, norms)]))
    return np.asarray(values, dtype=np.float64)


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
    # [layer][matrix] for bases that change the kept weights: their values in the mask's order (the
    # kept entries row by row), 1-D, in the checkpoint's dtype (``precision``)
    kept: list | None = None


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
    precision: str | None = None,
) -> PruneResult:
    """Prune ``model`` in place; returns the per-layer targets and the measured sparsities.
    ``calibration`` (window, position) token ids are needed by calibrated methods; ``inputs`` holds
    what the method's allocation uses (bounds (0, 0.99) and nothing else by default);
    ``base_options`` are the base's settings (SparseGPT: ``block``, ``damp``); ``precision`` is the
    dense checkpoint's dtype, to which a base that changes the kept weights rounds them (None: the
    model's own)."""
    if isinstance(method, str):
        method = methods.method(method)
    if not 0.0 <= sparsity < 1.0:
        raise PruningError(f"sparsity {sparsity} is outside [0, 1)")
    nm = parse_structure(structure)
    if nm and method.allocation != "uniform":
        raise PruningError(f"N:M structure applies to uniform allocations, not {method.name} (its sparsity varies by layer)")
    target = nm[0] / nm[1] if nm else sparsity
    base = method.base_declaration.implementation(**(base_options or {}))
    if precision and base.changes_weights:
        from actpat.models import torch_dtype

        base.precision = torch_dtype(precision)
    _, layers = find_decoder_layers(model)
    weights = layer_weights(model, layout)
    device = weights[0][0].device
    inputs = inputs or AllocationInputs(layout.n_layers, (0.0, 0.99))
    inputs.weights = weights
    passes = None
    if method.calibrated:
        if calibration is None or len(calibration) == 0:
            raise PruningError(f"{method.name} needs calibration windows")
        modules = [_linear_modules(layer, layout) for layer in layers]
        passes = _Calibration(layers, modules, *_first_layer_inputs(model, layers, calibration, device))
        inputs.layer_scores = lambda statistic: _dense_layer_scores(*passes, statistic)
        inputs.trial = lambda ratios: _trial(model, weights, layout, base, ratios, nm, calibration, passes)
    allocation, details = method.allocation_declaration.implementation(target, inputs)
    ratios = allocation.ratios
    if len(ratios) != layout.n_layers:
        raise PruningError(f"{method.name}: {len(ratios)} layer sparsities for {layout.n_layers} layers")
    result = _prune_layers(weights, layout, base, ratios, nm, passes, progress, keep=True)
    check_sparsity(ratios, result.actual, result.expected, layout)
    result.allocation = details
    return result


def _prune_layers(weights, layout: WeightLayout, base, ratios: np.ndarray, nm, passes: _Calibration | None,
                  progress=None, keep: bool = False) -> PruneResult:
    """Prune layer ``i`` to ``ratios[i]``, first to last; with ``passes`` each layer's calibration
    statistics are fed the pruned previous layer's outputs. With ``keep`` the masks (packed bits)
    and the kept weights' values (where the base changes them) are kept for the mask store."""
    n_layers = layout.n_layers
    expected, actual, zeros_after = np.zeros(n_layers), np.zeros(n_layers), np.zeros(n_layers)
    sizes = np.asarray([r * c for r, c in layout.shapes], dtype=np.float64)
    packed: list[list[np.ndarray]] = []
    kept: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    if passes:
        layers, modules, hidden, call = passes
    for i in range(n_layers):
        statistics = [None] * len(layout.matrices)
        if passes:
            statistics, _ = _collect(layers[i], modules[i], base.statistic, hidden, call, output=False)
        masked = np.zeros(len(layout.matrices))
        packed.append([])
        with torch.no_grad():
            for j, w in enumerate(weights[i]):
                mask = base.prune(w, statistics[j], ratios[i], nm)
                masked[j] = mask.sum().item()
                zeros_after[i] += (w == 0).sum().item()
                if keep:
                    packed[i].append(np.packbits(mask.cpu().numpy(), axis=1, bitorder="little"))
                    if base.changes_weights:
                        kept[i].append(w.detach().masked_select(~mask).to(base.precision or w.dtype).cpu())
        shares = [base.expected_share(s, ratios[i], nm) for s in layout.shapes]
        expected[i] = float(np.dot(shares, sizes) / sizes.sum())
        actual[i] = masked.sum() / sizes.sum()
        zeros_after[i] /= sizes.sum()
        if passes:
            hidden = _run_layer(layers[i], hidden, call)  # the pruned layer feeds the next one
        if progress:
            progress(i)
    return PruneResult(ratios, actual, expected, zeros_after, {}, packed, kept if base.changes_weights and keep else None)


def _trial(model: nn.Module, weights, layout: WeightLayout, base, ratios: np.ndarray, nm, calibration: torch.Tensor,
           passes: _Calibration) -> float:
    """The model pruned with these layer sparsities, scored by the mean next-token NLL of the
    calibration windows (nats per token: the log of their perplexity; +inf where it is not
    finite); the dense weights are restored afterwards (a copy of the scored weights is held)."""
    from actpat.evaluate import summed_nll

    dense = [[w.detach().clone() for w in layer] for layer in weights]
    try:
        _prune_layers(weights, layout, base, ratios, nm, passes)
        device = weights[0][0].device
        total = 0.0
        with torch.no_grad():
            for window in calibration:
                ids = window.unsqueeze(0).to(device)
                total += summed_nll(model(ids, use_cache=False).logits[0, :-1], ids[0, 1:])
        nll = total / (calibration.shape[0] * (calibration.shape[1] - 1))
        return nll if np.isfinite(nll) else float("inf")
    finally:
        with torch.no_grad():
            for layer, saved in zip(weights, dense):
                for w, d in zip(layer, saved):
                    w.copy_(d)


def check_sparsity(ratios: np.ndarray, actual: np.ndarray, expected: np.ndarray, layout: WeightLayout) -> None:
    """Fail loudly when a layer's zeroed share misses its target by more than integer rounding."""
    tol = max(0.5 / c for _, c in layout.shapes) + 1e-9
    for i, (r, a, e) in enumerate(zip(ratios, actual, expected)):
        if abs(a - e) > 1e-9 or abs(a - r) > tol:
            raise PruningError(
                f"layer {i}: pruned {a:.6f} of its weights, target {r:.6f} (expected {e:.6f} after rounding)"
            )


# ----------------------------------------------------------------------------------------------
# The prune job


COMPUTE_DTYPE = "float32"  # the prune job's model (SparseGPT computes in float64 inside it)


@dataclass(frozen=True)
class PruneFiles:
    """A prune job's files: what it reads besides the model, and the pruned model it writes."""

    calibration: Path | None  # the calibration windows (calibrated methods)
    density: Path | None  # a domain's density store (the density allocations)
    mask: Path  # written: the pruned model as a mask store
    report: Path  # written: pruning.json, the per-layer targets and sparsities


def prune_checkpoint(job, model: ModelRef, files: PruneFiles, runtime: JobRuntime) -> dict:
    """The prune job (``job``: ``actpat.settings.PruneJob``): prune a prepared checkpoint with the
    run's method; write the pruned model as a mask store (the dense checkpoint plus the mask is the
    pruned model) and a report of per-layer targets and sparsities. Pruning computes in float32;
    weights it changes are rounded to the checkpoint's dtype and stored in it."""
    import sys

    from tqdm import tqdm

    from actpat.modeljob import start
    from actpat.provenance import check_made_for, code_version, mask_attrs
    from actpat.results import write_json
    from actpat.settings_json import decode
    from actpat.store import content_id, open_reduction, open_samples, window_tokens, write_mask

    run, log = job.run, runtime.log
    loaded = start(f"pruning {run.key}", model, runtime, COMPUTE_DTYPE)
    layout = loaded.layout
    report = {"model": model.name, "run": run.key, "method": run.method, "structure": run.structure,
              "target_sparsity": run.sparsity, "checkpoint_sha256": loaded.checkpoint["checkpoint_sha256"],
              "code_version": code_version(), "device": loaded.device}
    declared = methods.method(run.method).allocation_declaration
    settings = decode(declared.settings, job.allocation) if declared.settings else None
    inputs = AllocationInputs(layout.n_layers, tuple(job.bounds), settings=settings,
                              density=open_reduction(files.density) if files.density else None)
    base_options = dict(job.base or {})
    if base_options:
        report["base_options"] = base_options
    calibration = None
    if files.calibration:
        cal = open_samples(files.calibration)
        check_made_for(files.calibration, cal.attrs, PruningError, domain=run.calibration, purpose="calibration")
        calibration = torch.as_tensor(window_tokens(cal).astype(np.int64))
        report["calibration"] = {"store": str(files.calibration), "domain": cal.attrs["domain"],
                                 "windows": int(calibration.shape[0]), "seq_len": int(calibration.shape[1]),
                                 "seed": cal.attrs["seed"], "sample_ids": cal["sample"].values.tolist()}
    log(f"{run.method} {run.structure} to {run.sparsity:.3f}, {layout.n_layers} layers"
        + (f", {len(calibration)} calibration windows of {calibration.shape[1]} tokens" if calibration is not None else ""))
    bar = tqdm(total=layout.n_layers, desc="pruning", unit="layer", file=sys.stderr, mininterval=5, ascii=True)
    result = prune_model(loaded.model, layout, run.method, run.sparsity, run.structure, calibration, inputs,
                         progress=lambda i: bar.update(1), base_options=base_options, precision=loaded.checkpoint["dtype"])
    bar.close()
    if "density" in result.allocation:
        result.allocation["density"]["store"] = str(files.density)
        if result.allocation["density"]["clipped_layers"]:
            log(f"layers {result.allocation['density']['clipped_layers']} fell outside {job.bounds} and were clipped")
    report.update(result.allocation)
    report.update({"layer_sparsity_target": result.ratios, "layer_sparsity_actual": result.actual,
                   "layer_zero_share": result.zeros_after, "overall_sparsity": float(np.mean(result.actual)),
                   "seconds": loaded.seconds()})
    if loaded.device == "cuda":
        report["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    log(f"overall sparsity {report['overall_sparsity']:.4f}; per layer {result.actual.min():.4f}..{result.actual.max():.4f}")
    write_mask(files.mask, layout, result.masks, mask_attrs(report, loaded.checkpoint), kept=result.kept)
    report["mask_crc32c"] = content_id(files.mask)  # the evaluations of this mask name it by this
    write_json(report, files.report, "pruning")
    log(f"done in {loaded.seconds():.1f}s -> {files.report}")
    return report
