"""The on-disk format: Zarr v3 groups laid out for xarray.

Samples store (one per domain): ``token_ids (sample, position)``, with ``doc_id`` and ``offset``
per sample and the held-out document ids.

Score store (one per domain × shard), all read with ``xarray.open_zarr``:

==========================  ==================================  ==================================
variable                    dims                                meaning
==========================  ==================================  ==================================
``<matrix>``                (layer, <matrix>.row, <matrix>.col)  Σ over the shard's samples of |s|
``l1``, ``l2``              (sample, layer, matrix)              per-sample norms of s
``count_above``             (sample, layer, matrix, threshold)   weights with |s| > threshold
``count_above_rel``         (sample, layer, matrix, multiple)    |s| > multiple × sample's mean |s|
``zeros``                   (sample, layer, matrix)              weights with s == 0 exactly
``sketch``                  (sample, layer, bucket)              CountSketch of |s| (actpat.sketch)
``hidden_mean``             (sample, hidden_layer, hidden)       mean hidden state (0 = embeddings)
``target_value/_token``     (sample,)                            the differentiated scalar D
==========================  ==================================  ==================================

Attributes carry the provenance (model, checkpoint hash, revision, dtype, seed, seq_len, target,
sample ids via the ``sample`` coordinate, code version). A store is written under a temporary name
and renamed into place after its ``complete`` attribute is set, so a crash never leaves a store at
the final path; readers refuse stores without the marker.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from actpat.errors import ActpatError
from actpat.models import WeightLayout

FORMAT_VERSION = 1
TARGET_CHUNK_BYTES = 2 << 20


class StoreError(ActpatError):
    """A store is missing, incomplete or does not match the others."""


def _compressor():
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")]


def _attrs(attrs: dict) -> dict:
    """JSON-safe attributes (xarray/zarr store them as JSON)."""
    return json.loads(json.dumps(attrs, default=str))


def _strings(values) -> np.ndarray:
    """Variable-length strings (Zarr v3 has no stable fixed-length string type)."""
    return np.asarray([str(v) for v in values], dtype=object)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


INVENTORY = "actpat_inventory.json"


def _chunk_files(root: Path) -> dict[str, int]:
    """Every file of a store but the root metadata (which holds the completion marker): size in bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if rel not in ("zarr.json", INVENTORY, ".snakemake_timestamp"):
                out[rel] = os.path.getsize(os.path.join(dirpath, f))
    return out


