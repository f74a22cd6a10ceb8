"""What every job that runs a model shares: which model (``ModelRef``), where and how it runs
(``JobRuntime``), and one start (``start``) that sets the thread count and torch's seed, picks the
device and the compute dtype, loads the prepared checkpoint after checking its files, groups its
decoder weights, and writes the job's header line.

Scoring, pruning, perplexity and zero-shot jobs each take their settings object (the part of the
config they depend on, ``actpat.settings``), a model, their paths and a runtime: no job repeats this
start, and a job's function takes five parameters or fewer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


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
    net, tokenizer, checkpoint = load_checkpoint(model.dir, dtype, device, spread=spread)
    layout = weight_layout(net)
    runtime.log(f"{what}: {model.name} ({checkpoint['architecture']}, {layout.n_layers} layers) on {device} in {dtype}, "
                f"{runtime.threads} threads; checked and loaded in {time.time() - t0:.1f}s")
    return LoadedModel(net, tokenizer, layout, checkpoint, device, dtype, runtime.threads, t0)
