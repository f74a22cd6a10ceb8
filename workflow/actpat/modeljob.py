"""What every job that runs a model shares: which model (``ModelRef``), where and how it runs
(``JobRuntime``), and one start (``start``) that sets the thread count and torch's seed, picks the
device and the compute dtype, loads the prepared checkpoint after checking its files (or takes the
copy a local run's fork server holds: ``hold``), groups its decoder weights, and writes the job's
header line.

Scoring, pruning, perplexity and zero-shot jobs each take their settings object (the part of the
config they depend on, ``actpat.settings``), a model, their paths and a runtime: no job repeats this
start, and a job's function takes five parameters or fewer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from actpat.errors import ModelError


@dataclass(frozen=True)
class ModelRef:
    """A prepared model: its name in the config (and under ``results/``) and its checkpoint."""

    name: str
    dir: Path

    @classmethod
    def at(cls, model_dir: Path, name: str | None = None) -> "ModelRef":
        """The model prepared in ``model_dir``; its name is the directory's unless given (the
        workflow prepares a model ``m`` in ``resources/models/m``, ``actpat.paths``)."""
        return cls(name or Path(model_dir).name, Path(model_dir))


@dataclass(frozen=True)
class JobRuntime:
    """Where a model job runs and how it reports: the requested device (auto, cpu, cuda), torch
    threads, samples per pass for scoring (None: by device), and the log."""

    device: str = "auto"
    threads: int = 2
    batch_size: int | None = None
    log: Callable[[str], None] = field(default=print, compare=False)


@dataclass
class LoadedModel:
    """A job's model, loaded: the model and tokenizer, its scored matrices, the checkpoint's
    provenance, and where and in what it computes."""

    model: object
    tokenizer: object
    layout: object  # actpat.decoder.WeightLayout
    checkpoint: dict  # the prepared checkpoint's provenance (actpat.models.read_provenance)
    device: str
    dtype: str
    threads: int
    started: float  # time.time() when the job started

    @property
    def identity(self) -> str:
        """The checkpoint's file hashes as one string (what a mask or store made from it records)."""
        from actpat.provenance import checkpoint_id

        return checkpoint_id(self.checkpoint)

    def seconds(self) -> float:
        return time.time() - self.started


# ----------------------------------------------------------------------------------------------
# Checkpoints held by a local run's torch fork server (actpat.forkserver): loaded and checked once
# per (directory, dtype) before the server forks a model job, and shared by the jobs copy-on-write.


@dataclass(frozen=True)
class Held:
    model: object
    tokenizer: object
    checkpoint: dict  # provenance
    files: dict  # name: (size, mtime, ctime, inode) of every file of the checkpoint's directory
    loaded: float  # time.time() when loaded


HELD: dict[tuple[str, str], Held] = {}


def _key(model_dir: Path, dtype: str) -> tuple[str, str]:
    return str(Path(model_dir).resolve()), dtype


def _stamps(model_dir: Path) -> dict:
    """Size, modification and change times and inode of every file of a checkpoint's directory: a
    file written, copied over or replaced since moves one of them (the change time, which no copy
    tool sets back, moves with every write)."""
    out = {}
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file():
            st = f.stat()
            out[f.name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    return out


def held(model_dir: Path, dtype: str) -> tuple[Held | None, str | None]:
    """The fork server's copy of a checkpoint in ``dtype``, if its files are still the ones it
    loaded; else None and why (None: the server holds no checkpoint at all)."""
    if not HELD:
        return None, None
    copy = HELD.get(_key(model_dir, dtype))
    if copy is None:
        return None, f"the fork server holds no copy of it in {dtype}"
    try:
        now = _stamps(model_dir)
    except OSError as exc:
        return None, f"its files cannot be read ({exc})"
    if now != copy.files:
        changed = sorted(n for n in set(now) | set(copy.files) if now.get(n) != copy.files.get(n))
        return None, f"its files changed since the fork server loaded them ({', '.join(changed)})"
    return copy, None


def hold(model_dir: Path, dtype: str) -> Held:
    """Load and check a checkpoint on the CPU for the jobs the fork server will fork (one thread:
    a thread pool started here would hang the children's first parallel operation), unless it is
    held already with its files unchanged. A checkpoint whose files change while it loads is not
    held."""
    import torch

    from actpat.models import load_checkpoint

    copy, _ = held(model_dir, dtype)
    if copy is not None:
        return copy
    HELD.pop(_key(model_dir, dtype), None)
    before, threads = _stamps(model_dir), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, tokenizer, checkpoint = load_checkpoint(model_dir, dtype, "cpu")
    finally:
        torch.set_num_threads(threads)
    if _stamps(model_dir) != before:
        raise ModelError(f"{model_dir}: its files changed while it was loaded")
    copy = HELD[_key(model_dir, dtype)] = Held(model, tokenizer, checkpoint, before, time.time())
    return copy


def device_without_cuda(requested: str) -> str | None:
    """The device a job that asks for ``requested`` runs on, where that is known without touching
    CUDA (a process that forks jobs must not initialise it): the CPU when asked for, or when torch
    is built without CUDA; else None."""
    import torch

    if requested == "cpu" or (requested == "auto" and not torch.backends.cuda.is_built()):
        return "cpu"
    return None


def start(what: str, model: ModelRef, runtime: JobRuntime, dtype: str | Callable[[str], str],
          spread: bool = False) -> LoadedModel:
    """Start a model job: ``dtype`` is a dtype name, or a function of the device picked (the
    scoring and evaluation rules for ``auto``); ``spread`` lets a model larger than one GPU spread
    its layers over the visible GPUs (scoring)."""
    import torch

    from actpat.decoder import weight_layout
    from actpat.models import load_checkpoint, pick_device

    t0 = time.time()
    torch.set_num_threads(runtime.threads)
    torch.manual_seed(0)
    device = pick_device(runtime.device, runtime.log)
    dtype = dtype(device) if callable(dtype) else dtype
    copy, why = held(model.dir, dtype)
    if copy is not None and spread and device == "cuda" and torch.cuda.device_count() > 1:
        copy, why = None, "the fork server's copy is not spread over the GPUs"
    if copy is not None:
        net, tokenizer, checkpoint = copy.model.to(device), copy.tokenizer, copy.checkpoint
        how = f"held by the fork server (loaded and checked at {time.strftime('%H:%M:%S', time.localtime(copy.loaded))}), taken"
    else:
        if why:
            runtime.log(f"{model.dir}: {why}; loading it")
        net, tokenizer, checkpoint = load_checkpoint(model.dir, dtype, device, spread=spread)
        how = "checked and loaded"
    layout = weight_layout(net)
    runtime.log(f"{what}: {model.name} ({checkpoint['architecture']}, {layout.n_layers} layers) on {device} in {dtype}, "
                f"{runtime.threads} threads; {how} in {time.time() - t0:.1f}s")
    return LoadedModel(net, tokenizer, layout, checkpoint, device, dtype, runtime.threads, t0)
