"""Pruning and perplexity: the formulas and masks against hand computations, the layer-by-layer
calibration against plain forward hooks on the dense model, perplexity against transformers' loss."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from actpat.decoder import weight_layout
from actpat.allocations import AllocationInputs, density_ratios, owl_ratios
from actpat.bases import wanda_metric
from actpat.masks import nm_mask, row_mask, zero_where
from actpat.errors import PruningError
from actpat.methods import parse_structure
from actpat.pruning import prune_model
from conftest import tiny_llama


# paper.md §2.4: activated counts of Llama2-7B on C4 (64 x 256 tokens, threshold 2e-6), layers 1..32
C4_COUNTS = [1061292, 6319729, 14767367, 19149928, 21451890, 22124198, 21653518, 22533946, 22715992, 23012050, 23320873,
             21679099, 21088533, 21843715, 21866557, 22593499, 23646562, 22568772, 21387521, 20828237, 21268883, 18788506,
             17122682, 15369127, 14025833, 12663446, 12024558, 10586793, 10162286, 8258830, 8591076, 8899162]
# paper.md §4.3: the authors' hard-coded layer sparsities for llama2_7b
LLAMA2_7B_LIST = [0.5698, 0.5366, 0.4802, 0.4661, 0.4642, 0.4663, 0.4691, 0.4691, 0.4688, 0.4691, 0.4713, 0.4779, 0.4801,
                  0.4793, 0.4799, 0.4771, 0.4775, 0.4791, 0.4847, 0.4888, 0.4885, 0.4995, 0.5028, 0.5121, 0.5152, 0.5239,
                  0.5270, 0.5363, 0.5423, 0.5575, 0.5672, 0.5725]


def test_density_ratios_reproduce_the_published_reproduction():
    """paper.md §4.3: the C4 counts of §2.4 in the formula (alpha 2, beta 0.2, S 0.5, population std)
    give 0.539, 0.545, 0.500, 0.477, 0.467, ..., 0.562 at layer 32; against the authors' list the
    RMSE is 0.011 and the largest error 0.030, and the list correlates -0.94 with the counts."""
    got = density_ratios(np.array(C4_COUNTS, dtype=float), 0.5, 2.0, 0.2).ratios
    np.testing.assert_allclose(got[:5], [0.539, 0.545, 0.500, 0.477, 0.467], atol=5e-4)
    assert got[31] == pytest.approx(0.562, abs=5e-4)
    assert abs(got.mean() - 0.5) < 1e-12
    err = got - np.array(LLAMA2_7B_LIST)
    assert np.sqrt((err**2).mean()) == pytest.approx(0.011, abs=5e-4)
    assert np.abs(err).max() == pytest.approx(0.030, abs=5e-4)
    assert np.corrcoef(LLAMA2_7B_LIST, C4_COUNTS)[0, 1] == pytest.approx(-0.94, abs=5e-3)


def test_density_ratios_clip_and_keep_the_mean():
    counts = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 100.0])
    got = density_ratios(counts, 0.7, alpha=0.0, beta=3.0, bounds=(0.0, 0.9))
    assert got.clipped, "a strong beta must push some layers out of range"
    assert got.ratios.min() >= 0.0 - 1e-12 and got.ratios.max() <= 0.9 + 1e-12
    assert abs(got.ratios.mean() - 0.7) < 1e-9
    flat = density_ratios(np.full(5, 7.0), 0.6, alpha=0.0)
    np.testing.assert_allclose(flat.ratios, 0.6)  # a constant profile gives uniform sparsity


def test_owl_ratios():
    outliers = np.array([0.01, 0.05, 0.03, 0.02])
    got = owl_ratios(outliers, 0.6, lam=0.08)
    assert abs(got.ratios.mean() - 0.6) < 1e-12
    assert np.isclose(got.ratios.max() - got.ratios.min(), 0.16)
    assert np.argmin(got.ratios) == 1 and np.argmax(got.ratios) == 0  # more outliers, fewer pruned


def test_wanda_mask_on_a_small_matrix():
    w = torch.tensor([[1.0, -2.0, 3.0, -5.0], [4.0, 3.0, -2.0, 1.0]])
    sq = torch.tensor([16.0, 1.0, 1.0, 0.25])  # input norms 4, 1, 1, 0.5
    # metric row 0: 4, 2, 3, 2.5 -> prune columns 1, 3; row 1: 16, 3, 2, 0.5 -> prune 3, 2
    mask = row_mask(wanda_metric(w, sq), 0.5)
    assert mask.tolist() == [[False, True, False, True], [False, False, True, True]]
    # magnitude alone would prune columns 0 and 1 of row 0: the input norms matter
    assert row_mask(w.abs(), 0.5)[0].tolist() == [True, True, False, False]


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_has_exactly_n_per_block(n, m):
    metric = torch.rand(16, 64, generator=torch.Generator().manual_seed(0))
    mask = nm_mask(metric, n, m)
    assert (mask.reshape(16, -1, m).sum(-1) == n).all()
    kept_min = metric.masked_fill(mask, float("inf")).reshape(16, -1, m).min(-1).values
    pruned_max = metric.masked_fill(~mask, float("-inf")).reshape(16, -1, m).max(-1).values
    assert (pruned_max <= kept_min).all()  # the N smallest of each block


def test_parse_structure_errors():
    assert parse_structure("unstructured") is None and parse_structure("2:4") == (2, 4) == parse_structure("2of4")
    with pytest.raises(PruningError, match="0 < N < M"):
        parse_structure("4:2")


def _windows(vocab, n=3, length=12, seed=0):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_magnitude_at_zero_leaves_the_model_unchanged():
    model = tiny_llama()
    before = copy.deepcopy(model.state_dict())
    result = prune_model(model, weight_layout(model), "magnitude", 0.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (result.actual == 0).all()


def test_wanda_first_layer_matches_hooks_on_the_dense_model():
    """Layer 0's inputs do not depend on pruning: its mask must equal the one computed from the
    dense model's activations captured with plain forward hooks."""
    model = tiny_llama()
    dense = copy.deepcopy(model)
    windows = _windows(64)
    captured = {}
    q = dense.model.layers[0].self_attn.q_proj
    down = dense.model.layers[2].mlp.down_proj
    for name, mod in (("q", q), ("down", down)):
        mod.register_forward_hook(
            lambda m, args, out, name=name: captured.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))
        )
    with torch.no_grad():
        for w in windows:
            dense(w[None])

    def dense_mask(mod, name):
        sq = torch.cat(captured[name]).double().pow(2).sum(0)
        return row_mask(mod.weight.abs() * sq.float().sqrt()[None], 0.5)

    expected = dense_mask(q, "q")
    layout = weight_layout(model)
    result = prune_model(model, layout, "wanda", 0.5, calibration=windows)
    got = model.model.layers[0].self_attn.q_proj.weight == 0
    assert torch.equal(got, expected)
    np.testing.assert_allclose(result.actual, 0.5)
    # deeper layers were calibrated on the pruned model: their masks differ from a dense-model calibration
    assert not torch.equal(model.model.layers[2].mlp.down_proj.weight == 0, dense_mask(down, "down"))


