"""Every artifact bound to what made it (issue 33, part 1), tried on a real run: a mask copied from
another run, a perplexity result copied from another run, truncated, edited, or edited with its
checksum made to fit. Each stops the job that reads it with one line naming the file and what made
it against what was expected; nothing downstream (the report, SUMMARY.md) is rewritten.

One real run of the workflow (a tiny random Llama, uniform Wanda and Wanda with OWL's allocation at
50%), copied for each case as ``cp -r`` copies (new modification times).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import google_crc32c
import pytest
import yaml

from conftest import ROOT, run_snakemake, tiny_llama
from test_hostile import tiny_run_inputs

MODEL = "tiny"
WANDA = "prose/wanda/unstructured/0.5"
OWL = "prose/wanda-owl/unstructured/0.5"
RUNS = f"results/{MODEL}/pruning/runs"
SUMMARY = f"results/{MODEL}/SUMMARY.md"


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, smol_tokenizer):
    """The finished run's directory."""
    where = tmp_path_factory.mktemp("bound")
    tiny_llama(vocab_size=len(smol_tokenizer), layers=6).save_pretrained(where / "model")  # the deep range needs 6
    smol_tokenizer.save_pretrained(where / "model")
    cfg = tiny_run_inputs(where, "prose")
    cfg["pruning"] = {"methods": ["wanda", "wanda-owl"], "sparsities": [0.5], "nm": [],
                      "calibration": {"domain": "prose", "windows": 2, "seq_len": 16},
                      "evaluation": {"seq_len": 16, "max_windows": 4, "bootstrap": 50,
                                     "accuracy": {"lastword": 2, "context_words": 4}},
                      "validation2": {"method": "wanda"}}
    (where / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(["--cores", "2", "--configfile", "config.yaml"], cwd=where)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return where


def _copy(pruned, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(pruned, work, symlinks=True)
    return work


def _rerun(work):
    return run_snakemake(["--cores", "2", "--configfile", "config.yaml"], cwd=work)


def _error_line(log) -> str:
    lines = [line for line in log.read_text().splitlines() if line.startswith("actpat error: ")]
    assert len(lines) == 1, log.read_text()[-3000:]
    return lines[0].removeprefix("actpat error: ")


def _crc(content: dict) -> int:
    """The checksum a result carries, by its documented rule (independently of actpat.results): the
    CRC-32C of the compact, key-sorted JSON of every field but crc32c."""
    body = {k: v for k, v in content.items() if k != "crc32c"}
    return google_crc32c.value(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _forge(path, edit):
    """Edit a JSON result and give it the checksum of its new content (a writer that got it wrong)."""
    content = json.loads(path.read_text())
    edit(content)
    content["crc32c"] = _crc(content)
    path.write_text(json.dumps(content))


def _edit(path, edit):
    """Edit a JSON result as a text editor would, its checksum left as it was."""
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content, indent=2))


def test_a_result_is_read_back_checked_and_named_on_every_failure(tmp_path):
    import numpy as np

    from actpat.errors import ResultError
    from actpat.results import read_json, write_json

    path = tmp_path / "r.json"
    write_json({"model": "m", "run": "a/b", "values": [0.5, float("nan")], "n": np.int64(3)}, path, "perplexity")
    content = json.loads(path.read_text())
    assert content["crc32c"] == _crc(content) and content["values"] == [0.5, None] and content["n"] == 3
    assert read_json(path, "perplexity", model="m", run="a/b")["values"] == [0.5, None]
    text = path.read_text()
    rerun = "; delete it and run the workflow again (the job that writes it reruns)"
    failures = {
        "another run": (text, dict(run="a/c"), f"{path}: made for run a/b, not for run a/c"),
        "another kind": (text, dict(kind="zero-shot"), f"{path}: not a zero-shot result (its kind: actpat.perplexity)"),
        "truncated": (text[:-20], {}, f"{path}: not valid JSON ("),
        "an edited digit": (text.replace("0.5", "0.6"), {}, f"{path}: its content does not match its checksum (edited "
                                                              f"or damaged after it was written){rerun}"),
        "NaN written in": (text.replace("null", "NaN"), {}, f"{path}: not valid JSON (NaN is not a JSON number"),
        "no checksum": (json.dumps({k: v for k, v in content.items() if k != "crc32c"}), {},
                        f"{path}: has no checksum (written before results carried one, or not by actpat); rerun "
                        "the jobs that write such files: snakemake --forcerun perplexity perplexity_dense"),
        "not an object": ("[1, 2]", {}, f"{path}: not a JSON object{rerun}"),
    }
    for case, (written, expected, message) in failures.items():
        path.write_text(written)
        with pytest.raises(ResultError) as err:
            read_json(path, **{"kind": "perplexity", "model": "m", "run": "a/b", **expected})
        assert str(err.value).startswith(message), (case, str(err.value))
    with pytest.raises(ResultError, match=f"^{tmp_path / 'none.json'}: missing"):
        read_json(tmp_path / "none.json", "perplexity")


def test_a_result_carries_its_identity_and_the_checksum_of_its_content(pruned):
    for path in [pruned / RUNS / WANDA / "perplexity/prose.json", pruned / RUNS / WANDA / "pruning.json",
                 pruned / f"results/{MODEL}/findings.json", pruned / f"results/{MODEL}/pruning/summary.json",
                 pruned / f"results/{MODEL}/pairs/mine/summary.json"]:
        content = json.loads(path.read_text())
        assert content["crc32c"] == _crc(content) and content["model"] == MODEL, path
    ppl = json.loads((pruned / RUNS / WANDA / "perplexity/prose.json").read_text())
    pruning = json.loads((pruned / RUNS / WANDA / "pruning.json").read_text())
    assert ppl["kind"] == "actpat.perplexity" and ppl["run"] == pruning["run"] == WANDA and ppl["set"] == "prose"
    # the perplexity names the mask it measured: the one its run's pruning.json describes
    inventory = json.loads((pruned / RUNS / WANDA / "mask.zarr/actpat_inventory.json").read_text())
    assert ppl["mask_crc32c"] == pruning["mask_crc32c"] == inventory["crc32c"]
    # its headline number is exp(Σ NLL / Σ tokens) of its own windows (the reader's check, recomputed here independently)
    assert ppl["perplexity"] == pytest.approx(math.exp(sum(ppl["window_nll"]) / sum(ppl["window_tokens"])), rel=1e-12)
    dense = json.loads((pruned / f"results/{MODEL}/pruning/dense/perplexity/prose.json").read_text())
    assert dense["run"] == "dense" and dense["mask_crc32c"] is None


def test_a_mask_copied_from_another_run_is_refused(pruned, tmp_path):
    """The issue's case: wanda's mask replaced by wanda-owl's, then a rerun. Before: rc 0, and
    SUMMARY.md compared wanda-owl with itself (ratio 1.000 [1.000, 1.000])."""
    work = _copy(pruned, tmp_path)
    summary = (work / SUMMARY).read_text()
    shutil.rmtree(work / RUNS / WANDA / "mask.zarr")
    shutil.copytree(work / RUNS / OWL / "mask.zarr", work / RUNS / WANDA / "mask.zarr", copy_function=shutil.copy)
    res = _rerun(work)
    assert res.returncode != 0
    log = work / f"logs/{MODEL}/perplexity/{WANDA}/prose.log"
    assert _error_line(log) == (f"results/{MODEL}/pruning/runs/{WANDA}/mask.zarr: made for run {OWL}, not for run {WANDA}")
    assert "applied" not in log.read_text()  # refused before the model was loaded and masked
    assert (work / SUMMARY).read_text() == summary


CASES = {
    # another run's perplexity in wanda's directory (its checksum intact)
    "copied from another run": (
        lambda work, path: shutil.copy(work / RUNS / OWL / "perplexity/prose.json", path),
        r": made for run prose/wanda-owl/unstructured/0\.5, mask_crc32c \d+, not for run prose/wanda/unstructured/0\.5, "
        r"mask_crc32c \d+$"),
    # before: a bare JSONDecodeError naming no file
    "truncated": (
        lambda work, path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
        r": not valid JSON \(.*\): truncated or edited; delete it and run the workflow again"),
    # before: reported as is ("199.23 vs 300.00; ratio 1.086")
    "headline edited": (
        lambda work, path: _edit(path, lambda c: c.update(perplexity=300.0)),
        r": its content does not match its checksum \(edited or damaged after it was written\)"),
    # before: a validation-1 verdict flipped with rc 0
    "window losses scaled": (
        lambda work, path: _edit(path, lambda c: c.update(window_nll=[1.15 * x for x in c["window_nll"]])),
        r": its content does not match its checksum"),
    # before: matplotlib's "'yerr' must not contain negative values"
    "headline below its interval": (
        lambda work, path: _edit(path, lambda c: c.update(perplexity=1.0)),
        r": its content does not match its checksum"),
    # a file that disagrees with itself, even with a checksum that fits
    "headline edited, checksum fitted": (
        lambda work, path: _forge(path, lambda c: c.update(perplexity=300.0)),
        r": perplexity 300\.0 disagrees with [0-9.]+ recomputed from its window losses; the file contradicts itself"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_perplexity_result_that_is_not_its_runs_is_refused_by_the_report(pruned, tmp_path, case):
    mutate, message = CASES[case]
    work = _copy(pruned, tmp_path)
    summary = (work / SUMMARY).read_text()
    path = work / RUNS / WANDA / "perplexity/prose.json"
    mutate(work, path)
    res = _rerun(work)
    assert res.returncode != 0
    line = _error_line(work / f"logs/{MODEL}/pruning_report.log")
    assert line.startswith(f"results/{MODEL}/pruning/runs/{WANDA}/perplexity/prose.json: ")
    assert re.search(message, line), line
    assert (work / SUMMARY).read_text() == summary


def test_summary_refuses_a_damaged_findings_file(pruned, tmp_path):
    work = _copy(pruned, tmp_path)
    path = work / f"results/{MODEL}/findings.json"
    _forge(path, lambda c: c.update(model="another-model"))
    res = _rerun(work)
    assert res.returncode != 0
    assert _error_line(work / f"logs/{MODEL}/summary.log") == (
        f"results/{MODEL}/findings.json: made for model another-model, not for model {MODEL}")


# ---- the checks of a perplexity result's own numbers, one by one, on the run's real file -----------


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(perplexity=c["perplexity"] * (1 + 1e-6)), "perplexity .* disagrees with .* recomputed from its window losses"),
    (lambda c: c.update(tokens_predicted=c["tokens_predicted"] + 1), "tokens_predicted .* disagrees with .* window token counts"),
    (lambda c: c["window_nll"].__setitem__(0, -c["window_nll"][0]), "a window loss is negative or not finite"),
    (lambda c: c.update(window_nll=c["window_nll"][:-1]), "n_windows 3, but 2 window losses, 3 token counts and 3 window ids"),
    (lambda c: c["window_tokens"].__setitem__(0, 3), r"window token counts other than seq_len - 1 = 15"),
    (lambda c: c["accuracy"].update(value=c["accuracy"]["value"] + 0.25), "last-word accuracy .* disagrees with .* item results"),
    (lambda c: c["accuracy"]["item_correct"].__setitem__(0, 0.5), "an item result other than 0 or 1"),
    (lambda c: c.pop("window_ids"), "unexpected content \\(KeyError: 'window_ids'\\)"),
    (lambda c: c.update(set="medical"), "made for set medical, not for set prose"),
])
def test_a_perplexity_result_that_disagrees_with_itself_is_refused(pruned, tmp_path, edit, message):
    from actpat.errors import ResultError
    from actpat.pruning_report import read_perplexity

    original = pruned / RUNS / WANDA / "perplexity/prose.json"
    content = json.loads(original.read_text())
    assert content["accuracy"]["value"] is not None and content["n_windows"] == 3  # the checks below have data to check
    path = tmp_path / "prose.json"
    shutil.copy(original, path)
    assert read_perplexity(path, MODEL, WANDA, "prose", content["mask_crc32c"])["perplexity"] == content["perplexity"]
    _forge(path, edit)
    with pytest.raises(ResultError, match=f"^{path}: {message}"):
        read_perplexity(path, MODEL, WANDA, "prose", content["mask_crc32c"])


