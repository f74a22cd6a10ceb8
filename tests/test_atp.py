"""ATP (Huang et al., ICML 2025, arXiv 2502.14770): the arithmetic progression against
hand-computed values, the choice of the common difference against an independent scoring of each
trial (the pruned model's calibration perplexity through transformers' own loss), reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actpat.allocations import AllocationInputs, Atp, atp_beta_max, atp_candidates, atp_ratios
from actpat.decoder import weight_layout
from actpat.errors import PruningError
from actpat.pruning import prune_model
from conftest import default_settings, tiny_llama


def test_the_progression_against_hand_computed_values():
    """s_i = S − β(L − 1)/2 + β(i − 1): four layers at 50% with β = 0.1 are 35, 45, 55, 65%."""
    np.testing.assert_allclose(atp_ratios(4, 0.5, 0.1).ratios, [0.35, 0.45, 0.55, 0.65], rtol=0, atol=1e-15)
    np.testing.assert_allclose(atp_ratios(5, 0.7, 0.05).ratios, [0.6, 0.65, 0.7, 0.75, 0.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(atp_ratios(3, 0.6, 0.0).ratios, [0.6, 0.6, 0.6])  # β = 0: uniform
    # the largest β within [0, 0.99] at 70% over 4 layers: the last layer reaches 0.99, so
    # β = 2 · 0.29 / 3 = 0.19333..., and the progression is 0.41, 0.60333, 0.79667, 0.99
    assert atp_beta_max(4, 0.7) == pytest.approx(0.58 / 3, abs=1e-15)
    np.testing.assert_allclose(atp_ratios(4, 0.7, 0.58 / 3).ratios, [0.41, 0.41 + 0.58 / 3, 0.99 - 0.58 / 3, 0.99], atol=1e-15)
    assert atp_beta_max(4, 0.3) == pytest.approx(0.2, abs=1e-15)  # at 30% the first layer bounds it: 2 · 0.3 / 3
    np.testing.assert_allclose(atp_candidates(4, 0.7, 4), np.array([1, 2, 3, 4]) * 0.58 / 12, atol=1e-15)
    # beyond β_max the layers outside the bounds are clipped and the mean restored: 3 layers at 50%
    # with β = 0.6 give -0.1, 0.5, 1.1; clipped to 0 and 0.99, the middle one takes 0.51
    over = atp_ratios(3, 0.5, 0.6)
    np.testing.assert_allclose(over.ratios, [0.0, 0.51, 0.99], atol=1e-12)
    assert over.clipped == [0, 2]
    with pytest.raises(PruningError, match="β ≥ 0"):
        atp_ratios(3, 0.5, -0.1)


def test_the_difference_with_the_lowest_trial_score_is_chosen():
    """Six layers at 50%: β_max = 2 · 0.49 / 5 = 0.196 and five trials are 0.0392, 0.0784, ...;
    a trial score that prefers a spread (last − first layer, 5β) of 0.4 picks β = 0.0784; a flat
    score picks the smallest β."""
    seen = []

    def prefers_spread(ratios):
        seen.append(np.asarray(ratios).copy())
        return (ratios[-1] - ratios[0] - 0.4) ** 2

    inputs = AllocationInputs(6, (0.0, 0.99), settings=Atp(None, 5), trial=prefers_spread)
    from actpat.allocations import _atp

    info, details = _atp(0.5, inputs)
    np.testing.assert_allclose(details["atp"]["trial_betas"], [0.0392, 0.0784, 0.1176, 0.1568, 0.196], atol=1e-15)
    assert details["atp"]["beta"] == pytest.approx(0.0784, abs=1e-15) and details["atp"]["chosen_from_trials"]
    np.testing.assert_allclose(info.ratios, 0.5 + 0.0784 * (np.arange(6) - 2.5), atol=1e-15)
    assert len(seen) == 5 and all(abs(r.mean() - 0.5) < 1e-12 for r in seen)
    flat = AllocationInputs(6, (0.0, 0.99), settings=Atp(None, 5), trial=lambda ratios: 1.0)
    assert _atp(0.5, flat)[1]["atp"]["beta"] == pytest.approx(0.0392, abs=1e-15)
    fixed = AllocationInputs(6, (0.0, 0.99), settings=Atp(0.01, 5))  # no search, no calibration needed
    info, details = _atp(0.5, fixed)
    assert details["atp"]["beta"] == 0.01 and not details["atp"]["chosen_from_trials"] and details["atp"]["trial_betas"] == []
    np.testing.assert_allclose(info.ratios, [0.475, 0.485, 0.495, 0.505, 0.515, 0.525], atol=1e-15)
    with pytest.raises(PruningError, match="calibration windows"):
        _atp(0.5, AllocationInputs(6, (0.0, 0.99), settings=Atp(None, 5)))


def _windows(vocab=64, n=3, length=12):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(1))


def _calibration_nll_by_transformers(model, windows) -> float:
    """The mean next-token NLL over equal-length windows, from transformers' own loss."""
    with torch.no_grad():
        return float(np.mean([model(w[None], labels=w[None]).loss.item() for w in windows]))


