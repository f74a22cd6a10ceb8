"""The on-disk format: Zarr v3 groups laid out for xarray.

Samples store (one per domain): ``token_ids (sample, position)``, with ``doc_id`` and ``offset``
per sample and the held-out document ids; samples of different lengths (pair-set texts,
per-document samples) are padded with -1 and have a ``length (sample,)``: read them with
``sample_lengths`` / ``sample_tokens``, which drop the padding.

Score store (one per domain × shard), all read with ``xarray.open_zarr``:

==========================  ==================================  ==================================
variable                    dims                                meaning
==========================  ==================================  ==================================
``<matrix>``                (layer, <matrix>.row, <matrix>.col)  Σ over the shard's samples of |s|
``l1``, ``l2``              (sample, layer, matrix)              per-sample norms of s
``count_above``             (sample, layer, matrix, threshold)   weights with |s| > threshold
``count_above_rel``         (sample, layer, matrix, multiple)    |s| > multiple × sample's mean |s| (exact)
``zeros``                   (sample, layer, matrix)              weights with s == 0 exactly
``sketch``                  (sample, layer, bucket)              CountSketch of |s| (actpat.sketch)
``hidden_mean``             (sample, hidden_layer, hidden)       mean hidden state (0 = embeddings)
``target_value/_token``     (sample,)                            the differentiated scalar D
==========================  ==================================  ==================================

Attributes carry the provenance (model, checkpoint hash, revision, dtype, seed, seq_len, target,
sample ids via the ``sample`` coordinate, code version). A store is written under a temporary name
and renamed into place after its ``complete`` attribute is set, so a crash never leaves a store at
the final path; readers refuse stores without the marker.

Integrity: every chunk of every array ends with a CRC-32C (Zarr's ``crc32c`` codec, so even a plain
``xarray.open_zarr`` refuses a damaged chunk), and the writer's inventory records every file of the
store, metadata included, with its size and CRC-32C. Readers (``open_samples``, ``open_scores``,
``open_reduction``) check that every file is there with its size when they open a store, and each
file's checksum when its bytes are read: a flipped byte, a truncated or missing chunk, an edited
``zarr.json`` are one error naming the store, the array and the chunk.
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
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.storage import LocalStore, WrapperStore

from actpat.checksums import crc32c, file_crc32c
from actpat.decoder import WeightLayout
from actpat.errors import StoreError
from actpat.provenance import SHARED_BY_REDUCED_STORES

# 2: CRC-32C in every chunk and of every file in the inventory (version 1 stores are refused)
FORMAT_VERSION = 2
TARGET_CHUNK_BYTES = 2 << 20


def _compressor():
    """Blosc-LZ4 with byte shuffling, then a CRC-32C of the compressed chunk (checked by Zarr on
    every read). Scores are float32 noise in their low bits, so no codec compresses them much: LZ4
    writes and reads a score shard about twice as fast as zstd for a few percent more bytes (the
    figures: the closing note of the change that chose it). Stores written with another codec read
    as before: Zarr keeps each array's codecs."""
    return [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"), Crc32cCodec()]


def _encoding(ds: xr.Dataset, extra: dict | None = None) -> dict:
    """Per-variable encoding for ``to_zarr``: every array compressed and checksummed."""
    out = {name: {"compressors": _compressor()} for name in ds.variables}
    for name, enc in (extra or {}).items():
        out[name] = {**out[name], **enc}
    return out


def _attrs(attrs: dict) -> dict:
    """JSON-safe attributes (xarray/zarr store them as JSON)."""
    return json.loads(json.dumps(attrs, default=str))


def _strings(values) -> np.ndarray:
    """Variable-length strings (Zarr v3 has no stable fixed-length string type)."""
    return np.asarray([str(v) for v in values], dtype=object)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


INVENTORY = "actpat_inventory.json"
NOT_IN_STORE = (INVENTORY, ".snakemake_timestamp")


def _files(root: Path) -> dict[str, list[int]]:
    """Every file of a store but the inventory itself: [size in bytes, CRC-32C]."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            if rel not in NOT_IN_STORE:
                file = Path(dirpath, f)
                out[rel.replace(os.sep, "/")] = [file.stat().st_size, file_crc32c(file)]
    return out


def _publish(tmp: Path, path: Path) -> None:
    """Mark the store complete, record every file with its size and checksum (the root metadata
    with the marker included), move it into place (a rename within one directory is atomic)."""
    group = zarr.open_group(tmp, mode="r+")
    group.attrs["complete"] = True
    files = _files(Path(tmp))
    body = json.dumps(files, sort_keys=True)
    (Path(tmp) / INVENTORY).write_text(json.dumps({"format_version": FORMAT_VERSION, "files": files,
                                                   "crc32c": crc32c(body.encode())}, sort_keys=True))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _inventory(path: Path) -> dict:
    """A store's inventory, checked: its files {relative path: [size, CRC-32C]} and the CRC-32C of
    that list; raises StoreError when there is none (an incomplete store, or one written before
    checksums) or it is damaged."""
    inv_file = Path(path) / INVENTORY
    if not inv_file.exists():
        root = Path(path) / "zarr.json"
        complete = False
        try:
            complete = bool(json.loads(root.read_text()).get("attributes", {}).get("complete"))
        except (OSError, ValueError):
            pass
        if complete:
            raise StoreError(f"{path}: written by an older actpat without checksums (format 1); delete it and rerun "
                             "the job that wrote it")
        raise StoreError(f"{path}: no completion marker; the job that wrote it did not finish (rerun it)")
    try:
        inv = json.loads(inv_file.read_text())
        body = json.dumps(inv["files"], sort_keys=True)
        intact = crc32c(body.encode()) == inv["crc32c"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        intact = False
    if not intact:
        raise StoreError(f"{path}: its inventory {INVENTORY} is damaged; delete the store and rerun the job that wrote it")
    return inv


def read_inventory(path: Path) -> dict[str, list[int]]:
    """The files a store's writer recorded, {relative path: [size, CRC-32C]} (``_inventory``)."""
    return _inventory(path)["files"]


def content_id(path: Path) -> int:
    """A store's content identity: the CRC-32C its inventory records of every file's size and
    CRC-32C, so a change of any file changes it (a result made from a store names the store by it)."""
    return _inventory(path)["crc32c"]


def _describe(key: str) -> str:
    """'array 'x', chunk c/0/1' for a file of a store."""
    parts = key.split("/")
    if parts[-1] == "zarr.json":
        return f"the metadata of array {'/'.join(parts[:-1])!r}" if len(parts) > 1 else "the store's root metadata"
    if "c" in parts:
        k = parts.index("c")
        return f"array {'/'.join(parts[:k])!r}, chunk {'/'.join(parts[k:])}"
    return f"file {key}"


def _damaged(path: Path, key: str, what: str) -> StoreError:
    return StoreError(f"{path}: {_describe(key)} ({key}) {what}; the store is damaged (delete it and rerun the job "
                      "that wrote it)")


def verify_files(path: Path, files: dict[str, list[int]]) -> None:
    """Every recorded file is there with its size (cheap: no file is read)."""
    for rel, (size, _) in files.items():
        f = Path(path) / rel
        if not f.is_file():
            raise _damaged(path, rel, "is missing")
        if f.stat().st_size != size:
            raise _damaged(path, rel, f"has {f.stat().st_size} bytes, the writer wrote {size}; it is truncated or changed")


def verify_checksums(path: Path) -> None:
    """Read every file of a store and compare its checksum (a full check, e.g. after a copy)."""
    files = read_inventory(path)
    verify_files(path, files)
    for rel, (_, crc) in files.items():
        if file_crc32c(Path(path) / rel) != crc:
            raise _damaged(path, rel, "does not match its checksum")


class VerifiedStore(WrapperStore):
    """A read-only Zarr store that checks each file against the writer's inventory when its bytes
    are read: the checksum costs one CRC-32C pass over bytes that are read anyway."""

    def __init__(self, store, path: Path | None = None, files: dict | None = None):
        super().__init__(store)
        self.path = path
        self.files = files or {}

    def _with_store(self, store):
        return type(self)(store, self.path, self.files)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        expected = self.files.get(key)
        if expected is None:
            if buf is not None and key not in NOT_IN_STORE:
                raise _damaged(self.path, key, "was not written with the store")
            return buf  # a chunk never written: fill values
        if buf is None:
            raise _damaged(self.path, key, "is missing")
        if byte_range is None:
            data = buf.to_bytes()
            if len(data) != expected[0]:
                raise _damaged(self.path, key, f"has {len(data)} bytes, the writer wrote {expected[0]}; it is truncated or changed")
            if crc32c(data) != expected[1]:
                raise _damaged(self.path, key, "does not match its checksum")
        return buf


def _verified(path: Path) -> VerifiedStore:
    files = read_inventory(path)
    verify_files(path, files)
    return VerifiedStore(LocalStore(str(path), read_only=True), Path(path), files)


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


_HELD: set[str] = set()


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold the write lock of the store at ``path`` while the body runs: an flock on a file beside
    it, released when the process ends, however it ends, and removed when the body is done. A
    second writer of the same store (a run started after ``snakemake --unlock`` while the first is
    alive) stops with the holder's pid and host. Re-entrant within a process."""
    import fcntl
    import socket
    import time

    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(f"{path}: another job is writing this store ({holder}); wait for it to finish or stop it, "
                             "then rerun") from None
        try:  # the file may have been removed by the holder that just released it: lock the current one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        try:
            os.unlink(lock)  # while still holding it: a waiting opener then sees a stale inode and retries
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def _writing(path: Path):
    """Write a store under a temporary name, holding its lock; publish it when the body succeeds,
    remove the temporary directory when it fails (a full disk, an error), so no half store is left."""
    path = Path(path)
    with exclusive(path):
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
    """A ``SampleSet`` (``actpat.samples``) as a samples store; its ``lengths``, where its rows are
    padded, as ``length (sample,)``. ``extra``: more variables, e.g. the pair table of a pair set."""
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
    if sample_set.lengths is not None:
        ds["length"] = ("sample", np.asarray(sample_set.lengths, dtype=np.int64))
    for name, var in (extra or {}).items():
        ds[name] = var
    with _writing(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds))