def _publish(tmp: Path, path: Path) -> None:
    """Record the store's files and their sizes, mark it complete, move it into place (a rename
    within one directory is atomic). Zarr reads a missing chunk as fill values, so the inventory is
    what lets readers tell a damaged store from a sparse one."""
    (Path(tmp) / INVENTORY).write_text(json.dumps(_chunk_files(Path(tmp)), sort_keys=True))
    group = zarr.open_group(tmp, mode="r+")
    group.attrs["complete"] = True
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _prepare(path: Path) -> Path:
    """A fresh temporary directory for ``path``; leftovers of earlier writers of the same store
    whose process is gone (killed mid-write) are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    return _tmp_path(path)


@contextlib.contextmanager
def _writing(path: Path):
    """Write a store under a temporary name; publish it when the body succeeds, remove the
    temporary directory when it fails (a full disk, an error), so no half store is left."""
    path = Path(path)
    tmp = _prepare(path)
    try:
        yield tmp
        _publish(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise StoreError(f"{path}: no space left on the device while writing it; nothing was kept (free space "
                             "or point the results elsewhere, then rerun)") from exc
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_samples(path: Path, sample_set, attrs: dict, extra: dict | None = None) -> None:
    """``extra``: more variables, e.g. ``length`` (sample,) for texts shorter than the padded
    width (padding is -1), or the pair table of a pair set."""
    ds = xr.Dataset(
        {
            "token_ids": (("sample", "position"), sample_set.token_ids),
            "doc_id": ("sample", _strings(sample_set.doc_ids)),
            "offset": ("sample", np.asarray(sample_set.offsets, dtype=np.int64)),
            "holdout_doc_id": ("holdout", _strings(sample_set.holdout_doc_ids)),
        },
        coords={"sample": _strings(sample_set.sample_ids)},
        attrs=_attrs({**attrs, **sample_set.stats, "kind": "actpat.samples", "format_version": FORMAT_VERSION}),
    )
    for name, var in (extra or {}).items():
        ds[name] = var
    with _writing(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)


def _open(path: Path, kind: str) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: store does not exist")
    with warnings.catch_warnings():
        # Snakemake leaves a .snakemake_timestamp file inside directory() outputs
        warnings.filterwarnings("ignore", message=".*(snakemake_timestamp|actpat_inventory)")
        try:
            group = zarr.open_group(path, mode="r")
        except Exception as exc:
            raise StoreError(f"{path}: not a readable Zarr store ({exc})") from exc
        if not group.attrs.get("complete"):
            raise StoreError(f"{path}: no completion marker; the job that wrote it did not finish (rerun it)")
        if group.attrs.get("kind") != kind:
            raise StoreError(f"{path}: expected a {kind} store, found {group.attrs.get('kind')!r}")
        verify_inventory(path)
        return xr.open_zarr(path, consolidated=False, chunks=None)


def verify_inventory(path: Path) -> None:
    """Every file the writer recorded is there with its size: a deleted chunk or a truncated array
    is reported instead of being read as zeros. (Stores written before the inventory existed have
    none and are not checked.)"""
    inv_file = Path(path) / INVENTORY
    if not inv_file.exists():
        return
    expected = json.loads(inv_file.read_text())
    found = _chunk_files(Path(path))
    for rel, size in expected.items():
        if rel not in found:
            raise StoreError(f"{path}: file {rel} of array {rel.split('/')[0]!r} is missing; the store is damaged "
                             "(delete it and rerun the job that wrote it)")
        if found[rel] != size:
            raise StoreError(f"{path}: file {rel} of array {rel.split('/')[0]!r} has {found[rel]} bytes, the writer "
                             f"wrote {size}; the store is truncated or damaged (delete it and rerun the job that wrote it)")


def open_samples(path: Path) -> xr.Dataset:
    return _open(path, "actpat.samples")


def open_scores(path: Path) -> xr.Dataset:
    return _open(path, "actpat.scores")


def _row_chunk(rows: int, cols: int, itemsize: int = 4) -> int:
    return int(max(1, min(rows, TARGET_CHUNK_BYTES // max(1, cols * itemsize))))


def write_scores(
    path: Path,
    layout: WeightLayout,
    sums,  # [layer][matrix] tensors (any device) of Σ|s|
    samples: xr.Dataset,  # the shard's rows of the samples store
    results: list,  # [SampleScores]
    thresholds: tuple[float, ...],
    attrs: dict,
    multiples: tuple[float, ...] = (1.0, 10.0),
) -> None:
    stack = lambda name: np.stack([getattr(r, name) for r in results])  # noqa: E731
    ds = xr.Dataset(
        {
            "l1": (("sample", "layer", "matrix"), stack("l1")),
            "l2": (("sample", "layer", "matrix"), stack("l2")),
            "count_above": (("sample", "layer", "matrix", "threshold"), stack("above")),
            "count_above_rel": (("sample", "layer", "matrix", "multiple"), stack("above_rel")),
            "zeros": (("sample", "layer", "matrix"), stack("zeros")),
            "sketch": (("sample", "layer", "bucket"), stack("sketch")),
            "target_value": ("sample", np.asarray([r.target_value for r in results])),
            "target_token": ("sample", np.asarray([r.target_token for r in results], dtype=np.int64)),
            "doc_id": ("sample", _strings(samples["doc_id"].values)),
            "offset": ("sample", samples["offset"].values),
        },
        coords={
            "sample": _strings(samples["sample"].values),
            "layer": np.arange(layout.n_layers),
            "matrix": _strings(layout.matrices),
            "threshold": np.asarray(thresholds, dtype=np.float64),
            "multiple": np.asarray(multiples, dtype=np.float64),
            "matrix_size": ("matrix", np.asarray([r * c for r, c in layout.shapes], dtype=np.int64)),
        },
        attrs=_attrs(
            {
                **attrs,
                "kind": "actpat.scores",
                "format_version": FORMAT_VERSION,
                "n_samples": len(results),
                "layer_prefix": layout.layer_prefix,
                "matrices": list(layout.matrices),
                "shapes": [list(s) for s in layout.shapes],
            }
        ),
    )
    if results[0].hidden_mean is not None:
        ds["hidden_mean"] = (("sample", "hidden_layer", "hidden"), stack("hidden_mean").astype(np.float32))
    k = ds.sizes["bucket"]
    # per-layer reads (all samples of a layer) are what the similarity reduction does
    encoding = {"sketch": {"chunks": (len(results), 1, k), "compressors": _compressor()}}
    with _writing(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
        group = zarr.open_group(tmp, mode="r+")
        for j, (name, (rows, cols)) in enumerate(zip(layout.matrices, layout.shapes)):
            arr = group.create_array(
                name,
                shape=(layout.n_layers, rows, cols),
                chunks=(1, _row_chunk(rows, cols), cols),
                dtype="float32",
                fill_value=0.0,
                compressors=_compressor(),
                dimension_names=["layer", f"{name}.row", f"{name}.col"],
                attributes={"long_name": f"sum over samples of |w * dD/dw| for {name}", "units": "logit"},
            )
            for i in range(layout.n_layers):  # one layer at a time: host memory stays at one matrix
                arr[i] = sums[i][j].detach().float().cpu().numpy()


PROVENANCE_KEYS = ("model", "checkpoint_sha256", "seed", "seq_len", "target", "dtype", "sketch_size", "sketch_seed", "sketch_hash_version")


def check_compatible(datasets: dict[str, xr.Dataset]) -> None:
    """Stores reduced together must share model, seed, sequence length, target and sketch."""
    ref_path, ref = next(iter(datasets.items()))
    for path, ds in datasets.items():
        for key in PROVENANCE_KEYS:
            if ds.attrs.get(key) != ref.attrs.get(key):
                raise StoreError(f"{path}: {key} = {ds.attrs.get(key)!r} differs from {ref_path} ({ref.attrs.get(key)!r})")


def write_json(obj, path: Path) -> None:
    """A report as strict JSON: NaN (an undefined statistic) becomes null, numpy scalars plain."""

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (float, np.floating)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        return o

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(clean(obj), indent=2, allow_nan=False))
    os.replace(tmp, path)  # a reader never sees half a report


def write_dataset(ds: xr.Dataset, path: Path) -> None:
    """A reduction's dataset, written like the stores: temporary name, marker, rename."""
    ds = ds.copy()
    for name, var in {**ds.coords, **ds.data_vars}.items():
        if var.dtype.kind in "OUT":  # object, fixed or variable-width strings -> variable-length
            ds[name] = (var.dims, _strings(var.values.ravel()).reshape(var.shape))
    ds.attrs = _attrs({**ds.attrs, "kind": "actpat.reduction", "format_version": FORMAT_VERSION})
    with _writing(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)


def open_reduction(path: Path) -> xr.Dataset:
    return _open(path, "actpat.reduction")