def _density_dataset(counts_per_layer: list[int], threshold: float):
    """A density dataset as actpat.reduce.density writes it, with the given activated counts."""
    import xarray as xr

    counts = np.zeros((1, len(counts_per_layer), 2), dtype=np.int64)
    counts[0, :, 0] = counts_per_layer  # all in the first matrix; the allocation sums over matrices
    return xr.Dataset({"active_abs": (("threshold", "layer", "matrix"), counts)},
                      coords={"threshold": [threshold], "layer": np.arange(len(counts_per_layer)), "matrix": ["a", "b"]},
                      attrs={"domain": "code", "n_samples": 4})


@pytest.mark.parametrize("method", ["wanda-owl", "wanda-density"])
def test_layerwise_methods_reach_their_per_layer_targets(method):
    from actpat.allocations import AbsoluteDensity, Owl

    model = tiny_llama()
    layout = weight_layout(model)
    settings = {"wanda-owl": Owl(0.08, 5.0), "wanda-density": AbsoluteDensity(1e-5, 2.0, 0.2)}[method]
    inputs = AllocationInputs(layout.n_layers, (0.0, 0.99), settings=settings, density=_density_dataset([100, 400, 250], 1e-5))
    result = prune_model(model, layout, method, 0.5, calibration=_windows(64), inputs=inputs)
    assert abs(result.ratios.mean() - 0.5) < 1e-12
    assert np.all(np.abs(result.actual - result.ratios) <= 0.5 / 32 + 1e-9)
    if method == "wanda-density":  # the paper's formula on the density store's counts
        np.testing.assert_allclose(result.ratios, density_ratios(np.array([100.0, 400.0, 250.0]), 0.5, 2.0, 0.2).ratios)
        assert result.allocation["density"]["counts"].tolist() == [100, 400, 250]
    else:
        assert len(result.allocation["owl"]["outlier_share"]) == 3 and result.ratios.std() > 0


def test_nm_pruning_of_a_model():
    model = tiny_llama()
    layout = weight_layout(model)
    result = prune_model(model, layout, "wanda", 0.0, "2:4", _windows(64))
    np.testing.assert_allclose(result.actual, 0.5)
    for layer in model.model.layers:
        w = layer.mlp.up_proj.weight
        assert ((w == 0).reshape(w.shape[0], -1, 4).sum(-1) == 2).all()


@pytest.mark.parametrize(
    "request_, message",
    [
        (("sparsegpt-owlish", 0.5), "unknown pruning method 'sparsegpt-owlish'"),
        (("wanda", 1.0), r"sparsity 1.0 is outside \[0, 1\)"),
        (("wanda-owl", 0.5, "2:4"), "N:M structure applies to uniform allocations, not wanda-owl"),
        (("wanda", 0.5), "wanda needs calibration windows"),
        (("wanda-density", 0.5, "unstructured", torch.zeros(1, 4, dtype=torch.long)), "needs a density store"),
    ],
)
def test_bad_pruning_requests(request_, message):
    model = tiny_llama()
    with pytest.raises(PruningError, match=message):
        prune_model(model, weight_layout(model), *request_)


def test_sparsity_check_fails_loudly():
    from actpat.pruning import check_sparsity

    layout = weight_layout(tiny_llama())
    with pytest.raises(PruningError, match="layer 1: pruned 0.300000 of its weights, target 0.500000"):
        check_sparsity(np.full(3, 0.5), np.array([0.5, 0.3, 0.5]), np.full(3, 0.5), layout)


@pytest.mark.slow
def test_perplexity_of_the_default_model_matches_transformers(smollm2):
    from actpat.evaluate import window_nll
    from actpat.stats import bootstrap_perplexity, perplexity
    from actpat.samples import eval_windows
    from actpat.sources import Document

    model, tokenizer = smollm2
    text = ("The city council approved the new budget on Tuesday, after a long debate about public transport, "
            "schools and the maintenance of roads. ") * 6
    windows = eval_windows("fixed", [Document("a", text), Document("b", text)], tokenizer, 48, 4, log=lambda m: None)
    assert windows.token_ids.shape == (4, 48)
    nll, count, _ = window_nll(model, windows.token_ids)
    ppl = perplexity(nll, count)
    with torch.no_grad():
        losses = [model(torch.as_tensor(w[None].astype(np.int64)), labels=torch.as_tensor(w[None].astype(np.int64))).loss.item()
                  for w in windows.token_ids]
    assert ppl == pytest.approx(math.exp(np.mean(losses)), rel=1e-5)
    assert ppl == perplexity(*window_nll(model, windows.token_ids)[:2])  # same result twice, bit for bit
    assert 1.0 < ppl < 20.0  # repeated English prose is easy for a pretrained model
    lo, hi = bootstrap_perplexity(nll, count, 200, 0)
    assert lo <= ppl <= hi