def _open(path: Path, kind: str) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: store does not exist")
    store = _verified(path)
    with warnings.catch_warnings():
        # Snakemake leaves a .snakemake_timestamp file inside directory() outputs
        warnings.filterwarnings("ignore", message=".*(snakemake_timestamp|actpat_inventory)")
        try:
            group = zarr.open_group(store, mode="r")
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{path}: not a readable Zarr store ({exc})") from exc
        if not group.attrs.get("complete"):
            raise StoreError(f"{path}: no completion marker; the job that wrote it did not finish (rerun it)")
        if group.attrs.get("kind") != kind:
            raise StoreError(f"{path}: expected a {kind} store, found {group.attrs.get('kind')!r}")
        try:
            return xr.open_zarr(store, consolidated=False, chunks=None)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{path}: not a readable Zarr store ({exc})") from exc


def open_samples(path: Path) -> xr.Dataset:
    return _open(path, "actpat.samples")


def sample_lengths(samples: xr.Dataset) -> np.ndarray:
    """The real tokens of each sample of a samples store (or of some of its rows): its ``length``
    where the rows are padded, else the full width."""
    if "length" in samples:
        return samples["length"].values
    return np.full(samples.sizes["sample"], samples.sizes["position"], dtype=np.int64)


def sample_tokens(samples: xr.Dataset) -> list[np.ndarray]:
    """Each sample's real tokens, without padding."""
    return [row[:n] for row, n in zip(samples["token_ids"].values, sample_lengths(samples))]


