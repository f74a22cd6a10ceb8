"""The workflow as a careless or hostile user meets it: shell characters in every configured path,
a checkout under a directory with a space and a non-ASCII letter (next to an installed copy of the
package), corpus files edited after a run, the library edited after a run.

One real run of the workflow (a tiny random Llama, pruning off), from a copy of this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from actpat.snakemake_plan import job_counts
from conftest import ROOT, tiny_llama

EVIL = "o'brien $(touch PWNED) `touch BT` \"q\" ü\nsecond line"
TEXTS = [
    "The ferry crossed the bay twice a day, carrying bicycles, mail and a few tourists to the island.",
    "In spring the orchard filled with blossom, and the bees worked the rows from dawn until dusk.",
    "The archive kept letters from three centuries, sorted by the families who had written them.",
    "A narrow road climbed the hill to the observatory, where the old telescope still turned.",
    "Fishermen mended their nets on the quay while the gulls waited for scraps from the boats.",
    "The village school had one classroom, a stove in the corner and maps of every continent.",
]


def tiny_run_inputs(where, domain: str) -> dict:
    """The config of a tiny run of the model in ``where/model``, pruning off: a domain of six text
    files (``where/texts/a<i>.txt``), the packaged medical one, and a pair file (``where/pairs.csv``)."""
    (where / "texts").mkdir()
    for i, text in enumerate(TEXTS):
        (where / "texts" / f"a{i}.txt").write_text(f"{text} {text} {text}")
    rows = ["sentence1,sentence2,score"] + [f"\"{TEXTS[i][:40]}\",\"{TEXTS[j][:40]}\",{i + j}" for i in range(4) for j in range(i + 1, 4)]
    (where / "pairs.csv").write_text("\n".join(rows) + "\n")
    return {
        "models": {"tiny": {"source": str(where / "model")}},
        "device": "cpu", "threads": 1,
        "samples": {"per_domain": 4, "seq_len": 16, "shard_size": 4},
        "scoring": {"sketch_size": 64},
        "pruning": {"enabled": False},
        "domains": {domain: {"source": "files", "paths": [str(where / "texts" / "*.txt")]},
                    "medical": {"source": "packaged", "name": "hpo-definitions"}},
        "pairs": {"mine": {"source": "files", "path": str(where / "pairs.csv"), "max_tokens": 16}},
    }


def _snakemake(checkout, args, cwd, env, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, smol_tokenizer):
    base = tmp_path_factory.mktemp("hostile")
    checkout = base / "my runs" / "ü" / "checkout"
    checkout.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", checkout)
    shutil.copy(ROOT / "config.yaml", checkout)
    shutil.copytree(ROOT / "workflow", checkout / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "envs", checkout / "envs")
    # a marker in the copy's package: every import of it is logged
    init = checkout / "workflow" / "actpat" / "__init__.py"
    init.write_text(init.read_text() + "\nimport os as _os\nif _os.environ.get('ACTPAT_IMPORT_LOG'):\n"
                    "    with open(_os.environ['ACTPAT_IMPORT_LOG'], 'a') as _f:\n        _f.write(__file__ + '\\n')\n")
    evil = base / EVIL
    evil.mkdir(parents=True)
    tiny_llama(vocab_size=len(smol_tokenizer), layers=6).save_pretrained(evil / "model")
    smol_tokenizer.save_pretrained(evil / "model")
    cfg = tiny_run_inputs(evil, "evil")
    config_file = evil / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    work = base / "work dir ü"
    work.mkdir()
    env = {**os.environ, "ACTPAT_IMPORT_LOG": str(base / "imports.log"), "PYTHONPATH": str(ROOT / "workflow")}
    res = _snakemake(checkout, ["--cores", "2", "--configfile", str(config_file)], work, env)
    return {"base": base, "checkout": checkout, "evil": evil, "config": config_file, "work": work, "env": env, "run": res}


@pytest.mark.slow
def test_shell_characters_in_paths_reach_no_shell(hostile):
    from actpat.store import open_samples, open_scores

    res, work = hostile["run"], hostile["work"]
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    for name in ("PWNED", "BT"):
        assert not list(hostile["base"].rglob(name)) and not list(work.rglob(name)), f"{name} was created: a shell ran it"
    samples = open_samples(work / "results/tiny/samples/evil.zarr")
    assert set(samples["doc_id"].values) <= {f"a{i}.txt" for i in range(len(TEXTS))}
    assert str(hostile["evil"]) in samples.attrs["source"]
    scores = open_scores(work / "results/tiny/scores/evil/shard-0.zarr")
    assert scores.attrs["model_source"] == str(hostile["evil"] / "model")
    pairs = open_samples(work / "results/tiny/samples/pairs-mine.zarr")
    assert pairs.sizes["pair"] == 6 and TEXTS[0][:40] in list(pairs["text"].values)
    assert (work / "results/tiny/SUMMARY.md").exists()


@pytest.mark.slow
def test_jobs_import_the_package_of_their_checkout(hostile):
    """The checkout lives under 'my runs/ü' and another copy of the package is importable (the
    editable install of this repository, and PYTHONPATH pointing at it): every job imports the
    checkout's own package."""
    assert hostile["run"].returncode == 0
    imports = (hostile["base"] / "imports.log").read_text().splitlines()
    own = str(hostile["checkout"] / "workflow" / "actpat" / "__init__.py")
    assert len(imports) >= 10  # the planning process and every job
    assert set(imports) == {own}


@pytest.mark.slow
def test_an_edit_of_the_library_reruns_the_summary_and_names_the_old_code(hostile):
    """Results computed before an edit of the library are not silently reused: the summary reruns
    (and only it) and says which results came from other code."""
    checkout, work, env, cfg = hostile["checkout"], hostile["work"], hostile["env"], hostile["config"]
    assert hostile["run"].returncode == 0
    plots = checkout / "workflow" / "actpat" / "plots.py"
    plots.write_text(plots.read_text() + "\n# an edit after the run\n")
    plan = _snakemake(checkout, ["-n", "--cores", "2", "--configfile", str(cfg)], work, env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert job_counts(plan.stdout + plan.stderr) == {"summary": 1, "all": 1, "total": 2}
    again = _snakemake(checkout, ["--cores", "2", "--configfile", str(cfg)], work, env)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = (work / "results/tiny/SUMMARY.md").read_text()
    assert "**Computed by other code**" in summary


@pytest.mark.slow
def test_an_edited_corpus_file_reruns_its_domain_only(hostile):
    checkout, work, env, cfg = hostile["checkout"], hostile["work"], hostile["env"], hostile["config"]
    assert hostile["run"].returncode == 0
    clean = _snakemake(checkout, ["-n", "--cores", "2", "--configfile", str(cfg)], work, env)
    assert "Nothing to be done" in clean.stdout + clean.stderr
    corpus = hostile["evil"] / "texts" / "a2.txt"
    corpus.write_text(corpus.read_text() + " A sentence added after the run.")
    os.utime(corpus)
    plan = _snakemake(checkout, ["-n", "--cores", "2", "--configfile", str(cfg)], work, env)
    out = plan.stdout + plan.stderr
    counts = job_counts(out)
    assert counts["sample_domain"] == 1 and counts["score_shard"] == 1 and counts["density"] == 1
    assert "domain=evil" in out and "domain=medical" not in out
