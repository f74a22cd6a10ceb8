"""The errors a user can fix, one type per kind of input; the command line turns any of them into a
one-line error naming the cause (``actpat.cli``), and what an out-of-memory job should lower
(``OOM_HINTS``).

A leaf module: every other module may raise or catch these without importing the module that
raises them. (``SourceError``, ``SamplingError`` and ``NumericalError`` still live beside
``actpat.sources``, ``actpat.samples`` and ``actpat.scoring``.)
"""


class ActpatError(Exception):
    """An error the user can fix (bad config, missing input, unusable model...)."""


class ConfigError(ActpatError):
    """The configuration does not match the schema or a cross-field rule."""


class ModelError(ActpatError):
    """The model cannot be found, loaded, or is not a causal language model."""


class StoreError(ActpatError):
    """A store is missing, incomplete, damaged or does not match the others."""


class ResultError(ActpatError):
    """A JSON result is missing, damaged, disagrees with itself, or was made for something else."""


class PruningError(ActpatError):
    """Pruning was asked something impossible, or did not reach its target."""


class EvaluationError(ActpatError):
    """Not enough evaluation text, or windows that do not fit the model."""


class AccuracyError(ActpatError):
    """A task that cannot be built or run."""


class PairsError(ActpatError):
    """A pair set cannot be read or has pairs without a usable score."""


class ReductionError(ActpatError):
    """Stores cannot be reduced together."""


# what to lower when a job runs out of memory (the rule's memory also grows with each retry)
OOM_HINTS = {
    "score-shard": "lower resources.score_batch_size or samples.seq_len, use scoring.compute_dtype: bfloat16, lower "
                   "scoring.sketch_size, or raise resources.jobs.score_shard.mem_mb (samples.shard_size only shortens the job)",
    "prune": "lower pruning.calibration.windows or pruning.calibration.seq_len, or raise resources.jobs.prune.mem_mb",
    "perplexity": "lower pruning.evaluation.seq_len, or raise resources.jobs.perplexity.mem_mb",
    "zero-shot": "lower pruning.evaluation.accuracy.batch_size, or raise resources.jobs.zero_shot.mem_mb",
}
OOM_EXIT = 3


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
