"""Where the workflow keeps what it makes: the layout of ``resources/`` and ``results/``, in one
place for the rules and the library.

The rules build their patterns from these functions with Snakemake's wildcards as the arguments
(``samples("{model}", "{domain}")``); the library reads and writes the same names. Every store of
a domain, every pruned model's directory and every evaluation result is named here.
"""

from __future__ import annotations

from dataclasses import dataclass


def model_dir(model: str) -> str:
    """A prepared checkpoint (``actpat.models.prepare_checkpoint``)."""
    return f"resources/models/{model}"


def model_results(model: str) -> str:
    """Everything made from one model; findings 1-3's tables and figures are written here."""
    return f"results/{model}"


def samples(model: str, domain: str) -> str:
    """A domain's (or a pair set's texts') token windows and held-out document ids."""
    return f"results/{model}/samples/{domain}.zarr"


def score_store(model: str, domain: str, shard) -> str:
    return f"results/{model}/scores/{domain}/shard-{shard}.zarr"


def density(model: str, domain: str) -> str:
    return f"results/{model}/density/{domain}.zarr"


def similarity(model: str) -> str:
    return f"results/{model}/similarity.zarr"


def findings(model: str) -> str:
    """Findings 1-3's statistics (beside their tables and figures)."""
    return f"{model_results(model)}/findings.json"


def pairs_dir(model: str, pairset: str) -> str:
    """Validation 3's tables, figures and ``summary.json`` of one pair set."""
    return f"results/{model}/pairs/{pairset}"


def summary(model: str) -> str:
    return f"results/{model}/SUMMARY.md"


def models_page() -> str:
    """Every model's findings and validations side by side (a run with several models)."""
    return "results/MODELS.md"


def models_figure() -> str:
    """Finding 1's density profile of every model on one plot, beside MODELS.md."""
    return "results/figures/models_density.png"


def density_table(model: str) -> str:
    """Finding 1's tidy table (written by the findings job beside findings.json)."""
    return f"{model_results(model)}/density.csv"


# ---- validations 1-2 ----------------------------------------------------------------------------


def pruning_dir(model: str) -> str:
    """Validations 1-2's report, tables and figures (``report.md``, ``summary.json``, ...)."""
    return f"results/{model}/pruning"


def calibration_windows(model: str, domain: str) -> str:
    return f"results/{model}/pruning/text/calibration/{domain}.zarr"


def eval_windows(model: str, evalset: str) -> str:
    return f"results/{model}/pruning/text/eval/{evalset}.zarr"


@dataclass(frozen=True)
class EvaluatedModel:
    """The directory of one evaluated model: a pruning run's (its mask store and pruning report
    beside its evaluations) or the dense model's (its evaluations only)."""

    root: str

    @classmethod
    def run(cls, model: str, run_key: str) -> "EvaluatedModel":
        """A pruning run's directory: ``run_key`` is ``<calibration>/<method>/<structure>/<sparsity>``
        (``actpat.settings.PruningRun.key``)."""
        return cls(f"results/{model}/pruning/runs/{run_key}")

    @classmethod
    def dense(cls, model: str) -> "EvaluatedModel":
        return cls(f"results/{model}/pruning/dense")

    @property
    def mask(self) -> str:
        """The pruned model: the dense checkpoint plus this mask store."""
        return f"{self.root}/mask.zarr"

    @property
    def report(self) -> str:
        """pruning.json: the method, per-layer targets and measured sparsities, calibration."""
        return f"{self.root}/pruning.json"

    def perplexity(self, evalset: str) -> str:
        """Per-window NLL and last-word accuracy on one evaluation set."""
        return f"{self.root}/perplexity/{evalset}.json"

    @property
    def zeroshot(self) -> str:
        """Accuracy on the named harness tasks."""
        return f"{self.root}/zeroshot.json"
