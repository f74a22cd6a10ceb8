"""The scorer against an independent autograd reference, on tiny random Llama, Gemma 3 and Qwen2
models and on SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actpat.decoder import weight_layout
from actpat.scoring import ShardScorer
from conftest import scoring
from conftest import tiny_llama
from reference import reference_scores

THRESHOLDS = (1e-3, 1e-4)


KERNELS = ["fused", "eager"]


def _check_against_reference(model, samples, target, rtol=1e-5, atol=1e-9, kernel="auto"):
    layout = weight_layout(model)
    refs = [reference_scores(model, ids, target) for ids in samples]
    scorer = ShardScorer(model, layout, scoring(target=target, thresholds=THRESHOLDS, relative_multiples=(1.0, 5.0), sketch_size=64),
                         kernel=kernel)
    results = [scorer.score(ids) for ids in samples]
    assert scorer.n_samples == len(samples)
    sample_means = [float(sum(v.double().sum() for v in ref.values()) / sum(v.numel() for v in ref.values())) for ref in refs]
    for i in range(layout.n_layers):
        for j, m in enumerate(layout.matrices):
            name = layout.parameter_name(i, m)
            per_sample = [ref[name] for ref in refs]
            torch.testing.assert_close(scorer.sums[i][j], sum(per_sample), rtol=rtol, atol=atol)
            assert scorer.sums[i][j].dtype == torch.float32
            for res, ref, mean in zip(results, per_sample, sample_means):
                for k, mult in enumerate((1.0, 5.0)):
                    # exact counts, up to the weights whose score the two computations round to
                    # different sides of the threshold
                    t = mult * mean
                    near = int(((ref > t * (1 - 1e-5)) & (ref <= t * (1 + 1e-5))).sum())
                    assert abs(res.above_rel[i, j, k] - int((ref > t).sum())) <= near
                # the reference's sums in float64: torch's float32 norm of a whole SmolLM2 matrix
                # is itself off by about 1e-4 (measured: 1.64413 against 1.64432 in float64)
                assert res.l1[i, j] == pytest.approx(ref.double().sum().item(), rel=1e-5)
                assert res.l2[i, j] == pytest.approx(ref.double().norm().item(), rel=1e-5)
                assert res.zeros[i, j] == int((ref == 0).sum())
                for t, thr in enumerate(THRESHOLDS):
                    # allow a weight to sit exactly at the threshold within rounding
                    assert abs(res.above[i, j, t] - int((ref > thr).sum())) <= 1
    return results, refs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("target", ["max_logit", "mean_loglik"])
def test_tiny_llama_scores_equal_reference(target, kernel):
    model = tiny_llama()
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(0, 64, (1, 12), generator=gen) for _ in range(3)]
    results, _ = _check_against_reference(model, samples, target, kernel=kernel)
    if target == "max_logit":
        logits = model(input_ids=samples[0]).logits[0, -1]
        assert results[0].target_value == pytest.approx(logits.max().item(), rel=1e-5)
        assert results[0].target_token == int(logits.argmax())


def _tiny(architecture: str):
    """A tiny random Gemma 3 (query/key norms, two sliding-window layers of 4 positions beside a
    full-attention one, logits soft-capped) or Qwen2 (q/k/v biases) of 3 layers and 64 tokens."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(3)
    small = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                 max_position_embeddings=64)
    if architecture == "gemma3":
        model = Gemma3ForCausalLM(Gemma3TextConfig(num_key_value_heads=1, head_dim=8, sliding_window=4,
                                                   layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                                   final_logit_softcapping=3.0, **small))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, tie_word_embeddings=False, **small))
    for name, p in model.named_parameters():  # random norms and biases (they start at 0 or 1), so that they matter
        if p.ndim == 1:
            p.data.normal_(0.5 if "norm" in name else 0.0, 0.3)
    return model.eval()


