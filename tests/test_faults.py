"""Faults a long run meets: bad input refused before any job starts, out of memory, a full disk.

The sweep feeds each bad configuration or input to the checks the workflow runs when it starts and
expects one line naming the field; a sample of the cases also runs the real workflow (no dry run)
to show that nothing is started: no model prepared, no results, no job logs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, SMOKE, run_snakemake, sample_domain_args, score_shard_args, with_value

BASE = yaml.safe_load(SMOKE.read_text())


def _prepare(case: str, tmp_path):
    """(config dict or raw YAML text) for each case; files it needs are made in tmp_path."""
    cfg = copy.deepcopy(BASE)
    files = tmp_path / "inputs"
    files.mkdir()
    if case == "unknown key":
        return with_value(cfg, "samples.shardsize", 2)
    if case == "wrong type":
        return with_value(cfg, "samples.seq_len", "long")
    if case == "no domains":
        return with_value(cfg, "domains", {})
    if case == "missing corpus":
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "nothing-*.txt")]})
    if case == "empty corpus":
        (files / "empty.txt").write_text("")
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "empty.txt")]})
    if case == "duplicate domain":
        text = SMOKE.read_text().replace("domains:\n", "domains:\n  code: {source: packaged, name: champ-math}\n", 1)
        return text
    if case == "name not a wildcard value":
        return with_value(cfg, "domains.my domain", {"source": "packaged", "name": "shakespeare"})
    if case == "reserved name":
        return with_value(cfg, "domains.pairs-x", {"source": "packaged", "name": "shakespeare"})
    if case == "unknown corpus":
        return with_value(cfg, "domains.code", {"source": "packaged", "name": "linux-kernel"})
    if case == "seq_len over model maximum":
        return with_value(cfg, "samples.seq_len", 10000)
    if case == "model path that is not a model":
        (files / "model").mkdir()
        return with_value(cfg, "models", {"m": {"source": str(files / "model")}})
    if case == "model path missing":
        return with_value(cfg, "models", {"m": {"source": str(files / "no-model")}})
    if case == "non-causal model":
        (files / "bert").mkdir()
        (files / "bert" / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
        return with_value(cfg, "models", {"m": {"source": str(files / "bert")}})
    if case == "sparsity out of range":
        return with_value(cfg, "pruning.sparsities", [0.5, 1.2])
    if case == "N:M invalid":
        return with_value(cfg, "pruning.nm", ["4:4"])
    if case == "unknown method":
        return with_value(cfg, "pruning.methods", ["wanda", "obs-prune"])
    if case == "calibration domain not configured":
        return with_value(cfg, "pruning.calibration.domain", "c4")
    if case == "threshold negative":
        return with_value(cfg, "scoring.thresholds", [2e-5, -1e-6])
    if case == "pairs file with missing scores":
        (files / "pairs.csv").write_text("sentence1,sentence2,score\na cat,a dog,3.5\nthe sea,a lake,\n")
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case == "pairs file missing":
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "none.tsv")})
    if case == "unknown device":
        return with_value(cfg, "device", "tpu")
    if case == "holdout fraction 1":
        return with_value(cfg, "samples.holdout_fraction", 1.0)
    if case == "zero samples":
        return with_value(cfg, "samples.per_domain", 0)
    if case == "density threshold not scored":
        return with_value(cfg, "analysis.density_threshold", 1e-3)
    if case == "duplicate thresholds":
        return with_value(cfg, "scoring.thresholds", [2e-5, 2e-6, 2.0e-5])
    if case == "duplicate multiples":
        return with_value(cfg, "scoring.relative_multiples", [1.0, 1])
    if case == "duplicate mass shares":
        return with_value(cfg, "analysis.mass_shares", [0.5, 0.5])
    if case == "one-document domain with pruning":
        (files / "only.txt").write_text("One long document. " * 200)
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "only.txt")]})
    if case == "glob matches a directory":
        (files / "texts.txt").mkdir()
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "*.txt")]})
    if case == "symlink loop":
        (files / "loop.txt").symlink_to(files / "loop.txt")
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "loop.txt")]})
    if case == "no methods":
        return with_value(cfg, "pruning.methods", [])
    if case == "pairs file with an infinite score":
        (files / "pairs.csv").write_text("sentence1,sentence2,score\na cat,a dog,3.5\nthe sea,a lake,inf\n")
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case == "pairs file with conflicting duplicates":
        (files / "pairs.csv").write_text("sentence1,sentence2,score\na cat,a dog,3.5\na dog,a cat,1.0\n")
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case == "pairs file with a self-pair":
        (files / "pairs.csv").write_text("sentence1,sentence2,score\na cat,a cat,5\na cat,a dog,1.0\n")
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case == "pairs file not utf-8":
        (files / "pairs.csv").write_bytes("sentence1,sentence2,score\ncaf\u00e9,tea,3.5\n".encode("latin-1"))
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case.startswith("corpus in utf-") or case == "corpus with a NUL byte":
        codec = case.split()[-1] if "utf-" in case else "utf-8"
        for name in ("a", "b"):
            text = f"Text {name}: a few words about rivers, hills and towns. " * 8
            (files / f"{name}.txt").write_bytes((text + ("\x00" if codec == "utf-8" else "")).encode(codec))
        return with_value(cfg, "domains.extra", {"source": "files", "paths": [str(files / "*.txt")]})
    if case == "pairs file in utf-16":
        (files / "pairs.csv").write_text("sentence1,sentence2,score\na cat,a dog,3.5\n", encoding="utf-16")
        return with_value(cfg, "pairs.mine", {"source": "files", "path": str(files / "pairs.csv")})
    if case == "task file in utf-16":
        (files / "boolq.jsonl").write_text(json.dumps({"passage": "p", "question": "q"}) + "\n", encoding="utf-16")
        return with_value(cfg, "domains.extra", {"source": "task", "name": "boolq", "path": str(files / "boolq.jsonl")})
    raise KeyError(case)


SWEEP = {
    "unknown key": "samples: unknown key(s) 'shardsize'",
    "wrong type": "samples.seq_len: 'long' is not of type 'integer'",
    "no domains": "domains: {} should be non-empty",
    "missing corpus": "domains.extra.paths: no file matches",
    "empty corpus": "domains.extra.paths: the 1 matching file(s) are empty",
    "duplicate domain": "key 'code' appears twice",
    "name not a wildcard value": "name 'my domain' is not usable in file paths",
    "reserved name": "domains.pairs-x: names starting with 'pairs-' are reserved",
    "unknown corpus": "domains.code.name: 'linux-kernel' is not allowed",
    "seq_len over model maximum": "samples.seq_len: 10000 tokens exceed the maximum of 8192 positions",
    "model path that is not a model": "is not a model directory (no config.json)",
    "model path missing": "no-model' does not exist",
    "non-causal model": "is a BertModel model, not a causal language model",
    "sparsity out of range": "pruning.sparsities.1: 1.2 is greater than or equal to the maximum of 1",
    "N:M invalid": "pruning.nm.0: '4:4' needs 0 < N < M",
    "unknown method": "pruning.methods.1: 'obs-prune' is not allowed",
    "calibration domain not configured": "pruning.calibration.domain: 'c4' is not configured",
    "threshold negative": "scoring.thresholds.1: -1e-06 is less than or equal to the minimum of 0",
    "pairs file with missing scores": "pairs.mine: ",
    "pairs file missing": "pairs.mine: pairs file",
    "unknown device": "device: 'tpu' is not allowed",
    "holdout fraction 1": "samples.holdout_fraction: 1.0 is greater than or equal to the maximum of 1",
    "zero samples": "samples.per_domain: 0 is less than the minimum of 1",
    "density threshold not scored": "analysis.density_threshold: 0.001 is not one of scoring.thresholds",
    "duplicate thresholds": "scoring.thresholds: [2e-05, 2e-06, 2e-05] has non-unique elements",
    "duplicate multiples": "scoring.relative_multiples: [1.0, 1] has non-unique elements",
    "duplicate mass shares": "analysis.mass_shares: [0.5, 0.5] has non-unique elements",
    "one-document domain with pruning": "domains.extra.paths: one document",
    "glob matches a directory": "domains.extra.paths: ",
    "symlink loop": "matches no regular file",
    "no methods": "pruning.methods: [] should be non-empty",
    "pairs file with an infinite score": "pairs.mine: ",
    "pairs file with conflicting duplicates": "are the same pair",
    "pairs file with a self-pair": "pairs a text with itself",
    "pairs file not utf-8": "not utf-8 text at byte 29",
    "corpus in utf-16": "a.txt: UTF-16 (byte-order mark) text, not utf-8; set encoding: utf-16",
    "corpus in utf-16-le": "a.txt: UTF-16 (little-endian, NUL bytes between the letters) text, not utf-8; set encoding: utf-16-le",
    "corpus in utf-32": "a.txt: UTF-32 (byte-order mark) text, not utf-8; set encoding: utf-32",
    "corpus with a NUL byte": "a.txt: a binary file (NUL byte at byte 408)",  # 8 x 51 characters of text
    "pairs file in utf-16": "pairs.mine: ",
    "task file in utf-16": "domains.extra.path: ",
}


def _config_file(case: str, tmp_path):
    tmp_path.mkdir()
    cfg = _prepare(case, tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    return bad


def _start_up_error(bad) -> str:
    """What the workflow runs when it starts (common.smk): the schema, then the start-up checks."""
    from actpat.errors import ConfigError
    from actpat.config import validate_config
    from actpat.preflight import preflight

    try:
        preflight(validate_config(yaml.safe_load(bad.read_text())), [bad])
    except ConfigError as exc:
        return str(exc)
    return ""


def test_bad_input_sweep(tmp_path):
    """Every case is refused by the checks the workflow runs at start-up, in one line naming the field."""
    table = {}
    for case, expected in SWEEP.items():
        message = _start_up_error(_config_file(case, tmp_path / case.replace(" ", "_")))
        assert expected in message and "\n" not in message, (case, message)
        if case == "pairs file with missing scores":
            assert "has no score" in message
        if case == "pairs file with an infinite score":
            assert "has the score inf, not a finite number" in message
        if case == "glob matches a directory":
            assert "matches no regular file" in message
        if case == "pairs file in utf-16":
            assert message.endswith("pairs.csv: UTF-16 (byte-order mark) text, not utf-8; set encoding: utf-16")
        if case == "task file in utf-16":
            assert message.endswith("boolq.jsonl: UTF-16 (byte-order mark) text, not utf-8; task files are read as "
                                    "UTF-8: convert it (iconv -f utf-16 -t utf-8)")
        table[case] = message
    print("\n".join(f"{case:36s} | {msg}" for case, msg in table.items()))
    assert len(table) >= 35


@pytest.mark.parametrize("case", ["duplicate domain", "missing corpus", "non-causal model", "N:M invalid", "corpus in utf-16"])
def test_bad_input_stops_the_real_workflow_before_any_job(case, tmp_path):
    """The same refusal through Snakemake itself (no dry run): nothing is started."""
    bad = _config_file(case, tmp_path / "case")
    work = tmp_path / "run"
    work.mkdir()
    res = run_snakemake(["--cores", "1", "--configfile", str(bad)], cwd=work, timeout=300)
    out = res.stdout + res.stderr
    lines = [line for line in out.splitlines() if "config error" in line]
    assert res.returncode != 0 and lines and SWEEP[case] in lines[0], out[-1500:]
    assert not any((work / d).exists() for d in ("resources", "results", "logs")), "a job started"


def _actpat(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    return subprocess.run([sys.executable, "-m", "actpat", *args], capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def tiny_samples(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("faults") / "samples.zarr"
    texts = tmp_path_factory.mktemp("fault-texts")
    for i in range(6):
        (texts / f"t{i}.txt").write_text(f"Text number {i} has a few words about rivers, hills and towns. " * 8)
    spec = {"source": "files", "paths": [str(texts / "*.txt")]}
    res = _actpat(sample_domain_args("d", spec, tiny_checkpoint, 16, 2, 1, 0.0, out))
    assert res.returncode == 0, res.stderr[-1000:]
    return out


def _address_space_limit(nbytes: int):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))

    return limit


def test_out_of_memory_names_the_settings_to_lower(tiny_samples, tiny_checkpoint, tmp_path):
    """A real allocation failure: the job may use 6 GiB of address space, and a batch's sketches
    of 2^28 buckets per sample and layer need 12 GiB."""
    out = tmp_path / "shard.zarr"
    res = _actpat(score_shard_args(tiny_samples, 0, 2, tiny_checkpoint, out, sketch_size=2**28),
                  preexec_fn=_address_space_limit(6 * 2**30))
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 3
    assert last.startswith("actpat error: out of memory in score-shard (") and "lower resources.score_batch_size" in last
    assert not out.exists() and not list(tmp_path.glob(".shard.zarr.tmp-*"))


def test_full_disk_leaves_no_half_store(tiny_samples, tiny_checkpoint, tmp_path):
    """The store is written to a 64 KiB tmpfs: the write fails, the job says so in one line, and
    neither a store nor its temporary directory is left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = disk / "shard.zarr"
        res = _actpat(score_shard_args(tiny_samples, 0, 2, tiny_checkpoint, out, sketch_size=4096))
        last = res.stderr.strip().splitlines()[-1]
        assert res.returncode == 1 and "no space left on the device" in last, res.stderr[-1500:]
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)])