@pytest.mark.parametrize("method", ["wanda-atp", "sparsegpt-atp"])
def test_atp_on_a_model_scores_each_trial_by_the_pruned_models_calibration_perplexity(method):
    """Each trial's score is the calibration windows' NLL of the model pruned with that β (checked
    by pruning a fresh model with the β fixed and asking transformers for the loss); the chosen β
    has the lowest; the trials leave no trace (the result equals a fresh model pruned with the
    chosen β, bit for bit, SparseGPT's changed weights included); and the whole is reproducible."""
    windows = _windows()
    base_options = {"block": 16, "damp": 0.01} if method.startswith("sparsegpt") else None

    def run(settings):
        model = tiny_llama()
        layout = weight_layout(model)
        result = prune_model(model, layout, method, 0.5, calibration=windows, base_options=base_options,
                             inputs=AllocationInputs(layout.n_layers, (0.0, 0.99), settings=settings))
        return model, result

    model, result = run(Atp(None, 3))
    atp = result.allocation["atp"]
    betas, nll = atp["trial_betas"], atp["trial_calibration_nll"]
    assert len(betas) == 3 and atp["beta"] == betas[int(np.argmin(nll))]
    for beta, score in zip(betas, nll):
        fixed_model, fixed = run(Atp(float(beta), 1))
        assert not fixed.allocation["atp"]["chosen_from_trials"]
        assert score == pytest.approx(_calibration_nll_by_transformers(fixed_model, windows), rel=1e-5)
        if beta == atp["beta"]:
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fixed_model.state_dict().values()))
            np.testing.assert_array_equal(result.ratios, fixed.ratios)
    np.testing.assert_allclose(np.diff(result.ratios), atp["beta"], atol=1e-12)  # increasing, by β
    assert abs(result.ratios.mean() - 0.5) < 1e-12
    again_model, again = run(Atp(None, 3))
    assert again.allocation["atp"]["trial_calibration_nll"] == nll and again.allocation["atp"]["beta"] == atp["beta"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again_model.state_dict().values()))


def test_atp_is_a_calibrated_allocation_with_its_settings_in_the_job():
    from actpat.methods import METHODS
    from actpat.settings import PruningRun

    assert {"wanda-atp", "sparsegpt-atp"} <= set(METHODS) and "magnitude-atp" not in METHODS
    assert METHODS["wanda-atp"].calibrated and not METHODS["wanda-atp"].uses_density
    s = default_settings(**{"pruning.atp.trials": 3})
    job = s.prune_job(PruningRun("wanda-atp", "unstructured", 0.6, "code"))
    assert job.allocation == {"beta": None, "trials": 3} and job.base is None
    assert default_settings(**{"pruning.atp.beta": 0.002}).prune_job(job.run).allocation == {"beta": 0.002, "trials": 5}