@pytest.mark.parametrize("architecture", ["gemma3", "qwen2"])
def test_gemma3_and_qwen2_scores_equal_reference(architecture):
    """The embedded models' architectures scored against plain autograd on samples longer than the
    sliding window, alone and in a padded batch (each row's sliding window and mask its own)."""
    model = _tiny(architecture)
    layout = weight_layout(model)
    gen = torch.Generator().manual_seed(2)
    samples = [torch.randint(0, 64, (1, n), generator=gen) for n in (12, 9)]
    results, _ = _check_against_reference(model, samples, "max_logit")
    logits = model(input_ids=samples[0]).logits[0, -1]  # soft-capped by the model itself
    assert results[0].target_value == pytest.approx(logits.max().item(), rel=1e-5)
    batch = torch.full((2, 12), 5, dtype=torch.long)
    for k, ids in enumerate(samples):
        batch[k, : ids.shape[1]] = ids[0]
    together = ShardScorer(model, layout, scoring(thresholds=THRESHOLDS, sketch_size=64)).score_batch(batch, [12, 9])
    for a, b in zip(results, together):
        assert b.target_token == a.target_token and b.target_value == pytest.approx(a.target_value, rel=1e-5)
        np.testing.assert_allclose(b.l1, a.l1, rtol=1e-5)


