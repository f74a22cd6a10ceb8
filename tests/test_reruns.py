"""Reruns after the config or the text changed: a rerun that a setting dooms deletes nothing (a
non-integer count, a domain asked for more samples than its text holds), a corpus or pair file whose
content changed reruns its domain whatever its modification time says.

One real run of the workflow's sampling jobs (a tiny random Llama, pruning off), then plans and runs
against it.
"""

from __future__ import annotations

import copy
import json
import zlib

import pytest
import yaml

from conftest import run_snakemake, tiny_llama, with_value
from test_hostile import TEXTS, tiny_run_inputs

TARGETS = ["results/tiny/samples/texts.zarr", "results/tiny/samples/pairs-mine.zarr"]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, smol_tokenizer):
    base = tmp_path_factory.mktemp("reruns")
    tiny_llama(vocab_size=len(smol_tokenizer)).save_pretrained(base / "model")
    smol_tokenizer.save_pretrained(base / "model")
    cfg = tiny_run_inputs(base, "texts")
    work = base / "work"
    work.mkdir()
    res = run_snakemake(TARGETS + ["--cores", "2", "--configfile", str(_config_file(base, "config", cfg))], cwd=work)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return {"base": base, "work": work, "cfg": cfg}


def _config_file(base, name, cfg):
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _plan(sampled, cfg=None):
    config = _config_file(sampled["base"], "plan", cfg or sampled["cfg"])
    res = run_snakemake(TARGETS + ["-n", "--cores", "2", "--configfile", str(config)], cwd=sampled["work"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    return res.stdout + res.stderr


def _snapshot(root) -> dict[str, tuple[int, int, int]]:
    """Every file below ``root``: size, modification time (ns) and CRC-32."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, zlib.crc32(p.read_bytes()))
            for p in sorted(root.rglob("*")) if p.is_file() and ".snakemake" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("field, value", [("seed", 1.0), ("samples.seq_len", 16.0)])
def test_a_rerun_doomed_by_a_setting_deletes_nothing(sampled, field, value):
    """The issue's case: `seed: 1.0` planned a rerun, Snakemake removed the valid samples store, and
    the job crashed. Now the run stops at start-up in one line and every file is as it was."""
    assert any(p.name == "zarr.json" for p in (sampled["work"] / TARGETS[0]).iterdir())
    line = _refused(sampled, {field: value})
    assert line == f"config error at {field}: {value!r} is not an integer; write {int(value)}"
    assert "Nothing to be done" in _plan(sampled)


def test_job_settings_of_another_type_are_refused_naming_the_field():
    """Rules encode each job's settings while Snakemake plans, and jobs decode them: a value of
    another type than its field declares stops either, naming the field (4.0 is not an int, 0 not
    a float: the JSON that triggers reruns would spell them differently)."""
    from dataclasses import replace

    from actpat.settings import WindowJob
    from actpat.settings_json import SettingsTypeError, decode, encode
    from conftest import default_settings

    s = default_settings()
    job = s.window_job("samples", "code")
    assert decode(WindowJob, encode(job)) == job
    cases = [
        (replace(job, seed=1.0), r"^WindowJob\.seed: 1\.0 is of type float, not int$"),
        (replace(job, n=True), r"^WindowJob\.n: True is of type bool, not int$"),
        (replace(job, holdout_fraction=0), r"^WindowJob\.holdout_fraction: 0 is of type int, not float$"),
        (replace(job, kind=None), r"^WindowJob\.kind: None is of type NoneType, not str$"),
        (replace(s.scoring_job("code"), scoring=replace(s.scoring, thresholds=(2e-5, "x"))),
         r"^ScoringJob\.scoring\.thresholds\[1\]: 'x' is of type str, not float$"),
        (replace(s.analysis_job(), analysis=replace(s.analysis, deep_layers=(0.5,))),
         r"^AnalysisJob\.analysis\.deep_layers: \(0\.5,\) has 1 items, not 2$"),
    ]
    for bad, says in cases:
        with pytest.raises(SettingsTypeError, match=says):
            encode(bad)
    with pytest.raises(SettingsTypeError, match=r"^WindowJob\.seed: 1\.0 is of type float"):
        decode(WindowJob, encode(job).replace('"seed":1,', '"seed":1.0,'))


def _edit_keeping_mtime(path, edit):
    """Rewrite ``path`` with ``edit(bytes)`` and set its modification time back, as `cp -p`,
    `rsync -a` and `tar x` do; returns the old content."""
    import os

    st, old = path.stat(), path.read_bytes()
    assert edit(old) != old
    path.write_bytes(edit(old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    return old


@pytest.mark.slow
def test_a_file_whose_content_changed_reruns_its_jobs_whatever_its_mtime(sampled):
    """Same size, same modification time, other content: its domain (only) is planned again; the
    store made from it records the file's new size and CRC-32C; the old content back, after a run
    with it, nothing is to be done."""
    import google_crc32c

    from actpat.store import open_samples
    from test_workflow import job_counts

    base, work = sampled["base"], sampled["work"]
    assert "Nothing to be done" in _plan(sampled)
    pairs = base / "pairs.csv"
    old = _edit_keeping_mtime(pairs, lambda b: b.replace(b",1\n", b",7\n", 1))
    plan = _plan(sampled)
    assert job_counts(plan) == {"sample_pairs": 1, "total": 1}, plan[-1500:]
    pairs.write_bytes(old)
    corpus = base / "texts" / "a2.txt"
    old = _edit_keeping_mtime(corpus, lambda b: b.replace(b"The archive", b"THE ARCHIVE"))
    plan = _plan(sampled)
    counts = job_counts(plan)
    assert counts["sample_domain"] == 1 and "sample_pairs" not in counts, plan[-1500:]
    assert "domain=texts" in plan and "domain=medical" not in plan
    config = _config_file(base, "config", sampled["cfg"])
    for content in (corpus.read_bytes(), old):
        corpus.write_bytes(content)
        res = run_snakemake(TARGETS + ["--cores", "2", "--configfile", str(config)], cwd=work)
        assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
        recorded = dict((p, (size, crc)) for p, size, crc in json.loads(open_samples(work / TARGETS[0]).attrs["source_files"]))
        assert recorded[str(corpus)] == (len(content), google_crc32c.value(content))
        assert len(recorded) == len(TEXTS)
    assert "Nothing to be done" in _plan(sampled)


def _refused(sampled, changes: dict) -> str:
    """The start-up error of the tiny run with ``changes`` (a real run: nothing may start)."""
    cfg = copy.deepcopy(sampled["cfg"])
    for field, value in changes.items():
        with_value(cfg, field, value)
    before = _snapshot(sampled["work"] / "results")
    res = run_snakemake(TARGETS + ["--cores", "2", "--configfile", str(_config_file(sampled["base"], "bad", cfg))],
                        cwd=sampled["work"])
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Building DAG" not in out, out[-2000:]
    assert _snapshot(sampled["work"] / "results") == before
    return next(line for line in out.splitlines() if "config error" in line)


@pytest.mark.slow
@pytest.mark.parametrize("field", ["samples.per_domain", "domains.texts.samples"])
def test_a_rerun_asking_a_domain_for_more_than_its_text_holds_is_refused_at_start_up(sampled, field):
    """The domain's samples store says how many windows its text holds (the tokenizer's count); a
    rerun asking for one more stops before any job, naming the setting; asking for all is planned."""
    from actpat.store import open_samples
    from test_workflow import job_counts

    found = int(open_samples(sampled["work"] / TARGETS[0]).attrs["n_windows_available"])
    store = "results/tiny/samples/texts.zarr"
    assert _refused(sampled, {field: found + 1}) == (
        f"config error at {field}: domain texts holds {found} windows of 16 tokens ({store}), fewer than the "
        f"{found + 1} asked for; lower {field} or samples.seq_len")
    plan = _plan(sampled, with_value(copy.deepcopy(sampled["cfg"]), field, found))
    assert job_counts(plan)["sample_domain"] == 1


@pytest.mark.slow
def test_local_text_too_small_for_its_windows_at_one_byte_a_token_is_refused_at_start_up(sampled):
    """Without a store cut with these settings (another window length), the bytes of the files bound
    the windows."""
    import re

    line = _refused(sampled, {"samples.seq_len": 8, "samples.per_domain": 1000})
    said = re.fullmatch(r"config error at samples\.per_domain: domain texts has text for at most (\d+) windows of 8 "
                        r"tokens even at one byte a token, fewer than the 1000 asked for; lower samples\.per_domain or "
                        r"samples\.seq_len, or add text", line)
    size = sum(p.stat().st_size for p in (sampled["base"] / "texts").glob("*.txt"))
    assert said and size // 8 - len(TEXTS) <= int(said.group(1)) <= (size + len(TEXTS)) // 8, line
