"""The command-line jobs and their Zarr stores: shard invariance, determinism, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr
import zarr

from actpat.cli import main
from actpat.errors import StoreError
from actpat.store import check_compatible, open_samples, open_scores
from conftest import density_args, sample_domain_args, score_shard_args

TEXTS = [
    "The committee met on Tuesday to discuss the budget for the coming year and the new library.",
    "Rain fell over the valley for three days, and the river rose until it covered the lower fields.",
    "She opened the old book and found a pressed flower between the pages of the second chapter.",
    "Engineers tested the bridge with heavy trucks before the city allowed traffic to cross it again.",
]


@pytest.fixture(scope="module")
def domain_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("texts")
    for i, t in enumerate(TEXTS * 3):
        (d / f"t{i:02d}.txt").write_text(f"{t} {t}")
    return d


def _sample(out, model, files, seed=1, n=4):
    spec = {"source": "files", "paths": [str(files / "*.txt")]}
    assert main(sample_domain_args("news", spec, model, 12, n, seed, 0.2, out)) == 0


def _score(samples, model, shard, shard_size, out):
    assert main(score_shard_args(samples, shard, shard_size, model, out, thresholds=(1e-3, 1e-4), sketch_size=32)) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint, domain_files):
    root = tmp_path_factory.mktemp("runs")
    _sample(root / "samples.zarr", tiny_checkpoint, domain_files)
    _score(root / "samples.zarr", tiny_checkpoint, 0, 4, root / "one.zarr")
    _score(root / "samples.zarr", tiny_checkpoint, 0, 2, root / "a.zarr")
    _score(root / "samples.zarr", tiny_checkpoint, 1, 2, root / "b.zarr")
    _sample(root / "samples2.zarr", tiny_checkpoint, domain_files)
    _score(root / "samples2.zarr", tiny_checkpoint, 0, 4, root / "again.zarr")
    return root


def test_two_shards_sum_to_one_shard(runs):
    one, a, b = (open_scores(runs / f"{n}.zarr") for n in ("one", "a", "b"))
    matrices = one.attrs["matrices"]
    for m in matrices:
        np.testing.assert_allclose(a[m].values + b[m].values, one[m].values, rtol=1e-6, atol=1e-12)
    both = xr.concat([a[["l1", "l2", "count_above", "zeros", "sketch", "target_value"]],
                      b[["l1", "l2", "count_above", "zeros", "sketch", "target_value"]]], dim="sample")
    # batches of 2 and of 4 round differently in the last bits (batched matrix products)
    for v in ("l1", "l2", "target_value"):
        np.testing.assert_allclose(both[v].values, one[v].values, rtol=1e-6)
    sk = one["sketch"].values
    np.testing.assert_allclose(both["sketch"].values, sk, rtol=1e-5, atol=1e-6 * np.abs(sk).max())
    for v in ("count_above", "zeros"):
        assert np.abs(both[v].values - one[v].values).max() <= 1
    assert list(both["sample"].values) == list(one["sample"].values)
    assert a.attrs["n_samples"] == 2 and one.attrs["n_samples"] == 4


def test_same_seed_gives_identical_stores(runs):
    x, y = open_scores(runs / "one.zarr"), open_scores(runs / "again.zarr")
    assert set(x.data_vars) == set(y.data_vars)
    for v in x.data_vars:
        np.testing.assert_array_equal(x[v].values, y[v].values, err_msg=v)
    assert {k: v for k, v in x.attrs.items()} == {k: v for k, v in y.attrs.items()}


def test_store_layout_and_provenance(runs):
    ds = open_scores(runs / "one.zarr")
    samples = open_samples(runs / "samples.zarr")
    assert list(ds["sample"].values) == list(samples["sample"].values)
    assert ds["self_attn.q_proj"].dims == ("layer", "self_attn.q_proj.row", "self_attn.q_proj.col")
    assert ds["self_attn.q_proj"].dtype == np.float32
    assert ds["sketch"].shape == (4, 3, 32)
    for key in ("model", "checkpoint_sha256", "seed", "seq_len", "target", "code_version", "domain", "sketch_hash_version"):
        assert key in ds.attrs, key
    assert ds.attrs["seq_len"] == 12 and ds.attrs["seed"] == 1 and ds.attrs["complete"] is True
    # per-sample L1 over all weights equals the exact sums' total
    total = sum(float(ds[m].values.astype(np.float64).sum()) for m in ds.attrs["matrices"])
    assert total == pytest.approx(float(ds["l1"].values.sum()), rel=1e-5)
    assert samples.attrs["n_holdout_documents"] == len(samples["holdout_doc_id"])


def test_incomplete_and_foreign_stores_are_refused(runs, tmp_path):
    import shutil

    bad = tmp_path / "bad.zarr"
    shutil.copytree(runs / "one.zarr", bad)
    (bad / "actpat_inventory.json").unlink()  # what a writer that died before publishing leaves
    group = zarr.open_group(bad, mode="r+")
    del group.attrs["complete"]
    with pytest.raises(StoreError, match="no completion marker"):
        open_scores(bad)
    with pytest.raises(StoreError, match="expected a actpat.scores store"):
        open_scores(runs / "samples.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        open_scores(tmp_path / "none.zarr")
    other = open_scores(runs / "a.zarr").copy()
    other.attrs = {**other.attrs, "seq_len": 99}
    with pytest.raises(StoreError, match="seq_len = 99 differs"):
        check_compatible({"one": open_scores(runs / "one.zarr"), "other": other})


def _chunks(store, array):
    return sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json")


def _rewrite_as_another_run(store, key, value):
    """An intact store with other provenance (as another run's writer publishes it)."""
    import os

    from actpat.store import INVENTORY, _publish

    (store / INVENTORY).unlink()
    zarr.open_group(store, mode="r+").attrs[key] = value
    tmp = store.with_name(f".{store.name}.tmp-{os.getpid()}")
    os.replace(store, tmp)
    _publish(tmp, store)


def _flip(path, offsets=(100, 101, 102)):
    data = bytearray(path.read_bytes())
    for o in offsets:
        data[o % len(data)] ^= 0x5A
    path.write_bytes(bytes(data))


def _damage(store, damage: str) -> str:
    """Damage a score store the way a disk, a copy or a careless hand does; the words expected."""
    chunk = _chunks(store, "mlp.down_proj")[1]
    meta = store / "l1" / "zarr.json"
    if damage == "missing chunk":
        chunk.unlink()
        return "array 'mlp.down_proj', chunk c/"
    if damage == "truncated chunk":
        chunk.write_bytes(chunk.read_bytes()[:-7])
        return "is truncated or changed"
    if damage == "flipped bytes":  # same size: only a checksum tells
        _flip(chunk)
        return "does not match its checksum"
    if damage == "big-endian metadata":  # a valid zarr.json of the same size that changes every value read
        text = meta.read_text()
        swapped = text.replace('"little"', '"big"   ')
        assert swapped != text and len(swapped) == len(text)
        meta.write_text(swapped)
        return "the metadata of array 'l1' (l1/zarr.json) does not match its checksum"
    if damage == "invalid json metadata":
        meta.write_text("{" + meta.read_text()[1:-2] + "x")
        return "l1/zarr.json"
    if damage == "edited attributes":  # the provenance in the root metadata
        text = (store / "zarr.json").read_text()
        (store / "zarr.json").write_text(text.replace('"seed": 1', '"seed": 7'))
        return "the store's root metadata"
    if damage == "damaged inventory":
        _flip(store / "actpat_inventory.json", (40,))
        return "inventory actpat_inventory.json is damaged"
    if damage == "extra file":  # a chunk the writer left out (all fill values) appears
        assert not (store / "zeros" / "c").exists()
        extra = store / "zeros" / "c" / "0" / "0" / "0"
        extra.parent.mkdir(parents=True)
        extra.write_bytes(_chunks(store, "l1")[0].read_bytes())
        return "array 'zeros', chunk c/0/0/0 (zeros/c/0/0/0) was not written with the store"
    raise AssertionError(damage)


DAMAGES = ["missing chunk", "truncated chunk", "flipped bytes", "big-endian metadata", "invalid json metadata",
           "edited attributes", "damaged inventory"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_stores_are_refused_and_nothing_downstream_is_written(runs, tmp_path, capsys, damage):
    """Zarr reads a missing chunk as zeros and a flipped byte as another value: without checksums a
    damaged store would give wrong densities silently. Each damage is one line naming the store and
    the array or file, and the density reduction writes nothing."""
    import shutil

    bad = tmp_path / "shard-0.zarr"
    shutil.copytree(runs / "a.zarr", bad)
    expected = _damage(bad, damage)
    out = tmp_path / "density.zarr"
    rc = main(density_args([bad, runs / "b.zarr"], out))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith(f"actpat error: {bad}: ") and expected in last, last
    if damage not in ("damaged inventory",):
        assert "delete it and rerun the job that wrote it" in last
    assert not out.exists() and not list(tmp_path.glob(".density.zarr.tmp-*"))


def test_a_chunk_that_the_writer_did_not_write_is_refused(runs, tmp_path):
    """Zarr leaves out chunks of fill values; a file appearing there is not the writer's."""
    import shutil

    bad = tmp_path / "shard-0.zarr"
    shutil.copytree(runs / "a.zarr", bad)
    expected = _damage(bad, "extra file")
    with pytest.raises(StoreError, match=re.escape(expected)):
        open_scores(bad)["zeros"].values
    assert (open_scores(runs / "a.zarr")["zeros"].values == 0).all()


def test_damaged_sketch_is_refused_by_the_similarity_reduction(runs, tmp_path, capsys):
    import shutil

    bad = tmp_path / "shard-0.zarr"
    shutil.copytree(runs / "a.zarr", bad)
    _flip(_chunks(bad, "sketch")[0])
    rc = main(["similarity", "--stores", str(bad), "--out", str(tmp_path / "sim.zarr")])
    assert rc == 1 and "array 'sketch', chunk c/" in capsys.readouterr().err and not (tmp_path / "sim.zarr").exists()


def test_a_plain_xarray_read_refuses_a_flipped_chunk(runs, tmp_path):
    """The checksum is in the chunks themselves (Zarr's crc32c codec): readers outside actpat are
    protected too."""
    import shutil

    bad = tmp_path / "shard-0.zarr"
    shutil.copytree(runs / "a.zarr", bad)
    _flip(_chunks(bad, "mlp.down_proj")[0])
    ds = xr.open_zarr(bad, consolidated=False)
    with pytest.raises(ValueError, match="checksum"):
        ds["mlp.down_proj"].values
    assert np.isfinite(xr.open_zarr(runs / "a.zarr", consolidated=False)["mlp.down_proj"].values).all()


def test_stores_of_the_old_format_are_refused(runs, tmp_path):
    import json
    import shutil

    from actpat.store import verify_checksums

    old = tmp_path / "old.zarr"
    shutil.copytree(runs / "a.zarr", old)
    verify_checksums(old)  # intact
    inventory = json.loads((old / "actpat_inventory.json").read_text())
    (old / "actpat_inventory.json").write_text(json.dumps({k: v[0] for k, v in inventory["files"].items()}))
    with pytest.raises(StoreError, match="inventory actpat_inventory.json is damaged"):
        open_scores(old)
    (old / "actpat_inventory.json").unlink()
    with pytest.raises(StoreError, match="written by an older actpat without checksums"):
        open_scores(old)


@pytest.mark.parametrize("key, value", [("seed", 7), ("seq_len", 64), ("model", "other-model")])
def test_foreign_shard_is_refused_by_the_reduction(runs, tmp_path, capsys, key, value):
    import shutil

    foreign = tmp_path / "shard-1.zarr"
    shutil.copytree(runs / "b.zarr", foreign)
    _rewrite_as_another_run(foreign, key, value)
    out = tmp_path / "density.zarr"
    rc = main(density_args([runs / "a.zarr", foreign], out))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith(f"actpat error: {foreign}: {key} = {value!r} differs from {runs / 'a.zarr'}")
    assert not out.exists()


def test_cli_errors_are_one_line(runs, tiny_checkpoint, capsys):
    rc = main(score_shard_args(runs / "samples.zarr", 5, 2, tiny_checkpoint, runs / "x.zarr"))
    assert rc == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"actpat error: shard 5 does not exist: {runs / 'samples.zarr'} has 2 shards")
    assert not (runs / "x.zarr").exists()


def test_killed_scoring_job_leaves_nothing_and_rerun_is_identical(smol_checkpoint, domain_files, tmp_path):
    """SIGKILL halfway through a shard of the default model: no store at the final path, nothing a
    reader accepts; the rerun (which also clears the dead job's temporary directory) is identical
    to an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    _sample(tmp_path / "samples.zarr", smol_checkpoint, domain_files, n=10)
    out, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"

    def cmd(dest):
        return [sys.executable, "-m", "actpat", *score_shard_args(tmp_path / "samples.zarr", 0, 10, smol_checkpoint, dest,
                                                                  model="smol", threads=2, sketch_size=64)]

    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    proc = subprocess.Popen(cmd(out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "scoring:" not in proc.stderr.readline():
        pass
    time.sleep(1.0)
    assert proc.poll() is None, "the job finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(StoreError, match="does not exist"):
        open_scores(out)
    for dest in (out, clean):
        done = subprocess.run(cmd(dest), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    assert not list(tmp_path.glob(".killed.zarr.tmp-*"))
    x, y = open_scores(clean), open_scores(out)
    for v in x.data_vars:
        np.testing.assert_array_equal(x[v].values, y[v].values, err_msg=v)


def test_leftovers_of_dead_writers_are_cleared(tmp_path):
    import os

    from actpat.store import _prepare

    path = tmp_path / "s.zarr"
    dead, live = tmp_path / ".s.zarr.tmp-999999999", tmp_path / f".s.zarr.tmp-{os.getppid()}"
    dead.mkdir()
    live.mkdir()
    tmp = _prepare(path)
    assert not dead.exists() and live.exists()  # another running writer's directory is left alone
    assert tmp.name == f".s.zarr.tmp-{os.getpid()}" and not tmp.exists()


def test_a_second_writer_of_a_store_stops_with_the_holder(runs, tiny_checkpoint, tmp_path):
    """Two runs scoring the same shard (`snakemake --unlock` while the first is alive): the second
    job stops at once naming the first, and nothing of the first is touched."""
    import os
    import subprocess
    import sys

    from actpat.store import exclusive
    from conftest import ROOT

    out = tmp_path / "shard-0.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    cmd = [sys.executable, "-m", "actpat", *score_shard_args(runs / "samples.zarr", 0, 2, tiny_checkpoint, out, sketch_size=32)]
    with exclusive(out):  # the first writer, alive
        second = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert second.returncode == 1, second.stderr[-1000:]
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f"actpat error: {out}: another job is writing this store (pid {os.getpid()} on ")
        assert not out.exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)  # the lock is gone with its holder
    assert done.returncode == 0, done.stderr[-1000:]
    assert open_scores(out).attrs["n_samples"] == 2