def window_tokens(windows: xr.Dataset) -> np.ndarray:
    """The (window, position) tokens of a store of equal-length windows (calibration, perplexity);
    a store of padded samples is refused."""
    if "length" in windows:
        raise StoreError(f"{windows.attrs.get('domain')}: a store of padded samples of different lengths, not of "
                         "equal-length windows")
    return windows["token_ids"].values


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
    encoding = _encoding(ds, {"sketch": {"chunks": (len(results), 1, k)}})
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


def write_mask(path: Path, layout: WeightLayout, packed, attrs: dict, kept=None) -> None:
    """A pruned model as the dense checkpoint plus this store: per scored matrix, the pruned weights
    as bits (``packed[layer][matrix]``: ``np.packbits(mask, axis=1, bitorder="little")``, 1 =
    pruned: one bit per scored weight). A method that also changes the kept weights stores their
    values (``kept[layer][matrix]``: 1-D torch tensors, the kept entries row by row, in the
    checkpoint's dtype) in one ``<matrix>.kept`` array per matrix (not a dimension coordinate: read
    a layer at a time), the layers one after the other (``layer_offsets``); bfloat16, which Zarr lacks, as its bits (uint16). The root's
    ``kept_weights`` names their dtype (``changed_weights`` stays set, so that code that reads
    every weight as float32 fails rather than take the mask alone)."""
    dtype = str(kept[0][0].dtype).removeprefix("torch.") if kept else None
    with _writing(path) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.attrs.update(_attrs({**attrs, "kind": "actpat.mask", "format_version": FORMAT_VERSION,
                                   "layer_prefix": layout.layer_prefix, "matrices": list(layout.matrices),
                                   "shapes": [list(s) for s in layout.shapes], "n_layers": layout.n_layers,
                                   "bitorder": "little", "changed_weights": kept is not None, "kept_weights": dtype}))
        for j, (name, (rows, cols)) in enumerate(zip(layout.matrices, layout.shapes)):
            width = -(-cols // 8)
            arr = group.create_array(name, shape=(layout.n_layers, rows, width), chunks=(1, rows, width), dtype="uint8",
                                     fill_value=0, compressors=_compressor(),
                                     dimension_names=["layer", f"{name}.row", f"{name}.byte"],
                                     attributes={"long_name": f"pruned weights of {name}, 8 columns per byte (little bit order)"})
            for i in range(layout.n_layers):
                arr[i] = packed[i][j]
            if kept is not None:
                values = [_stored_values(kept[i][j], dtype) for i in range(layout.n_layers)]
                offsets = np.cumsum([0] + [len(v) for v in values]).tolist()
                item = values[0].dtype.itemsize
                arr = group.create_array(f"{name}.kept", shape=(offsets[-1],), dtype=values[0].dtype, fill_value=0,
                                         chunks=(max(1, min(offsets[-1], TARGET_CHUNK_BYTES // item)),),
                                         compressors=_compressor(), dimension_names=[f"{name}.kept_entry"],
                                         attributes={"long_name": f"the kept weights of {name}, row by row, layer after layer",
                                                     "weight_dtype": dtype, "layer_offsets": offsets})
                for i, v in enumerate(values):
                    arr[offsets[i]:offsets[i + 1]] = v


def _stored_values(values, dtype: str) -> np.ndarray:
    """A 1-D torch tensor as the array stored: its own dtype, bfloat16 as its bits."""
    import torch

    if str(values.dtype).removeprefix("torch.") != dtype:
        raise StoreError(f"kept weights of several dtypes ({dtype}, {values.dtype}) in one mask store")
    return values.view(torch.int16).numpy().view(np.uint16) if values.dtype == torch.bfloat16 else values.numpy()


def kept_values(mask: xr.Dataset, name: str, layer: int):
    """The kept weights of one matrix of one layer (``write_mask``), as a torch tensor in the dtype
    they were stored in."""
    import torch

    arr = mask[f"{name}.kept"]
    offsets = arr.attrs["layer_offsets"]
    values = np.require(arr[offsets[layer]:offsets[layer + 1]].values, requirements="W")  # torch takes writable arrays
    if arr.attrs["weight_dtype"] == "bfloat16":
        return torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(values)


def open_mask(path: Path) -> xr.Dataset:
    return _open(path, "actpat.mask")


def check_compatible(datasets: dict[str, xr.Dataset]) -> None:
    """Stores reduced together must share model, seed, sequence length, target and sketch."""
    ref_path, ref = next(iter(datasets.items()))
    for path, ds in datasets.items():
        for key in SHARED_BY_REDUCED_STORES:
            if ds.attrs.get(key) != ref.attrs.get(key):
                raise StoreError(f"{path}: {key} = {ds.attrs.get(key)!r} differs from {ref_path} ({ref.attrs.get(key)!r})")


def write_dataset(ds: xr.Dataset, path: Path) -> None:
    """A reduction's dataset, written like the stores: temporary name, marker, rename."""
    ds = ds.copy()
    for name, var in {**ds.coords, **ds.data_vars}.items():
        if var.dtype.kind in "OUT":  # object, fixed or variable-width strings -> variable-length
            ds[name] = (var.dims, _strings(var.values.ravel()).reshape(var.shape))
    ds.attrs = _attrs({**ds.attrs, "kind": "actpat.reduction", "format_version": FORMAT_VERSION})
    with _writing(path) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False, encoding=_encoding(ds))


def open_reduction(path: Path) -> xr.Dataset:
    return _open(path, "actpat.reduction")
