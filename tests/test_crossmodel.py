"""results/MODELS.md from hand-made per-model results: the cells, the allocations' ranks and the
density profiles against values computed here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actpat.crossmodel import allocation_ranks, build_page, claim_rows, density_profiles


def _v1(method, sparsity, ppl, ratio=None, lo=None, hi=None, n=16):
    return {"method": method, "structure": "unstructured", "sparsity": sparsity, "perplexity": ppl, "vs_uniform": ratio,
            "vs_uniform_low": lo, "vs_uniform_high": hi, "n_windows": n}


RESULTS = {
    "a": {"findings": {"finding1_density": {"value": 0.8, "ci95": [0.7, 0.9], "holds": True},
                       "finding2_similarity": {"value": -0.01, "ci95": [-0.03, 0.01], "holds": False},
                       "finding3_relevance": {"value": None, "holds": None, "undefined": "fewer than 3 domain pairs"},
                       "layers": {"n": 30, "shallow": [0, 15], "deep": [15, 28]}, "architecture": "LlamaForCausalLM",
                       "scored_matrices": {"self_attn.q_proj": [576, 576]}},
          "pruning": {"validation1": [_v1("wanda", 0.5, 40.0), _v1("wanda-density", 0.5, 38.0, 0.95, 0.9, 0.99),
                                      _v1("wanda-owl", 0.5, 41.0, 1.02, 0.98, 1.06), _v1("sparsegpt", 0.5, 30.0),
                                      _v1("sparsegpt-owl", 0.5, 29.0, 0.97, 0.94, 1.01),
                                      {"method": "dense", "structure": "-", "sparsity": 0.0, "perplexity": 20.0}]},
          "pairs": {}},
    "b": {"findings": None,
          "pruning": {"validation1": [_v1("wanda", 0.5, 60.0), _v1("wanda-density", 0.5, 66.0, 1.1, 1.05, 1.15),
                                      _v1("wanda-owl", 0.5, 59.0, 0.98, 0.96, 1.0)]},
          "pairs": {}},
}


def test_cells_carry_each_models_statistic_interval_and_verdict():
    rows = dict(claim_rows(RESULTS))
    f1 = next(v for k, v in rows.items() if k.startswith("Finding 1"))
    assert f1["a"] == "ratio 0.800 [0.700, 0.900]; **yes**" and f1["b"] == "not run"
    f3 = next(v for k, v in rows.items() if k.startswith("Finding 3"))
    assert f3["a"] == "ρ undefined; undefined (fewer than 3 domain pairs)"
    v1 = next(v for k, v in rows.items() if k.startswith("Validation 1: wanda-density"))
    assert v1["a"] == "ratio 0.950 [0.900, 0.990]; **yes**"  # interval below 1
    assert v1["b"] == "ratio 1.100 [1.050, 1.150]; **no**"
    assert not any(k.startswith("Validation 2") for k in rows)  # no model ran it: no row


def test_allocations_are_ranked_by_perplexity_within_model_base_and_sparsity():
    ranks = allocation_ranks(RESULTS)
    assert set(ranks) == {("wanda", 0.5), ("sparsegpt", 0.5)}
    wanda = ranks[("wanda", 0.5)]
    # model a: density 38 < uniform 40 < owl 41; model b: owl 59 < uniform 60 < density 66
    assert [wanda[a]["a"].split(" ")[0] for a in ("density-abs", "uniform", "owl")] == ["1", "2", "3"]
    assert [wanda[a]["b"].split(" ")[0] for a in ("owl", "uniform", "density-abs")] == ["1", "2", "3"]
    assert wanda["density-abs"]["b"] == "3 · 66.00 · 1.100 [1.050, 1.150]"
    assert "b" not in ranks[("sparsegpt", 0.5)]["uniform"]


def test_density_profiles_at_relative_depth():
    rows = [{"domain": d, "definition": "active_rel_share:1", "layer": layer, "share": share}
            for d, shares in (("x", [0.1, 0.3, 0.2, 0.0]), ("y", [0.3, 0.1, 0.2, 0.4])) for layer, share in enumerate(shares)]
    rows.append({"domain": "x", "definition": "active_abs_share:2e-06", "layer": 0, "share": 1.0})
    (x, mean, low, high), = density_profiles({"m": pd.DataFrame(rows)}, "active_rel_share:1").values()
    np.testing.assert_allclose(x, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(mean, [0.2, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(low, [0.1, 0.1, 0.2, 0.0])
    np.testing.assert_allclose(high, [0.3, 0.3, 0.2, 0.4])


def test_page_names_every_model_and_what_differs(tmp_path):
    from actpat.settings import ModelSpec

    from conftest import default_settings

    analysis = default_settings().analysis

    class Job:
        models = {m: ModelSpec(m, "smollm2", None, "float32") for m in RESULTS}
        gamma = 2e-5

    Job.analysis = analysis
    text = build_page(RESULTS, Job, "figures/models_density.png")
    assert "| claim | a | b |" in text and "### wanda at 0.5" in text
    assert "**a** (`smollm2`): LlamaForCausalLM, 30 decoder layers; shallow layers [0, 15), deep [15, 28)" in text
    assert "self_attn.q_proj 576×576" in text


@pytest.mark.parametrize("n_models", [2])
def test_rule_plans_the_page_only_with_several_models(tmp_path, n_models):
    import yaml

    from conftest import SMOKE, run_snakemake

    cfg = yaml.safe_load(SMOKE.read_text())
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one = run_snakemake(["-n", "--configfile", str(path)], cwd=tmp_path)
    assert one.returncode == 0 and "models_page" not in one.stdout
    cfg["models"] = {f"m{i}": {"source": "smollm2"} for i in range(n_models)}
    path.write_text(yaml.safe_dump(cfg))
    two = run_snakemake(["-n", "--configfile", str(path)], cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "models_page" in two.stdout


def test_layer_ranges_are_written_in_terms_of_depth():
    from actpat.crossmodel import _range
    from actpat.settings import layer_range

    assert _range((0.0, 0.5)) == "[0, L/2)" and _range((0.5, -2)) == "[L/2, L − 2)" and _range((20, -2)) == "[20, L − 2)"
    # the text agrees with the layers the definition picks, at two depths
    for n in (18, 24):
        assert list(layer_range(0.5, -2, n)) == list(range(n // 2, n - 2))