def test_scorer_leaves_model_outputs_unchanged():
    model = tiny_llama()
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(3))
    before = model(input_ids=ids).logits.detach().clone()
    ShardScorer(model, weight_layout(model), scoring(sketch_size=64)).score(ids)
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def test_half_precision_compute_accumulates_in_fp32():
    model = tiny_llama().to(torch.bfloat16)
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(4))
    layout = weight_layout(model)
    scorer = ShardScorer(model, layout, scoring(sketch_size=64))
    scorer.score(ids)
    ref = reference_scores(model.float(), ids)  # same bf16-rounded weights, fp32 graph
    total = sum(s.sum().item() for layer in scorer.sums for s in layer)
    assert all(s.dtype == torch.float32 for layer in scorer.sums for s in layer)
    assert total == pytest.approx(sum(v.sum().item() for v in ref.values()), rel=0.1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_nan_score_stops_with_sample_and_layer(kernel):
    from actpat.scoring import NumericalError

    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    scorer = ShardScorer(model, weight_layout(model), scoring(sketch_size=64), kernel=kernel)
    with pytest.raises(NumericalError, match=r"sample s-7: non-finite score in layer \d"):
        scorer.score(torch.randint(0, 64, (1, 8)), "s-7")


@pytest.mark.slow
def test_smollm2_scores_equal_reference(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt").input_ids
    results, _ = _check_against_reference(model, [ids[:, :12]], "max_logit", rtol=1e-4, atol=1e-8)
    assert results[0].l1.shape == (30, 7)


def test_a_batch_of_padded_samples_scores_like_each_sample_alone():
    """Three samples of different lengths in one pass, padded on the right: every per-sample
    statistic and the accumulated sums equal those of scoring each sample alone."""
    model = tiny_llama()
    layout = weight_layout(model)
    gen = torch.Generator().manual_seed(5)
    lengths = [12, 7, 10]
    alone_scorer = ShardScorer(model, layout, scoring(thresholds=THRESHOLDS, sketch_size=64))
    alone = [alone_scorer.score(torch.randint(0, 64, (1, n), generator=gen), f"s{k}") for k, n in enumerate(lengths)]
    gen = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, 64, (1, n), generator=gen)[0] for n in lengths]
    batch = torch.full((3, 12), 63, dtype=torch.long)  # any pad id: the mask hides it
    for k, r in enumerate(rows):
        batch[k, : len(r)] = r
    batched_scorer = ShardScorer(model, layout, scoring(thresholds=THRESHOLDS, sketch_size=64))
    together = batched_scorer.score_batch(batch, lengths, ["s0", "s1", "s2"])
    for a, b in zip(alone, together):
        assert b.target_token == a.target_token and b.target_value == pytest.approx(a.target_value, rel=1e-6)
        np.testing.assert_allclose(b.l1, a.l1, rtol=1e-6)
        np.testing.assert_allclose(b.l2, a.l2, rtol=1e-6)
        np.testing.assert_allclose(b.sketch, a.sketch, rtol=1e-5, atol=1e-6 * np.abs(a.sketch).max())
        np.testing.assert_allclose(b.hidden_mean, a.hidden_mean, rtol=1e-5, atol=1e-6)
        assert np.abs(b.above - a.above).max() <= 1 and np.abs(b.zeros - a.zeros).max() <= 1
    for i in range(layout.n_layers):
        for j in range(len(layout.matrices)):
            torch.testing.assert_close(batched_scorer.sums[i][j], alone_scorer.sums[i][j], rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("sketch_size", [64, 50])
def test_fused_kernel_equals_the_eager_path(sketch_size):
    """The one-pass CPU kernel against the torch reference path on a padded batch: the float32
    sums bit for bit, counts, zeros and relative counts exactly, L1/L2 to 1e-6, the sketch to
    float32 summation order; also with k not a power of two."""
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[:3] = 0  # exact zeros counted
    layout = weight_layout(model)
    ids = torch.randint(0, 64, (3, 11), generator=torch.Generator().manual_seed(8))
    lengths = [11, 6, 9]
    cfg = scoring(thresholds=THRESHOLDS, relative_multiples=(1.0, 5.0), sketch_size=sketch_size)
    results = {}
    for kernel in KERNELS:
        scorer = ShardScorer(model, layout, cfg, kernel=kernel)
        results[kernel] = (scorer, scorer.score_batch(ids, lengths, ["a", "b", "c"]))
    (fused, got), (eager, want) = results["fused"], results["eager"]
    assert fused.fused and not eager.fused
    for i in range(layout.n_layers):
        for j in range(len(layout.matrices)):
            assert torch.equal(fused.sums[i][j], eager.sums[i][j])
    for a, b in zip(got, want):
        assert (a.above == b.above).all() and (a.zeros == b.zeros).all() and (a.above_rel == b.above_rel).all()
        assert a.zeros[0, 0] >= 3 * layout.shapes[0][1]
        np.testing.assert_allclose(a.l1, b.l1, rtol=1e-6)
        np.testing.assert_allclose(a.l2, b.l2, rtol=1e-6)
        np.testing.assert_allclose(a.sketch, b.sketch, rtol=1e-5, atol=1e-6 * np.abs(b.sketch).max())


def test_fused_kernel_refuses_arrays_it_would_write_out_of_bounds_of():
    from actpat import fused
    from actpat.sketch import GROUP_ROWS

    g, w = np.zeros((1, 4, 5), np.float32), np.zeros((4, 5), np.float32)
    parts = dict(l1=np.zeros((1, 1)), l2=np.zeros((1, 1)), above=np.zeros((1, 1, 1), np.int64), zeros=np.zeros((1, 1), np.int64),
                 sketch=np.zeros((1, 1, 8), np.float32))
    codes = (np.ones(4, np.float32), np.ones(5, np.float32), np.zeros(1, np.int32), np.zeros(GROUP_ROWS, np.int32))
    thr = np.ones(1, np.float32)
    fused.reduce_batch(g, w, w.copy(), thr, codes, **parts)
    with pytest.raises(ValueError, match="sketch codes"):
        fused.reduce_batch(g, w, w.copy(), thr, codes[:3] + (codes[3] + 8,), **parts)
    with pytest.raises(ValueError, match="acc is float64"):
        fused.reduce_batch(g, w, w.astype(np.float64), thr, codes, **parts)
    with pytest.raises(ValueError, match="group_col"):
        fused.reduce_batch(g, w, w.copy(), thr, codes[:3] + (np.zeros(5, np.int32),), **parts)
    with pytest.raises(ValueError, match="counts"):
        fused.count_above(g, w, np.ones((1, 2), np.float32), np.zeros((1, 1, 3), np.int64))


@pytest.mark.parametrize("kernel", KERNELS)
def test_relative_counts_are_exact_on_the_scores_themselves(kernel):
    """One sample: the accumulated sums are its scores s, float32, as the first pass formed them.
    The relative counts equal the number of those s above m × (Σ L1 / weights), counted here on the
    sums in float64 against the real-valued threshold (the second pass forms s again)."""
    model = tiny_llama()
    layout = weight_layout(model)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(9))
    multiples = (0.5, 1.0, 3.0)
    scorer = ShardScorer(model, layout, scoring(relative_multiples=multiples, sketch_size=64), kernel=kernel)
    res = scorer.score(ids)
    mean = res.l1.sum() / (layout.weights_per_layer * layout.n_layers)
    for i in range(layout.n_layers):
        for j in range(len(layout.matrices)):
            s = scorer.sums[i][j].double()
            for k, m in enumerate(multiples):
                assert res.above_rel[i, j, k] == int((s > m * mean).sum())
    assert res.above_rel.sum() > 0