@pytest.mark.slow
def test_bfloat16_evaluation_of_the_default_model_stays_close_to_float32(smol_checkpoint):
    """The evaluation dtype ``auto`` picks bfloat16 on CPUs that compute it natively: its
    per-window losses against an independent float32 computation through transformers' loss."""
    from actpat.evaluate import load_evaluated_model, window_nll

    model, tokenizer, _, _ = load_evaluated_model(smol_checkpoint, None, "cpu", "float32", log=lambda m: None)
    half, _, _, _ = load_evaluated_model(smol_checkpoint, None, "cpu", "bfloat16", log=lambda m: None)
    assert next(half.parameters()).dtype == torch.bfloat16
    from actpat.evaluate import attention_of

    assert attention_of(half) == attention_of(model) == "eager"  # on the CPU (EAGER_ATTENTION)
    text = ("In 1845 the river flooded the lower town, and the council rebuilt the bridge in stone two years later; "
            "the old wooden piers can still be seen at low water. ") * 3
    ids = np.asarray(tokenizer(text)["input_ids"][:64], dtype=np.int64)[None]
    nll, count, _ = window_nll(half, ids)
    with torch.no_grad():
        ref = model(torch.as_tensor(ids), labels=torch.as_tensor(ids)).loss.item()
    assert count[0] == 63
    # rounding weights and activations to 8 significant bits moves a loss by ~1e-3 relative, far
    # below the differences between pruning methods (tens of percent)
    assert nll[0] / count[0] == pytest.approx(ref, rel=5e-3)
    assert nll[0] / count[0] != ref  # it is a different computation, not a cast back


def test_evaluation_dtype_auto_follows_the_hardware(monkeypatch):
    from actpat import models

    assert models.pick_dtype("float32", "cpu") == "float32"
    assert models.pick_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(models.ModelError, match="unknown dtype"):
        models.pick_dtype("float8", "cpu")
    said = []
    monkeypatch.setattr(models, "native_bf16", lambda device: True)
    assert models.pick_dtype("auto", "cpu", said.append) == "bfloat16"
    monkeypatch.setattr(models, "native_bf16", lambda device: False)
    assert models.pick_dtype("auto", "cpu", said.append) == "float32"
    assert "natively" in said[0] and "emulated" in said[1]