def test_a_pruning_report_that_disagrees_with_itself_is_refused(pruned, tmp_path):
    from actpat.errors import ResultError
    from actpat.pruning_report import read_pruning
    from actpat.settings import PruningRun

    run = PruningRun("wanda", "unstructured", 0.5, "prose")
    path = tmp_path / "pruning.json"
    shutil.copy(pruned / RUNS / WANDA / "pruning.json", path)
    assert read_pruning(path, MODEL, run)["run"] == WANDA
    with pytest.raises(ResultError, match=f"^{path}: made for run {WANDA}, not for run medical/wanda/unstructured/0.5$"):
        read_pruning(path, MODEL, PruningRun("wanda", "unstructured", 0.5, "medical"))
    with pytest.raises(ResultError, match=f"^{path}: made for run {WANDA}, method wanda, not for run {OWL}, method wanda-owl$"):
        read_pruning(path, MODEL, PruningRun("wanda-owl", "unstructured", 0.5, "prose"))
    good = path.read_text()
    _forge(path, lambda c: c["calibration"].update(domain="medical"))
    with pytest.raises(ResultError, match=f"^{path}: made for calibration medical, not for calibration prose$"):
        read_pruning(path, MODEL, run)
    path.write_text(good)
    _forge(path, lambda c: c.update(overall_sparsity=0.25))
    with pytest.raises(ResultError, match="overall_sparsity 0.25 disagrees with .* recomputed from its layer sparsities"):
        read_pruning(path, MODEL, run)