def test_float32_below_is_the_largest_float32_not_above():
    from actpat.scoring import float32_below

    values = np.array([0.1, 1.0, 3.0000001, 1e-30, 2.0**-149 * 1.5])
    got = float32_below(values)
    assert got.dtype == np.float32
    assert (got.astype(np.float64) <= values).all()
    assert (np.nextafter(got, np.float32(np.inf)).astype(np.float64) > values).all()
    assert got[1] == 1.0


def test_no_weight_gradient_is_ever_stored():
    model = tiny_llama()
    ShardScorer(model, weight_layout(model), scoring(sketch_size=64)).score(torch.randint(0, 64, (1, 9)))
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_l2_is_accurate_to_a_millionth_against_float64():
    """Per-sample L2 of the scores: row sums in float32, summed in float64, against a float64
    computation of the same scores."""
    model = tiny_llama()
    layout = weight_layout(model)
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(6))
    res = ShardScorer(model, layout, scoring(sketch_size=64)).score(ids)
    ref = reference_scores(model, ids)
    for i in range(layout.n_layers):
        for j, m in enumerate(layout.matrices):
            exact = float(np.sqrt((ref[layout.parameter_name(i, m)].double() ** 2).sum()))
            assert res.l2[i, j] == pytest.approx(exact, rel=1e-6)


def test_bf16_scores_per_matrix_against_a_bf16_reference():
    """bf16 compute: each matrix's total |s| against an autograd reference run in bf16 with the
    same weights. Tolerance 3% per matrix (bf16 keeps 8 bits of mantissa; the two graphs round
    differently); the float32 reference of the same weights is further from both."""
    model = tiny_llama().to(torch.bfloat16)
    layout = weight_layout(model)
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(4))
    scorer = ShardScorer(model, layout, scoring(sketch_size=64))
    res = scorer.score(ids)
    ref16 = reference_scores(model, ids, upcast=False)
    for i in range(layout.n_layers):
        for j, m in enumerate(layout.matrices):
            want = ref16[layout.parameter_name(i, m)].float()
            assert scorer.sums[i][j].dtype == torch.float32
            assert res.l1[i, j] == pytest.approx(want.double().sum().item(), rel=0.03), (i, m)


@pytest.mark.parametrize("mode", ["auto", "tf32", "float32"])
def test_half_precision_gradient_products_are_exact_and_summed_in_float32(mode):
    """Every way of forming a half-precision batch's per-sample gradients (scoring.GRAD_MATMUL)
    returns float32 equal to the float64 product of the same bf16 operands up to float32 sums
    (bf16 × bf16 products are exact in float32 and in TF32). Off CUDA, "auto" falls back."""
    from actpat.scoring import _half_bmm

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 40, 64, generator=gen).to(torch.bfloat16)
    b = torch.randn(3, 64, 24, generator=gen).to(torch.bfloat16)
    got = _half_bmm(a, b, mode)
    want = torch.bmm(a.double(), b.double())
    assert got.dtype == torch.float32 and got.shape == (3, 40, 24)
    scale = torch.bmm(a.double().abs(), b.double().abs())
    assert ((got.double() - want).abs() <= 64 * 2.0**-24 * scale).all()
    assert not torch.backends.cuda.matmul.allow_tf32  # the global switch is put back
