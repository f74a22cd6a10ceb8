"""The errors a user can fix, one type per kind of input; the command line turns any of them into a
one-line error naming the cause (``actpat.cli``).

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
