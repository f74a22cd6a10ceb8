"""The workflow's settings: the validated config as frozen dataclasses, without torch.

``config.yaml`` → :func:`actpat.config.validate_config` (schema defaults, cross-field rules) →
:class:`Settings` (this module), built once in the Snakemake process. Defaults live in the schema
only: no field here has a default.

A rule hands its job exactly the settings the job depends on, as one quoted JSON argument
(``actpat.settings_json.encode``); the job decodes them into the same dataclasses. Snakemake reruns
a job when that argument changes, so a job's settings are also its rerun trigger: they must hold
everything that changes its output and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from actpat.methods import METHODS, NM_BASES, PruningMethod, parse_structure
from actpat.registry import ALLOCATIONS, BASES
from actpat.settings_json import check_types, decode


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class ModelSpec:
    """A model to analyse: ``source`` is 'smollm2' (embedded), a .gguf path, a hub id or a directory."""

    name: str
    source: str
    revision: str | None
    dtype: str


@dataclass(frozen=True)
class TextSource:
    """Where a domain's (or an evaluation-only set's) documents come from: ``spec`` is its config
    entry (``source`` and the source's own keys, see ``actpat.sources``)."""

    name: str
    spec: dict[str, Any]

    @property
    def source(self) -> str:
        return self.spec["source"]

    @property
    def pack(self) -> bool:
        return bool(self.spec.get("pack", False))

    @property
    def per_document(self) -> bool:
        """Each document one scoring sample (its end kept), not windows cut from it."""
        return bool(self.spec.get("per_document", False))

    @property
    def samples(self) -> int | None:
        return self.spec.get("samples")


@dataclass(frozen=True)
class PairSetSpec:
    """Validation 3: pairs of texts with human similarity scores (``spec``: its config entry)."""

    name: str
    spec: dict[str, Any]

    @property
    def shards(self) -> int:
        return self.spec["shards"]

    @property
    def max_tokens(self) -> int:
        return self.spec["max_tokens"]

    @property
    def domain(self) -> str:
        """The name its texts are scored under, like a domain's."""
        return f"pairs-{self.name}"


@dataclass(frozen=True)
class Samples:
    per_domain: int
    seq_len: int
    shard_size: int
    holdout_fraction: float


@dataclass(frozen=True)
class Scoring:
    target: str
    compute_dtype: str
    thresholds: tuple[float, ...]
    relative_multiples: tuple[float, ...]
    sketch_size: int
    sketch_seed: int


@dataclass(frozen=True)
class Runtime:
    """Where a model-running job runs, and with how many torch threads."""

    device: str
    threads: int
    fork_server: bool  # local runs: jobs forked from a process with the libraries imported (actpat.forkserver)


@dataclass(frozen=True)
class Analysis:
    density_threshold: float
    density_multiple: float
    mass_shares: tuple[float, ...]
    shallow_layers: tuple[float, float]
    deep_layers: tuple[float, float]
    bootstrap: int

    def shallow(self, n_layers: int):
        return layer_range(*self.shallow_layers, n_layers)

    def deep(self, n_layers: int):
        return layer_range(*self.deep_layers, n_layers)


def layer_range(start: float, stop: float, n_layers: int):
    """Layers [start, stop) of a model with ``n_layers``: the one definition used by findings and
    validation 3. A number strictly between -1 and 1 is a fraction of the depth, floored like the
    paper's ``range(L // 2, L - 2)``; any other number is a layer index (negative: from the end).
    (0.5, -2) is the paper's deep range [L/2, L−2)."""
    import math

    import numpy as np

    def resolve(x: float) -> int:
        if -1 < x < 1:
            k = math.floor(abs(x) * n_layers)
            return k if x >= 0 else n_layers - k
        if x != int(x):
            raise ValueError(f"layer bound {x} is neither a fraction in (-1, 1) nor a layer index")
        return int(x) if x >= 0 else n_layers + int(x)

    a, b = resolve(start), resolve(stop)
    if not 0 <= a < b <= n_layers:
        raise ValueError(f"layer range ({start:g}, {stop:g}) is empty for {n_layers} layers")
    return np.arange(a, b)


@dataclass(frozen=True)
class JobResources:
    mem_mb: int  # a retried job asks for this times the attempt
    runtime: int  # minutes


@dataclass(frozen=True)
class Resources:
    jobs: dict[str, JobResources]  # by rule name
    score_gpus: int
    score_batch_size: int | None
    gpu_partition: str | None


@dataclass(frozen=True)
class Calibration:
    domain: str
    windows: int
    seq_len: int


@dataclass(frozen=True)
class Accuracy:
    """Zero-shot accuracy (``actpat.accuracy``): last-word items read off the perplexity pass, named
    tasks through lm-evaluation-harness."""

    lastword: int  # last-word items per perplexity window (0: off)
    context_words: int  # at least this many words before a last-word target
    tasks: tuple[str, ...]  # harness tasks by name
    include_path: str | None  # harness task YAML files
    limit: int | None  # items per named task
    batch_size: int  # items per forward pass of the harness

    @property
    def zero_shot(self) -> bool:
        """Whether named harness tasks run (one job per model)."""
        return bool(self.tasks)


@dataclass(frozen=True)
class Evaluation:
    general: str
    seq_len: int
    max_windows: int
    bootstrap: int
    dtype: str  # compute dtype of every evaluated model ("auto": actpat.models.pick_dtype)
    accuracy: Accuracy
    sets: dict[str, TextSource]


@dataclass(frozen=True)
class EvaluateJob:
    """What an evaluation job (one model on one set) depends on: its compute dtype and its
    last-word accuracy settings."""

    dtype: str
    lastword: int
    context_words: int


@dataclass(frozen=True)
class ZeroShotJob:
    """The named harness tasks run on one model (in ``dtype``)."""

    dtype: str
    tasks: tuple[str, ...]
    include_path: str | None
    limit: int | None
    batch_size: int


@dataclass(frozen=True)
class Validation2:
    method: str
    sparsity: float
    calibration_domains: tuple[str, ...]


@dataclass(frozen=True)
class PruningRun:
    """One pruned model: a method at a target sparsity (or an N:M structure), calibrated on a domain.

    ``key`` names it in paths and wildcards (``<calibration>/<method>/<structure>/<sparsity>``);
    a job is handed the run itself, never its key to parse back."""

    method: str
    structure: str  # "unstructured" or "N:M"
    sparsity: float
    calibration: str | None  # None: the method uses no calibration data

    @property
    def key(self) -> str:
        structure = self.structure.replace(":", "of")
        return f"{self.calibration or 'none'}/{self.method}/{structure}/{self.sparsity:g}"

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_structure(self.structure)


@dataclass(frozen=True)
class Pruning:
    enabled: bool
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    nm: tuple[str, ...]
    nm_methods: tuple[str, ...]
    calibration: Calibration
    evaluation: Evaluation
    bounds: tuple[float, float]  # every allocation's layer sparsities stay within these (config: ratios.bounds)
    density_domain: str  # whose density store the density allocations read (config: ratios.domain)
    method_settings: dict[str, Any]  # each declared base's and allocation's settings, by its name (actpat.registry)
    validation2: Validation2


@dataclass(frozen=True)
class PruneJob:
    """What a prune job depends on: the run, the bounds, and the settings of its method's base and
    allocation only (their declared dataclasses as plain dicts: ``actpat.registry``)."""

    run: PruningRun
    bounds: tuple[float, float]
    allocation: dict | None
    base: dict | None


# ----------------------------------------------------------------------------------------------
# What each job depends on (one JSON argument per job; see the module docstring)


# each kind of token windows (WindowJob.kind) and the config field that sets their length
WINDOW_LENGTH_FIELDS = {"samples": "samples.seq_len", "calibration": "pruning.calibration.seq_len",
                        "evaluation": "pruning.evaluation.seq_len"}


@dataclass(frozen=True)
class WindowJob:
    """Token windows cut from a text source: a domain's scoring samples, calibration windows from
    its scoring documents, or perplexity windows of held-out text."""

    kind: str  # "samples" | "calibration" | "evaluation" (WINDOW_LENGTH_FIELDS)
    text: TextSource
    n: int  # windows (evaluation: at most this many, evenly spaced)
    seq_len: int
    seed: int | None  # evaluation windows are not drawn at random
    holdout_fraction: float | None  # evaluation windows take the held-out ids of the samples store

    @property
    def length_field(self) -> str:
        """The config field ``seq_len`` comes from (named in errors)."""
        return WINDOW_LENGTH_FIELDS[self.kind]


@dataclass(frozen=True)
class ScoringJob:
    scoring: Scoring
    shard_size: int | None  # domains: consecutive shards of this many samples
    n_shards: int | None  # pair sets: this many near-equal shards


@dataclass(frozen=True)
class DensityJob:
    mass_shares: tuple[float, ...]


@dataclass(frozen=True)
class AnalysisJob:
    """Findings 1-3 and validation 3's report: their statistics and layer ranges."""

    analysis: Analysis
    seed: int


@dataclass(frozen=True)
class PairTextsJob:
    pairs: PairSetSpec
    seed: int


@dataclass(frozen=True)
class PruningReportJob:
    """Validations 1-2: which runs belong to which validation, and the sets each was evaluated on."""

    general: str
    extra_sets: tuple[str, ...]  # evaluation-only sets (every run is evaluated on them)
    domains: tuple[str, ...]  # validation 2's runs are also evaluated on every domain's held-out text
    validation1: tuple[PruningRun, ...]
    validation2: tuple[PruningRun, ...]
    v2_method: str
    v2_sparsity: float
    bootstrap: int
    seed: int
    zero_shot: bool  # each model has a zeroshot.json of named harness tasks

    def sets_of(self, run: PruningRun) -> list[str]:
        names = [self.general, *self.extra_sets] + (list(self.domains) if run in self.validation2 else [])
        return list(dict.fromkeys(names))

    @property
    def dense_sets(self) -> list[str]:
        return list(self.domains) + list(self.extra_sets)


@dataclass(frozen=True)
class SummaryJob:
    model: ModelSpec
    samples: Samples
    domains: dict[str, TextSource]
    pairs: dict[str, PairSetSpec]
    analysis: Analysis
    calibration: Calibration
    evaluation: Evaluation


@dataclass(frozen=True)
class ModelsPageJob:
    """results/MODELS.md: the models side by side (``actpat.crossmodel``)."""

    models: dict[str, ModelSpec]
    analysis: Analysis
    gamma: float | None  # the absolute threshold of the density-derived allocation (ratios.threshold)


@dataclass(frozen=True)
class Settings:
    models: dict[str, ModelSpec]
    seed: int
    runtime: Runtime
    samples: Samples
    scoring: Scoring
    analysis: Analysis
    resources: Resources
    pruning: Pruning
    pairs: dict[str, PairSetSpec]
    domains: dict[str, TextSource]

    # --- derived views ---------------------------------------------------------------------

    @property
    def scored(self) -> list[str]:
        """Every name scored like a domain: the domains, then each pair set's texts."""
        return list(self.domains) + [p.domain for p in self.pairs.values()]

    def shards_of(self, domain: str) -> list[int]:
        if domain in self.domains:
            return list(range(n_shards(self.domains[domain].samples, self.samples.shard_size)))
        return list(range(self.pair_set(domain).shards))

    def pair_set(self, domain: str) -> PairSetSpec:
        return next(p for p in self.pairs.values() if p.domain == domain)

    def text_source(self, name: str) -> TextSource:
        """A domain or an evaluation-only set, by name."""
        return self.domains.get(name) or self.pruning.evaluation.sets[name]

    @property
    def eval_sets(self) -> list[str]:
        return list(self.domains) + list(self.pruning.evaluation.sets)

    def validation1_runs(self) -> list[PruningRun]:
        pr = self.pruning
        runs = [self._run(m, "unstructured", s, pr.calibration.domain) for m in pr.methods for s in pr.sparsities]
        for nm in pr.nm:
            n, m = parse_structure(nm)
            runs += [self._run(method, nm, n / m, pr.calibration.domain) for method in pr.nm_methods]
        return runs

    def validation2_runs(self) -> list[PruningRun]:
        v2 = self.pruning.validation2
        return [self._run(v2.method, "unstructured", v2.sparsity, d) for d in v2.calibration_domains]

    def pruning_runs(self) -> dict[str, PruningRun]:
        """Every configured run by its key (a run in both validations appears once)."""
        if not self.pruning.enabled:
            return {}
        return {r.key: r for r in self.validation1_runs() + self.validation2_runs()}

    def _run(self, method: str, structure: str, sparsity: float, calibration: str) -> PruningRun:
        return PruningRun(method, structure, float(sparsity), calibration if METHODS[method].calibrated else None)

    def eval_sets_of(self, run: PruningRun) -> list[str]:
        """Validation 1 runs are evaluated on the general set and the evaluation-only sets;
        validation 2 runs on every domain's held-out text as well."""
        return self.pruning_report_job().sets_of(run)

    def prune_job(self, run: PruningRun) -> PruneJob:
        method = METHODS[run.method]
        chosen = self.pruning.method_settings
        of = lambda name: dataclasses.asdict(chosen[name]) if name in chosen else None  # noqa: E731
        return PruneJob(run=run, bounds=self.pruning.bounds, allocation=of(method.allocation), base=of(method.base))

    def method(self, run: PruningRun) -> PruningMethod:
        return METHODS[run.method]

    # --- job settings ------------------------------------------------------------------------

    def window_job(self, kind: str, name: str) -> WindowJob:
        if kind == "samples":
            text = self.domains[name]
            return WindowJob(kind, text, text.samples, self.samples.seq_len, self.seed, self.samples.holdout_fraction)
        if kind == "calibration":
            c = self.pruning.calibration
            return WindowJob(kind, self.domains[name], c.windows, c.seq_len, self.seed, self.samples.holdout_fraction)
        e = self.pruning.evaluation
        return WindowJob(kind, self.text_source(name), e.max_windows, e.seq_len, None, None)

    def scoring_job(self, domain: str) -> ScoringJob:
        if domain in self.domains:
            return ScoringJob(self.scoring, self.samples.shard_size, None)
        return ScoringJob(self.scoring, None, self.pair_set(domain).shards)

    def density_job(self) -> DensityJob:
        return DensityJob(self.analysis.mass_shares)

    def analysis_job(self) -> AnalysisJob:
        return AnalysisJob(self.analysis, self.seed)

    def pair_texts_job(self, name: str) -> PairTextsJob:
        return PairTextsJob(self.pairs[name], self.seed)

    def pruning_report_job(self) -> PruningReportJob:
        pr = self.pruning
        return PruningReportJob(pr.evaluation.general, tuple(pr.evaluation.sets), tuple(self.domains),
                                tuple(self.validation1_runs()), tuple(self.validation2_runs()), pr.validation2.method,
                                pr.validation2.sparsity, pr.evaluation.bootstrap, self.seed,
                                pr.evaluation.accuracy.zero_shot)

    def evaluate_job(self) -> EvaluateJob:
        a = self.pruning.evaluation.accuracy
        return EvaluateJob(self.pruning.evaluation.dtype, a.lastword, a.context_words)

    def zero_shot_job(self) -> ZeroShotJob:
        a = self.pruning.evaluation.accuracy
        return ZeroShotJob(self.pruning.evaluation.dtype, a.tasks, a.include_path, a.limit, a.batch_size)

    def models_page_job(self) -> ModelsPageJob:
        density = self.pruning.method_settings.get("density-abs")
        return ModelsPageJob(self.models, self.analysis, getattr(density, "threshold", None))

    def summary_job(self, model: str) -> SummaryJob:
        pr = self.pruning
        return SummaryJob(self.models[model], self.samples, self.domains, self.pairs, self.analysis, pr.calibration,
                          pr.evaluation)


def n_shards(n: int, shard_size: int) -> int:
    return -(-n // shard_size)


# ----------------------------------------------------------------------------------------------
# Building the settings from a validated config


def from_config(cfg: dict) -> Settings:
    """The typed view of a config already checked by ``validate_config`` (defaults filled in),
    its types checked (``check_types``)."""
    pr = cfg["pruning"]
    texts = lambda d: {n: TextSource(n, dict(s)) for n, s in d.items()}  # noqa: E731
    settings = Settings(
        models={n: ModelSpec(n, m["source"], m["revision"], m["dtype"]) for n, m in cfg["models"].items()},
        seed=cfg["seed"],
        runtime=Runtime(cfg["device"], cfg["threads"], cfg["fork_server"]),
        samples=decode(Samples, cfg["samples"]),
        scoring=decode(Scoring, cfg["scoring"]),
        analysis=decode(Analysis, cfg["analysis"]),
        resources=decode(Resources, cfg["resources"]),
        pruning=Pruning(
            enabled=pr["enabled"],
            methods=tuple(pr["methods"]),
            sparsities=tuple(float(s) for s in pr["sparsities"]),
            nm=tuple(pr["nm"]),
            nm_methods=tuple(pr["nm_methods"]),
            calibration=decode(Calibration, pr["calibration"]),
            evaluation=Evaluation(**{k: v for k, v in pr["evaluation"].items() if k not in ("sets", "accuracy")},
                                  accuracy=_accuracy(pr["evaluation"]["accuracy"]),
                                  sets=texts(pr["evaluation"]["sets"])),
            bounds=tuple(float(b) for b in pr["ratios"]["bounds"]),
            density_domain=pr["ratios"]["domain"],
            method_settings=method_settings(pr),
            validation2=decode(Validation2, pr["validation2"]),
        ),
        pairs={n: PairSetSpec(n, dict(s)) for n, s in cfg["pairs"].items()},
        domains=texts(cfg["domains"]),
    )
    check_types(settings)
    return settings


def method_settings(pruning: dict) -> dict[str, Any]:
    """Each declared base's and allocation's settings (``actpat.registry``), by its name, read from
    its section of the validated ``pruning:`` config: the dataclass's own ``from_config`` where it
    has one (config keys that are not identifiers), else the section's keys named like its fields
    (a section may hold more: the density allocations share ``ratios``)."""
    out = {}
    for declared in [*BASES.values(), *ALLOCATIONS.values()]:
        if declared.settings is None:
            continue
        section = pruning[declared.section]
        if hasattr(declared.settings, "from_config"):
            out[declared.name] = declared.settings.from_config(section)
        else:
            out[declared.name] = decode(declared.settings, {f.name: section[f.name] for f in dataclasses.fields(declared.settings)})
    return out


def _accuracy(cfg: dict) -> Accuracy:
    include = cfg["include_path"]
    return decode(Accuracy, {**cfg, "include_path": os.path.abspath(os.path.expanduser(include)) if include else None})


def load_settings(config: dict) -> Settings:
    """Validate ``config`` (raises ConfigError) and build its settings."""
    from actpat.config import validate_config

    return from_config(validate_config(config))


__all__ = [
    "Accuracy", "Analysis", "Calibration", "Evaluation", "ModelSpec", "ModelsPageJob", "NM_BASES", "PairSetSpec", "PruneJob", "Pruning",
    "PruningRun", "Resources", "Runtime", "Samples", "Scoring", "Settings", "TextSource", "Validation2",
    "EvaluateJob", "ZeroShotJob", "from_config", "load_settings", "method_settings", "n_shards",
]