def test_native_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    from actpat import models

    def cpuinfo(text):
        f = tmp_path / "cpuinfo"
        f.write_text(text)
        real = models.Path
        monkeypatch.setattr(models, "Path", lambda p: f if p == "/proc/cpuinfo" else real(p))

    cpuinfo("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not models.native_bf16("cpu")  # AVX-512 without its BF16 extension: emulated
    cpuinfo("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert models.native_bf16("cpu")
    cpuinfo("Features\t: fp asimd evtstrm aes sve bf16 i8mm\n")  # Arm (Graviton 3, Neoverse V1)
    assert models.native_bf16("cpu")
    if not torch.cuda.is_available():
        assert not models.native_bf16("cuda")


def test_pruning_report_refuses_evaluations_in_different_dtypes():
    from actpat.pruning_report import evaluation_dtype

    dense = {"sets": {"a": {"dtype": "bfloat16"}, "b": {"dtype": "bfloat16"}}}
    runs = [{"key": "a/wanda/unstructured/0.5", "sets": {"a": {"dtype": "bfloat16"}}}]
    assert evaluation_dtype(dense, runs) == "bfloat16"
    old = [{"key": "a/magnitude/unstructured/0.5", "sets": {"a": {}}}]  # written before the setting: float32
    with pytest.raises(ValueError, match=r"bfloat16 with sdpa attention: 3 .*float32 with sdpa attention: 1 "
                                         r"\(e.g. a/magnitude/unstructured/0.5 on a\)"):
        evaluation_dtype(dense, runs + old)
    # the attention kernel too (results written before it was recorded used SDPA)
    eager = [{"key": "a/wanda/unstructured/0.6", "sets": {"a": {"dtype": "bfloat16", "attention": "eager"}}}]
    with pytest.raises(ValueError, match=r"bfloat16 with eager attention: 1 \(e.g. a/wanda/unstructured/0.6 on a\); "
                                         r"bfloat16 with sdpa attention: 3"):
        evaluation_dtype(dense, runs + eager)
    import pandas as pd

    zero_shot = pd.DataFrame([{"method": "dense", "structure": "-", "sparsity": 0.0, "calibration": "-", "task": "boolq",
                               "dtype": "float32", "attention": "sdpa"}])
    with pytest.raises(ValueError, match=r"float32 with sdpa attention: 1 \(e.g. dense - 0 \(-\) on boolq\)"):
        evaluation_dtype(dense, runs, zero_shot)
    assert evaluation_dtype(dense, runs, zero_shot.assign(dtype="bfloat16")) == "bfloat16"
    with pytest.raises(ValueError, match="computed differently"):
        evaluation_dtype(dense, runs, zero_shot.assign(dtype="bfloat16", attention="eager"))


def test_eval_windows_are_non_overlapping_and_evenly_spaced(smol_tokenizer):
    from actpat.samples import SamplingError, eval_windows
    from actpat.sources import Document

    docs = [Document(str(i), f"Document number {i} talks about topic {i * 7} at some length. " * 20) for i in range(10)]
    all_w = eval_windows("set", docs, smol_tokenizer, 32, 10_000, log=lambda m: None)
    n = all_w.stats["n_windows_available"]
    assert len(all_w.token_ids) == n and all_w.offsets == [k * 32 for k in range(n)]
    few = eval_windows("set", docs, smol_tokenizer, 32, 5, log=lambda m: None)
    assert len(few.token_ids) == 5 and few.offsets[0] == 0 and few.offsets[-1] == (n - 1) * 32
    assert set(few.doc_ids) <= {d.id for d in docs} and few.doc_ids[0] == "0"
    with pytest.raises(SamplingError, match="fewer than one window"):
        eval_windows("short", [Document("x", "hi")], smol_tokenizer, 32, 5, log=lambda m: None)


def test_evaluation_only_set_from_datasets_on_local_files(tmp_path, tiny_checkpoint):
    """An evaluation-only set through `datasets` (what a WikiText-2 entry does with a network),
    here the `json` builder on a local file; all its documents are evaluated."""
    import json

    from actpat.cli import main
    from actpat.settings import WindowJob, TextSource
    from actpat.settings_json import encode
    from actpat.store import open_samples

    rows = [{"text": f"Line {i} of an encyclopedic article about the river number {i}, its towns and bridges."} for i in range(40)]
    data = tmp_path / "wiki.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"source": "datasets", "name": "json", "data_files": str(data), "split": "train"}
    out = tmp_path / "wikilocal.zarr"
    job = WindowJob("evaluation", TextSource("wikilocal", spec), 8, 64, None, None)
    assert main(["pruning-text", "--settings", encode(job), "--model-dir", str(tiny_checkpoint), "--out", str(out)]) == 0
    ds = open_samples(out)
    assert ds["token_ids"].shape == (8, 64) and ds.attrs["purpose"] == "evaluation" and ds.attrs["held_out_only"] is False
    assert ds.attrs["n_documents"] == 40


def test_pruning_is_deterministic():
    """Same model, settings and calibration windows: bit-identical pruned weights."""
    from actpat.allocations import Owl

    outs = []
    for _ in range(2):
        model = tiny_llama()
        layout = weight_layout(model)
        prune_model(model, layout, "wanda-owl", 0.6, calibration=_windows(64),
                    inputs=AllocationInputs(layout.n_layers, (0.0, 0.99), settings=Owl(0.08, 5.0)))
        outs.append(model.state_dict())
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


# ----------------------------------------------------------------------------------------------
# SparseGPT against an independent sequential optimal-brain-surgeon reference


def _sparsegpt_case(rows=12, cols=24, tokens=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    x = torch.randn(tokens, cols, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 3.0, cols, dtype=torch.float64)
    x[:, 5] = 0.0  # an input feature never active: its weights go
    return w, x


def _sparsegpt_prune(w, x, ratio, nm, block, **options):
    """actpat's SparseGPT on a float64 linear layer with weights ``w``, calibrated on ``x`` (in
    chunks of 32 tokens): (pruned weights, mask)."""
    from actpat.bases import InputGram, SparseGPT

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    gram = InputGram(lin)
    for chunk in x.split(32):
        gram.add_batch(chunk[None])
    with torch.no_grad():
        mask = SparseGPT(block=block, damp=0.01, **options).prune(lin.weight, gram, ratio, nm)
    return lin.weight.detach(), mask


@pytest.mark.parametrize("ratio, nm, block", [(0.5, None, 8), (0.7, None, 10), (0.0, (2, 4), 8), (0.3, None, 128)])
def test_sparsegpt_equals_the_sequential_obs_reference(ratio, nm, block):
    """The blocked, Cholesky-based update equals the paper's sequential form computed with explicit
    inverses of each remaining-columns Hessian (tests/reference.py): same mask, same weights."""
    from reference import sparsegpt_reference

    w, x = _sparsegpt_case()
    expected_w, expected_mask = sparsegpt_reference(w, x, ratio, block, 0.01, nm)
    pruned, mask = _sparsegpt_prune(w, x, ratio, nm, block)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(pruned, expected_w, rtol=1e-9, atol=1e-10)
    assert (pruned[:, 5] == 0).all()
    if nm:
        assert (mask.reshape(w.shape[0], -1, nm[1]).sum(-1) == nm[0]).all()


@pytest.mark.parametrize("inner", [1, 5, 12, 128])
@pytest.mark.parametrize("ratio, nm", [(0.6, None), (0.0, (2, 4))])
def test_sparsegpt_sub_blocks_change_only_the_order_of_the_arithmetic(inner, ratio, nm):
    """Columns taken ``inner`` at a time inside each block, each sub-block's errors from one
    triangular solve per row (N:M: one group of M at a time, whatever ``inner``), give the
    sequential reference's mask and weights; blocks of 24 over 40 columns end mid-sub-block."""
    from reference import sparsegpt_reference

    w, x = _sparsegpt_case(rows=10, cols=40, tokens=120, seed=inner)
    expected_w, expected_mask = sparsegpt_reference(w, x, ratio, 24, 0.01, nm)
    pruned, mask = _sparsegpt_prune(w, x, ratio, nm, block=24, inner=inner)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(pruned, expected_w, rtol=1e-9, atol=1e-10)


def test_sparsegpt_reconstructs_the_layer_output_better_than_its_mask_alone():
    """The point of the update: with the same mask, ‖X (W − Ŵ)ᵀ‖ is smaller than with the kept
    weights left as they were (and than magnitude pruning's), on correlated inputs."""
    from actpat.bases import InputGram, SparseGPT
    from actpat.masks import matrix_mask

    gen = torch.Generator().manual_seed(3)
    w = torch.randn(32, 48, generator=gen, dtype=torch.float64)
    # correlated input features, as activations are (a few directions carry most of the energy)
    x = torch.randn(400, 8, generator=gen, dtype=torch.float64) @ torch.randn(8, 48, generator=gen, dtype=torch.float64)
    x += 0.1 * torch.randn(400, 48, generator=gen, dtype=torch.float64)
    lin = torch.nn.Linear(48, 32, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    gram = InputGram(lin)
    gram.add_batch(x)
    with torch.no_grad():
        mask = SparseGPT(block=16).prune(lin.weight, gram, 0.5, None)
    err = lambda v: float(torch.linalg.norm(x @ (w - v).T))  # noqa: E731
    masked_only = w.masked_fill(mask, 0.0)
    magnitude = w.masked_fill(matrix_mask(w.abs(), 0.5), 0.0)
    assert err(lin.weight.detach()) < 0.8 * err(masked_only) and err(lin.weight.detach()) < err(magnitude)


@pytest.mark.parametrize("precision", [None, "bfloat16", "float16"])
def test_sparsegpt_model_mask_store_holds_the_pruned_model(tmp_path, precision):
    """A SparseGPT-pruned model is the dense checkpoint + its mask + its kept weights, rounded once
    to the checkpoint's dtype (``precision``; None: the float32 model's own) and stored in it, only
    the kept ones, in the mask's order: applied to a fresh dense model of that dtype it gives the
    pruned weights bit for bit (and in float32, their exact values)."""
    from actpat.decoder import layer_weights
    from actpat.masks import apply_mask
    from actpat.store import open_mask, write_mask

    dtype = getattr(torch, precision or "float32")
    model = tiny_llama().to(dtype).float()  # the checkpoint's values, pruned in float32 as the prune job does
    layout = weight_layout(model)
    dense = [[w.clone() for w in layer] for layer in layer_weights(model, layout)]
    result = prune_model(model, layout, "sparsegpt", 0.6, calibration=_windows(64), base_options={"block": 16, "damp": 0.01},
                         precision=precision)
    np.testing.assert_allclose(result.actual, result.expected)
    assert abs(result.actual.mean() - 0.6) < 0.01 and result.kept is not None
    write_mask(tmp_path / "mask.zarr", layout, result.masks, {"overall_sparsity": float(result.actual.mean())},
               kept=result.kept)
    store = open_mask(tmp_path / "mask.zarr")
    assert store.attrs["kept_weights"] == (precision or "float32")
    n_kept = sum(int((w != 0).sum()) for layer in layer_weights(model, layout) for w in layer)
    assert sum(store[f"{m}.kept"].size for m in layout.matrices) >= n_kept  # a kept weight may be an exact zero
    assert sum(store[f"{m}.kept"].size for m in layout.matrices) == round((1 - result.actual.mean()) * layout.weights_per_layer
                                                                        * layout.n_layers)
    assert store["mlp.down_proj.kept"].dtype == {None: np.float32, "bfloat16": np.uint16, "float16": np.float16}[precision]
    for fresh_dtype in {dtype, torch.float32}:
        fresh = tiny_llama().to(dtype).to(fresh_dtype)
        apply_mask(fresh, layout, store)
        for a_layer, b_layer, c_layer in zip(layer_weights(model, layout), layer_weights(fresh, layout), dense):
            for a, b, c in zip(a_layer, b_layer, c_layer):
                bits = {2: torch.int16, 4: torch.int32}[b.element_size()]
                assert torch.equal(a.to(fresh_dtype).view(bits), b.view(bits))  # bit for bit
                assert torch.equal(a.to(dtype).float(), a)  # the pruned model's weights are the checkpoint dtype's
                assert not torch.equal(b[b != 0], c[b != 0].to(fresh_dtype))  # the kept weights did change


def test_sparsegpt_rounds_its_weights_once_and_calibrates_later_layers_on_them():
    """In bfloat16 the pruned weights are SparseGPT's float64 ones rounded once (not through float32)
    and the later layers see the rounded model: the result differs from pruning unrounded and
    rounding afterwards, and equals a layer-by-layer recomputation from the rounded model."""
    from actpat.decoder import layer_weights

    def pruned(precision):
        model = tiny_llama().to(torch.bfloat16).float()
        layout = weight_layout(model)
        prune_model(model, layout, "sparsegpt", 0.5, calibration=_windows(64), base_options={"block": 16}, precision=precision)
        return [w for layer in layer_weights(model, layout) for w in layer]

    rounded, unrounded = pruned("bfloat16"), pruned(None)
    assert all(torch.equal(w.to(torch.bfloat16).float(), w) for w in rounded)
    assert not all(torch.equal(w.to(torch.bfloat16).float(), w) for w in unrounded)
    first_layer = len(rounded) // 3
    # layer 0 sees the dense model either way: rounding is all that differs there
    assert all(torch.equal(a, b.to(torch.bfloat16).float()) for a, b in zip(rounded[:first_layer], unrounded[:first_layer]))


def test_a_mask_store_of_every_float32_weight_is_refused():
    """Mask stores written before the kept weights were stored alone: a clear error, not a model."""
    import xarray as xr

    from actpat.masks import apply_mask

    model = tiny_llama()
    layout = weight_layout(model)
    old = xr.Dataset(attrs={"matrices": list(layout.matrices), "shapes": [list(s) for s in layout.shapes],
                            "n_layers": layout.n_layers, "changed_weights": True, "overall_sparsity": 0.5})
    with pytest.raises(PruningError, match="every scored weight in float32.*delete its run directory"):
        apply_mask(model, layout, old)


def test_a_bfloat16_checkpoint_pruned_by_the_prune_job_stores_bfloat16(tmp_path, smol_tokenizer):
    """The prune job rounds SparseGPT's weights to its checkpoint's dtype (from the checkpoint's
    provenance) and stores them in it; evaluated in float32 and in bfloat16, the same model."""
    from actpat.cli import main
    from actpat.decoder import layer_weights
    from actpat.evaluate import load_evaluated_model
    from actpat.models import ModelSource, prepare_checkpoint
    from actpat.samples import write_windows
    from actpat.settings import PruneJob, PruningRun, TextSource, WindowJob
    from actpat.settings_json import encode
    from actpat.store import open_mask

    src = tmp_path / "src"
    tiny_llama(vocab_size=len(smol_tokenizer)).save_pretrained(src)
    smol_tokenizer.save_pretrained(src)
    checkpoint = tmp_path / "tiny-bf16"
    prepare_checkpoint(ModelSource.parse(str(src)), checkpoint, "bfloat16")
    calibration = tmp_path / "calibration.zarr"
    write_windows(WindowJob("calibration", TextSource("code", {"source": "packaged", "name": "python-stdlib"}), 4, 32, 0, 0.2),
                  checkpoint, calibration, log=lambda m: None)
    job = PruneJob(PruningRun("sparsegpt", "unstructured", 0.5, "code"), (0.0, 0.99), None, {"block": 16, "damp": 0.01})
    mask = tmp_path / "mask.zarr"
    assert main(["prune", "--settings", encode(job), "--model-dir", str(checkpoint), "--model", "tiny", "--calibration",
                 str(calibration), "--device", "cpu", "--threads", "1", "--mask", str(mask),
                 "--report", str(tmp_path / "pruning.json")]) == 0
    assert open_mask(mask).attrs["kept_weights"] == "bfloat16" and open_mask(mask)["self_attn.q_proj.kept"].dtype == np.uint16
    half, *_ = load_evaluated_model(checkpoint, mask, "cpu", "bfloat16", log=lambda m: None)
    full, *_ = load_evaluated_model(checkpoint, mask, "cpu", "float32", log=lambda m: None)
    layout = weight_layout(full)
    for a, b in zip(layer_weights(half, layout), layer_weights(full, layout)):
        for x, y in zip(a, b):
            assert torch.equal(x.view(torch.int16), y.to(torch.bfloat16).view(torch.int16)) and torch.equal(x.float(), y)


# ----------------------------------------------------------------------------------------------
# One statistic per distinct input


def _layer_statistics(layer, make, share=True, windows=3):
    from actpat.pruning import _collect

    hidden = torch.randn(windows, 6, 32, generator=torch.Generator().manual_seed(1))
    position_ids = torch.arange(6)[None]
    call = {"args": (), "kwargs": {"position_embeddings": _rotary(position_ids), "attention_mask": None}}
    names = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
             "mlp.up_proj", "mlp.down_proj"]
    modules = [layer.get_submodule(n) for n in names]
    statistics, _ = _collect(layer, modules, make, hidden, call, output=False, share=share)
    return dict(zip(names, statistics))


def _rotary(position_ids):
    model = tiny_llama()
    x = torch.zeros(1, position_ids.shape[1], 32)
    return model.model.rotary_emb(x, position_ids)


def test_modules_that_read_one_tensor_share_one_statistic():
    """Found from what the hooks receive: q, k and v read one tensor, gate and up another; o and
    down read their own (o's input has q's shape: shapes and names decide nothing)."""
    from actpat.bases import InputGram

    stats = _layer_statistics(tiny_llama().model.layers[0], InputGram)
    q, k, v, o, gate, up, down = stats.values()
    assert q is k is v and gate is up
    assert len({id(s) for s in stats.values()}) == 4
    apart = _layer_statistics(tiny_llama().model.layers[0], InputGram, share=False)
    assert len({id(s) for s in apart.values()}) == 7
    for name in stats:  # the same sums either way
        assert torch.equal(stats[name].gram, apart[name].gram)


def test_an_input_shared_on_one_window_only_is_refused():
    """A module that reads its neighbour's tensor on the first window and a copy of it later (or
    the reverse) would feed a shared statistic twice or not at all: the pass fails, naming it."""
    from actpat.bases import InputNorms

    layer = tiny_llama().model.layers[0]
    calls = [0]

    def copy_once(module, args):  # runs before the statistics' hook: k reads a copy on the second window
        calls[0] += 1
        return (args[0].clone(),) if calls[0] == 2 else None

    layer.self_attn.k_proj.register_forward_pre_hook(copy_once)
    with pytest.raises(PruningError, match="self_attn.k_proj read another input"):
        _layer_statistics(layer, InputNorms)


def test_a_tensor_changed_in_place_between_two_readers_is_not_shared():
    from actpat.bases import InputNorms

    layer = tiny_llama().model.layers[0]
    layer.self_attn.v_proj.register_forward_pre_hook(lambda module, args: args[0].mul_(1.0))  # same values, a new version
    stats = _layer_statistics(layer, InputNorms)
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"] and stats["self_attn.v_proj"] is not stats["self_attn.q_proj"]


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "sparsegpt-owl"])
def test_shared_statistics_prune_as_one_per_module(method, monkeypatch):
    """Masks and weights bit for bit those of one statistic (one Gram, one factorization) per
    module, as before the statistics were shared; SparseGPT factorizes 4 Grams per layer, not 7."""
    import functools

    from actpat import pruning
    from actpat.allocations import Owl

    def pruned(share):
        calls = [0]
        cholesky = torch.linalg.cholesky

        def counted(*args, **kwargs):
            calls[0] += 1
            return cholesky(*args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(pruning, "_collect", functools.partial(pruning._collect, share=share))
            m.setattr(torch.linalg, "cholesky", counted)
            model = tiny_llama()
            layout = weight_layout(model)
            owl = AllocationInputs(layout.n_layers, (0.0, 0.99), settings=Owl(0.08, 5.0))  # its dense pass shares too
            result = prune_model(model, layout, method, 0.6, calibration=_windows(64), inputs=owl)
        return model.state_dict(), result, calls[0]

    shared, shared_result, shared_calls = pruned(True)
    apart, apart_result, apart_calls = pruned(False)
    assert all(torch.equal(shared[k], apart[k]) for k in shared)
    assert all(np.array_equal(a, b) for la, lb in zip(shared_result.masks, apart_result.masks) for a, b in zip(la, lb))
    if method.startswith("sparsegpt"):  # two Cholesky factorizations per Gram matrix, 3 layers
        assert (shared_calls, apart_calls) == (2 * 4 * 3, 2 * 7 * 3)


# ----------------------------------------------------------------------------------------------
# AlphaPruning


@pytest.mark.parametrize("alpha", [2.0, 3.5])
@pytest.mark.parametrize("xmin", ["peak", "mid"])
def test_hill_alpha_recovers_a_known_power_law(alpha, xmin):
    """Eigenvalues drawn from a Pareto density p(λ) ∝ λ^(−α) for λ ≥ 1: the tail above any λ_min is
    the same power law, so both λ_min rules recover α (standard error (α − 1)/√n)."""
    from actpat.allocations import hill_alpha

    rng = np.random.default_rng(7)
    lam = (1.0 - rng.random(20000)) ** (-1.0 / (alpha - 1.0))
    n_tail = 20000 if xmin == "peak" else 10000
    assert abs(hill_alpha(lam, xmin) - alpha) < 4 * (alpha - 1) / math.sqrt(n_tail) + 0.02


@pytest.mark.parametrize("shape", [(7, 5), (5, 7)])
def test_esd_is_the_spectrum_of_wtw(shape):
    """min(rows, cols) eigenvalues: the squared singular values (an SVD in float64 as reference)."""
    from actpat.allocations import esd

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = np.sort(np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2)
    np.testing.assert_allclose(esd(w), expected, rtol=1e-10)


def test_alpha_ratios_follow_the_papers_mapping():
    """Linear map of the layer metric onto [1 − ε, 1 + ε], scaled to the target mean: a layer with
    a larger α (less well trained) is pruned more."""
    from actpat.allocations import alpha_ratios

    r = alpha_ratios(np.array([3.0, 1.0, 2.0]), 0.5, epsilon=0.2)
    np.testing.assert_allclose(r.ratios, [0.6, 0.4, 0.5])
    r = alpha_ratios(np.array([10.0, 30.0, 20.0, 20.0]), 0.7, epsilon=0.3)
    np.testing.assert_allclose(r.ratios, 0.7 * np.array([0.7, 1.3, 1.0, 1.0]))
    flat = alpha_ratios(np.array([2.0, 2.0]), 0.6)
    np.testing.assert_allclose(flat.ratios, 0.6)
    clipped = alpha_ratios(np.array([1.0, 5.0]), 0.9, epsilon=0.3, bounds=(0.0, 0.99))
    assert clipped.ratios.max() <= 0.99 and abs(clipped.ratios.mean() - 0.9) < 1e-12 and clipped.clipped == [1]


@pytest.mark.parametrize("method", ["wanda-alpha", "sparsegpt-alpha", "magnitude-alpha"])
def test_alpha_allocation_on_a_model(method):
    from actpat.allocations import AlphaPruning, esd, hill_alpha

    model = tiny_llama()
    layout = weight_layout(model)
    inputs = AllocationInputs(layout.n_layers, (0.0, 0.99), settings=AlphaPruning(0.2, "mid"))
    expected_metric = [sum(hill_alpha(esd(model.model.layers[i].get_submodule(m).weight), "mid") for m in layout.matrices)
                       for i in range(layout.n_layers)]
    result = prune_model(model, layout, method, 0.5, calibration=_windows(64), inputs=inputs)
    np.testing.assert_allclose(result.allocation["alpha"]["layer_alpha_sum"], expected_metric)
    assert abs(result.ratios.mean() - 0.5) < 1e-12 and np.argmax(result.ratios) == np.argmax(expected_metric)
    np.testing.assert_allclose(result.ratios.max() / result.ratios.min(), 1.2 / 0.8)


# ----------------------------------------------------------------------------------------------
# DLP (Chen et al., ICML 2025)


def test_dlp_ratios_follow_the_papers_equations():
    """Written out from the paper: I^l = 1 − S^l/Σ S, d_l = (I_l − I_min)/(I_max − I_min)·2α,
    R_l = p + mean(d) − d_l: the mean is p, the spread 2α, a larger median score is pruned more."""
    from actpat.allocations import dlp_ratios

    s = np.array([2.0, 1.0, 4.0, 3.0])  # layer un-importances (median scores), Σ = 10
    importance = [1 - 2 / 10, 1 - 1 / 10, 1 - 4 / 10, 1 - 3 / 10]  # 0.8, 0.9, 0.6, 0.7
    d = [(i - 0.6) / (0.9 - 0.6) * 2 * 0.1 for i in importance]  # 2/15, 0.2, 0, 1/15; mean 0.1
    expected = [0.6 + sum(d) / 4 - x for x in d]
    got = dlp_ratios(s, 0.6, alpha=0.1)
    np.testing.assert_allclose(got.ratios, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got.ratios, [17 / 30, 0.5, 0.7, 19 / 30], rtol=0, atol=1e-15)
    assert got.ratios.mean() == pytest.approx(0.6, abs=1e-15) and not got.clipped
    assert got.ratios.min() >= 0.6 - 0.1 - 1e-15 and got.ratios.max() <= 0.6 + 0.1 + 1e-15
    # the range [p − α, p + α] is exact only when mean(d) = α; in general the spread is 2α and one
    # lone important layer goes to p − 1.5α (d = 0, 0, 0, 2α)
    lone = dlp_ratios(np.array([5.0, 5.0, 5.0, 1.0]), 0.5, alpha=0.1)
    np.testing.assert_allclose(lone.ratios, [0.55, 0.55, 0.55, 0.35], rtol=0, atol=1e-15)
    # scale-free: a common factor of S changes nothing; equal layers give the uniform allocation
    np.testing.assert_allclose(dlp_ratios(7 * s, 0.6, alpha=0.1).ratios, got.ratios, rtol=0, atol=1e-15)
    np.testing.assert_allclose(dlp_ratios(np.full(3, 2.5), 0.7).ratios, 0.7)
    np.testing.assert_allclose(dlp_ratios(np.zeros(3), 0.7).ratios, 0.7)
    # the allocation keeps the bounds: clipped, the mean restored
    high = dlp_ratios(np.array([1.0, 2.0, 3.0]), 0.9, alpha=0.15, bounds=(0.0, 0.99))
    assert high.ratios.max() <= 0.99 + 1e-12 and abs(high.ratios.mean() - 0.9) < 1e-12 and high.clipped == [2]
    with pytest.raises(PruningError, match="non-negative"):
        dlp_ratios(np.array([1.0, -1.0]), 0.5)


def _dense_layer_scores_by_hooks(model, layout, windows):
    """Independently of the pruning loop: each scored matrix's inputs captured with plain forward
    hooks on a full dense forward pass, its Wanda scores |W_ij|·‖X_j‖₂ in float64."""
    captured = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for name in layout.matrices:
            mod = layer.get_submodule(name)
            hooks.append(mod.register_forward_hook(
                lambda m, args, out, key=(i, name): captured.setdefault(key, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))))
    with torch.no_grad():
        for w in windows:
            model(w[None])
    for h in hooks:
        h.remove()
    scores = []
    for i, layer in enumerate(model.model.layers):
        per_layer = []
        for name in layout.matrices:
            x = torch.cat(captured[(i, name)]).double()
            w = layer.get_submodule(name).weight.detach().double()
            per_layer.append((w.abs() * x.pow(2).sum(0).sqrt()[None]).numpy().ravel())
        scores.append(np.concatenate(per_layer))
    return scores


@pytest.mark.parametrize("method", ["wanda-dlp", "sparsegpt-dlp"])
def test_dlp_allocation_on_a_model(method):
    """The layer statistic is the median of the dense model's Wanda scores of all the layer's
    matrices (checked against hooks on the dense model); the allocation reaches its per-layer
    targets, with mean = target, and the layers with the smaller median (more important) are
    pruned less."""
    from actpat.allocations import Dlp, dlp_ratios

    model = tiny_llama()
    layout = weight_layout(model)
    windows = _windows(64)
    scores = _dense_layer_scores_by_hooks(copy.deepcopy(model), layout, windows)
    expected_median = np.array([np.median(s) for s in scores])
    inputs = AllocationInputs(layout.n_layers, (0.0, 0.99), settings=Dlp(0.15, "median"))
    result = prune_model(model, layout, method, 0.5, calibration=windows, inputs=inputs)
    details = result.allocation["dlp"]
    np.testing.assert_allclose(details["layer_unimportance"], expected_median, rtol=1e-5)
    np.testing.assert_allclose(details["layer_importance"], 1 - expected_median / expected_median.sum(), rtol=1e-5)
    np.testing.assert_allclose(result.ratios, dlp_ratios(expected_median, 0.5, 0.15).ratios, atol=1e-6)
    assert abs(result.ratios.mean() - 0.5) < 1e-12 and details["alpha"] == 0.15 and details["statistic"] == "median"
    assert np.all(np.abs(result.actual - result.ratios) <= 0.5 / 32 + 1e-9)
    assert abs(result.actual.mean() - 0.5) <= 0.5 / 32 + 1e-9
    assert result.ratios.max() - result.ratios.min() == pytest.approx(0.3, abs=1e-9)
    # higher importance (smaller median score), lower sparsity: the same order, strictly
    assert list(np.argsort(result.ratios)) == list(np.argsort(expected_median))
    assert len(set(np.round(expected_median, 8))) == layout.n_layers


def test_dlp_mean_statistic_and_missing_settings():
    """``statistic: mean`` (the authors' released code) uses the layer mean of the same scores;
    without its settings or calibration the allocation refuses; magnitude has no DLP variant."""
    from actpat.allocations import Dlp
    from actpat.methods import METHODS

    model = tiny_llama()
    layout = weight_layout(model)
    windows = _windows(64)
    scores = _dense_layer_scores_by_hooks(copy.deepcopy(model), layout, windows)
    inputs = AllocationInputs(layout.n_layers, (0.0, 0.99), settings=Dlp(0.1, "mean"))
    result = prune_model(model, layout, "wanda-dlp", 0.6, calibration=windows, inputs=inputs)
    np.testing.assert_allclose(result.allocation["dlp"]["layer_unimportance"], [s.mean() for s in scores], rtol=1e-5)
    with pytest.raises(PruningError, match="DLP allocation needs calibration windows and its settings"):
        prune_model(tiny_llama(), layout, "wanda-dlp", 0.5, calibration=windows)
    assert "magnitude-dlp" not in METHODS and "magnitude-owl" not in METHODS


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_mask_selection_equals_a_stable_sort_with_ties(ratio):
    """Masks are found by selection (k-th value, then ties in index order); they must equal the
    first k of a stable sort, the reference the masks were pinned to, even with many ties."""
    from actpat.masks import matrix_mask, row_mask

    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        for values in (torch.randint(0, 4, (37, 53), generator=gen), torch.rand(37, 53, generator=gen)):
            metric = values.to(dtype)
            k_row, k_all = round(53 * ratio), round(metric.numel() * ratio)
            want_row = torch.zeros_like(metric, dtype=torch.bool)
            want_row.scatter_(1, torch.sort(metric, dim=1, stable=True).indices[:, :k_row], True)
            want_all = torch.zeros(metric.numel(), dtype=torch.bool)
            want_all[torch.sort(metric.flatten(), stable=True).indices[:k_all]] = True
            assert torch.equal(row_mask(metric, ratio), want_row)
            assert torch.equal(matrix_mask(metric, ratio), want_all.reshape(metric.shape))
    with_nan = torch.rand(5, 8, generator=gen)
    with_nan[1, 2] = with_nan[3, 0] = float("nan")
    mask = row_mask(with_nan, 0.9)  # 7 of 8: the NaN is the one kept in its row
    assert not mask[1, 2] and not mask[3, 0] and int(mask.sum()) == 35


@pytest.mark.parametrize("positions", [1, 31, 32, 255])
def test_summed_nll_equals_a_float64_log_softmax(positions):
    """A window's summed NLL, widened to float32 a few positions at a time, against the float64
    log-softmax of the same bfloat16 logits."""
    from actpat.evaluate import summed_nll

    gen = torch.Generator().manual_seed(positions)
    logits = (torch.randn(positions, 5000, generator=gen) * 4).to(torch.bfloat16)
    targets = torch.randint(0, 5000, (positions,), generator=gen)
    want = -torch.log_softmax(logits.double(), -1).gather(1, targets[:, None]).sum().item()
    assert summed_nll(logits, targets) == pytest.approx(want, rel=1e-6)
    assert math.isnan(summed_nll(torch.full((positions, 10), float("nan")), targets % 10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_zero_where_equals_boolean_indexing_bit_for_bit(dtype):
    """zero_where (an AND on the weights' bits) leaves exactly what ``w[mask] = 0`` leaves, in
    every float width: +0.0 where the mask holds, NaN, infinities and -0.0 included, and every
    other weight untouched; a non-contiguous weight takes the plain path."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(37, 53, generator=gen).to(dtype)
    w[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=dtype)
    w[1, :4] = w[0, :4]
    mask = torch.rand(37, 53, generator=gen) < 0.5
    mask[0, :4], mask[1, :4] = True, False
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[w.element_size()]
    for weight, m in ((w.clone(), mask), (w.clone().t(), mask.t())):  # contiguous, then a transposed view
        expected = weight.clone()
        expected[m] = 0
        zero_where(weight, m)
        assert torch.equal(weight.contiguous().view(ints), expected.contiguous().view(ints))
    assert (w[1, :4].isnan().sum(), w[1, 1:3].isinf().all()) == (1, True)  # the input itself was not touched