# ---- the evaluation and pruning jobs are told what they read -----------------------------------------


def _actpat(args, cwd):
    return subprocess.run([sys.executable, "-m", "actpat", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "workflow")})


def _one_line(res) -> str:
    errors = [line for line in res.stderr.splitlines() if line.startswith("actpat error: ")]
    assert res.returncode == 1 and len(errors) == 1, res.stderr[-3000:]
    return errors[0].removeprefix("actpat error: ")


def test_evaluation_jobs_refuse_inputs_made_for_another_run_or_set(pruned, tmp_path):
    from actpat.settings import EvaluateJob, ZeroShotJob
    from actpat.settings_json import encode

    model = f"resources/models/{MODEL}"
    owl_mask = f"{RUNS}/{OWL}/mask.zarr"
    zero_shot = ["zero-shot", "--settings", encode(ZeroShotJob("float32", ("none",), None, None, 1)), "--model-dir", model,
                 "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "z.json")]
    assert _one_line(_actpat([*zero_shot, "--mask", owl_mask, "--run", WANDA], pruned)) == (
        f"{owl_mask}: made for run {OWL}, not for run {WANDA}")
    assert _one_line(_actpat([*zero_shot, "--mask", owl_mask], pruned)) == (
        f"a pruning run is evaluated with both its mask and its key (given: mask {owl_mask}, run None)")

    def perplexity(windows: str, evalset: str) -> list[str]:
        return ["perplexity", "--settings", encode(EvaluateJob("float32", 0, 4)), "--model-dir", model, "--windows",
                windows, "--set", evalset, "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "p.json")]

    windows = f"results/{MODEL}/pruning/text/eval/prose.zarr"
    assert _one_line(_actpat(perplexity(windows, "medical"), pruned)) == (
        f"{windows}: made for domain prose, not for domain medical")
    calibration = f"results/{MODEL}/pruning/text/calibration/prose.zarr"
    assert _one_line(_actpat(perplexity(calibration, "prose"), pruned)) == (
        f"{calibration}: made for purpose calibration, not for purpose evaluation")
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "z.json").exists()


def test_the_prune_job_refuses_calibration_windows_of_another_domain(pruned, tmp_path):
    from actpat.settings import PruningRun, load_settings
    from actpat.settings_json import encode

    settings = load_settings(yaml.safe_load((pruned / "config.yaml").read_text()))
    job = settings.prune_job(PruningRun("wanda", "unstructured", 0.5, "medical"))
    calibration = f"results/{MODEL}/pruning/text/calibration/prose.zarr"
    res = _actpat(["prune", "--settings", encode(job), "--model-dir", f"resources/models/{MODEL}", "--model", MODEL,
                   "--calibration", calibration, "--device", "cpu", "--threads", "1", "--mask", str(tmp_path / "m.zarr"),
                   "--report", str(tmp_path / "pruning.json")], pruned)
    assert _one_line(res) == f"{calibration}: made for domain prose, not for domain medical"
    assert not (tmp_path / "pruning.json").exists()

