"""The GPU kernels (``actpat.triton_kernels``) on the CPU, through Triton's interpreter, against the
eager torch path: stage A (gradients formed by a batched matmul, then reduced by the kernel) and
stage B (each gradient tile formed inside the kernel).

The interpreter is chosen when triton is first imported, so conftest.py sets TRITON_INTERPRET before
anything imports it (transformers does when it builds a model); the ``interpreter`` fixture checks
it. Triton is in the test extra (pyproject.toml); on CI (CI set) a missing triton fails instead of
skipping."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from actpat.models import weight_layout
from actpat.scoring import ShardScorer
from conftest import scoring, tiny_llama

THRESHOLDS = (1e-3, 1e-4)
STAGES = ["triton", "triton-gradients"]


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        if os.environ.get("CI"):
            pytest.fail("triton is not installed (the test extra pins it): the GPU kernels go untested")
        pytest.skip("triton is not installed")
    assert os.environ.get("TRITON_INTERPRET") == "1", "conftest.py sets TRITON_INTERPRET=1 before triton loads"


def _score(model, kernel, ids, lengths, **overrides):
    cfg = scoring(thresholds=THRESHOLDS, relative_multiples=(1.0, 5.0), sketch_size=50, **overrides)
    scorer = ShardScorer(model, weight_layout(model), cfg, kernel=kernel)
    return scorer, scorer.score_batch(ids, lengths, [f"s{n}" for n in range(len(lengths))])


def _assert_same(got_scorer, got, want_scorer, want, sums_rtol=1e-6):
    for got_layer, want_layer in zip(got_scorer.sums, want_scorer.sums):
        for a, b in zip(got_layer, want_layer):
            torch.testing.assert_close(a, b, rtol=sums_rtol, atol=1e-7 * float(b.abs().max()))
    for a, b in zip(got, want):
        assert (a.above == b.above).all() and (a.zeros == b.zeros).all() and (a.above_rel == b.above_rel).all()
        np.testing.assert_allclose(a.l1, b.l1, rtol=1e-6)
        np.testing.assert_allclose(a.l2, b.l2, rtol=1e-6)
        np.testing.assert_allclose(a.sketch, b.sketch, rtol=1e-5, atol=1e-6 * np.abs(b.sketch).max())


@pytest.mark.parametrize("kernel", STAGES)
def test_kernels_equal_the_eager_path_on_a_padded_batch(kernel):
    """A tiny Llama (matrices of 16, 32 and 48 rows: tiles inside one row group and tiles of
    several groups, the last partly outside the matrix), three samples padded on the right, some
    exact zeros: sums to float32 rounding, counts and relative counts exactly, L1/L2 to 1e-6,
    sketches to float32 rounding."""
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[:3] = 0
    ids = torch.randint(0, 64, (3, 11), generator=torch.Generator().manual_seed(8))
    lengths = [11, 6, 9]
    eager = _score(model, "eager", ids, lengths)
    got = _score(model, kernel, ids, lengths)
    _assert_same(*got, *eager)
    assert got[1][0].zeros[0, 0] >= 3 * 32 and got[1][0].above_rel.sum() > 0


def test_stage_b_skips_padding_and_scores_each_sample_as_alone():
    """Stage B forms each sample's gradient over its real positions only: a padded batch gives each
    sample the statistics it has alone."""
    model = tiny_llama()
    gen = torch.Generator().manual_seed(5)
    rows = [torch.randint(0, 64, (n,), generator=gen) for n in (12, 7, 10)]
    batch = torch.full((3, 12), 63, dtype=torch.long)
    for k, r in enumerate(rows):
        batch[k, : len(r)] = r
    _, together = _score(model, "triton", batch, [12, 7, 10])
    for r, b in zip(rows, together):
        _, (alone,) = _score(model, "triton", r[None], [len(r)])
        np.testing.assert_allclose(b.l1, alone.l1, rtol=1e-6)
        np.testing.assert_allclose(b.l2, alone.l2, rtol=1e-6)
        np.testing.assert_allclose(b.sketch, alone.sketch, rtol=1e-5, atol=1e-6 * np.abs(alone.sketch).max())
        assert np.abs(b.above - alone.above).max() <= 1 and (b.zeros == alone.zeros).all()


def test_half_precision_operands_are_widened_exactly():
    """A bfloat16 model: stage B's products of bfloat16 operands (widened to float32 under the
    interpreter, as exact as the GPU's tensor cores) against the eager path's float32 bmm of the
    same operands: equal up to the order of float32 sums."""
    model = tiny_llama().to(torch.bfloat16)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(4))
    _assert_same(*_score(model, "triton", ids, [10, 8]), *_score(model, "eager", ids, [10, 8]), sums_rtol=1e-5)


def test_gpt2_conv1d_weights_are_scored_in_their_own_layout():
    """GPT-2 stores its weights transposed (in × out): the kernel takes (x, δ) instead of (δ, x)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)).eval()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))
    for kernel in STAGES:
        _assert_same(*_score(model, kernel, ids, [9, 5]), *_score(model, "eager", ids, [9, 5]))


@pytest.mark.parametrize("rows, cols, k", [(200, 70, 37), (16, 16, 8), (130, 129, 64)])
def test_one_launch_against_torch(rows, cols, k):
    """The kernel alone on a matrix of several row groups and tiles (the last partial), against
    the same quantities computed with torch from their definitions; the float32 sums start from
    earlier values and gain the batch in order."""
    from actpat import triton_kernels
    from actpat.sketch import LayerHasher, sketch_into

    gen = torch.Generator().manual_seed(rows)
    w = torch.randn(rows, cols, generator=gen)
    w[0, :5] = 0
    delta, x = torch.randn(3, 20, rows, generator=gen), torch.randn(3, 20, cols, generator=gen)
    lengths = torch.tensor([20, 13, 1], dtype=torch.int32)
    delta[1, 13:] = 0
    delta[2, 1:] = 0
    codes = LayerHasher([(rows, cols)], k, seed=3).codes(0, 0, "cpu")
    g = torch.bmm(delta.transpose(1, 2), x)
    s = (g * w).abs()
    start = torch.rand(rows, cols, generator=gen)
    thresholds = torch.tensor([0.5, 2.0])
    want_sketch = torch.zeros(3, k)
    sketch_into(want_sketch, s, codes)
    for form in (True, False):
        acc, sketch = start.clone(), torch.zeros(3, k)
        kw = dict(pq=(delta, x), lengths=lengths) if form else dict(g=g)
        part = triton_kernels.reduce(w, acc, thresholds, codes, sketch, **kw)
        torch.testing.assert_close(acc, start + s[0] + s[1] + s[2], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(part["l1"].double().sum(0), s.double().sum((1, 2)), rtol=1e-6, atol=0)
        torch.testing.assert_close(part["l2"].double().sum(0).sqrt(), s.double().norm(dim=(1, 2)), rtol=1e-6, atol=0)
        for t, thr in enumerate(thresholds):
            assert part["above"][..., t].sum(0).tolist() == (s > thr).sum((1, 2)).tolist()
        assert part["zeros"].sum(0).tolist() == (s == 0).sum((1, 2)).tolist()
        torch.testing.assert_close(sketch, want_sketch, rtol=1e-5, atol=1e-5 * float(want_sketch.abs().max()))
        relative = torch.tensor([[1.0, 3.0], [0.1, 0.7], [0.0, 1e-3]])
        counts = triton_kernels.count_above(w, relative, **kw).sum(0)
        assert counts.tolist() == [[int((s[b] > relative[b, m]).sum()) for m in range(2)] for b in range(3)]
