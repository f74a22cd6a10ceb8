"""Command line behind the workflow's rules: ``python -m actpat <command> ...``.

Each command is one job of the DAG. It takes the job's settings as one JSON argument
(``--settings``: the part of the validated config the job depends on, see ``actpat.settings``) and
paths; it only parses and calls the library function that does the job. Errors the user can fix
(ActpatError) end the process with a single line on stderr naming the cause.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from actpat import __version__
from actpat.errors import OOM_EXIT, OOM_HINTS, ActpatError, is_out_of_memory

log = logging.getLogger("actpat")


def _settings(cls_name: str):
    """argparse type: the job's settings, JSON text (as the rules pass it) or @path of a JSON file."""
    def parse(text: str):
        from actpat import settings
        from actpat.settings_json import decode

        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        try:
            return decode(getattr(settings, cls_name), text)
        except (ValueError, TypeError, KeyError) as exc:
            raise argparse.ArgumentTypeError(f"not a valid {cls_name}: {exc}") from None
    parse.__name__ = cls_name
    return parse


def _paths(values) -> list[Path]:
    return [Path(v) for v in values]


def _path(value) -> Path | None:
    return Path(value) if value else None


def cmd_prepare_model(a) -> None:
    from actpat.models import prepare_model

    prov = prepare_model(a.settings, Path(a.out))
    log.info("done: %s, %d layers, %d scored weights per layer", prov["architecture"], prov["n_layers"], prov["weights_per_layer"])


def cmd_windows(a) -> None:
    from actpat.samples import write_windows

    write_windows(a.settings, Path(a.model_dir), Path(a.out), Path(a.samples) if a.samples else None, log=log.info)


def _runtime(a) -> JobRuntime:
    from actpat.modeljob import JobRuntime

    return JobRuntime(a.device, a.threads, getattr(a, "batch_size", None), log=log.info)


def _model(a) -> ModelRef:
    from actpat.modeljob import ModelRef

    return ModelRef.at(Path(a.model_dir), a.model)


def cmd_score_shard(a) -> None:
    from actpat.scoring import Shard, score_shard

    score_shard(a.settings, _model(a), Shard(Path(a.samples), a.shard, Path(a.out)), _runtime(a))


def cmd_sample_pairs(a) -> None:
    from actpat.pairs import write_pair_texts

    write_pair_texts(a.settings, Path(a.model_dir), Path(a.out), log=log.info)


def cmd_pairs_report(a) -> None:
    from actpat.pairs_report import write_pairs_report

    write_pairs_report(a.settings, Path(a.texts), _paths(a.stores), Path(a.out_dir), log.info)


def cmd_density(a) -> None:
    from actpat.reduce import write_density

    write_density(a.settings, _paths(a.stores), Path(a.out), log=log.info)


def cmd_similarity(a) -> None:
    from actpat.reduce import write_similarity

    write_similarity(_paths(a.stores), Path(a.out), log=log.info)


def cmd_findings(a) -> None:
    from actpat.findings import write_findings

    write_findings(_paths(a.density), Path(a.similarity), _paths(a.samples), Path(a.out_dir), a.settings, log=log.info)


def cmd_prune(a) -> None:
    from actpat.pruning import PruneFiles, prune_checkpoint

    files = PruneFiles(_path(a.calibration), _path(a.density), Path(a.mask), Path(a.report))
    prune_checkpoint(a.settings, _model(a), files, _runtime(a))


def cmd_perplexity(a) -> None:
    from actpat.evaluate import EvaluationFiles, write_perplexity

    files = EvaluationFiles(_path(a.mask), Path(a.windows), Path(a.out), a.run, a.set)
    write_perplexity(a.settings, _model(a), files, _runtime(a))


def cmd_zero_shot(a) -> None:
    from actpat.evaluate import EvaluationFiles, write_zero_shot

    write_zero_shot(a.settings, _model(a), EvaluationFiles(_path(a.mask), None, Path(a.out), a.run), _runtime(a))


def cmd_pruning_report(a) -> None:
    from actpat.pruning_report import write_pruning_report

    write_pruning_report(a.settings, a.model, Path(a.out_dir), log=log.info)


def cmd_summary(a) -> None:
    from actpat.summary import write_summary

    text = write_summary(a.settings, Path(a.findings) if a.findings else None, _paths(a.pairs),
                         Path(a.pruning) if a.pruning else None, Path(a.out))
    log.info("wrote %s:\n%s", a.out, text)


def cmd_models_page(a) -> None:
    import json

    from actpat.crossmodel import write_models_page

    write_models_page(a.settings, json.loads(a.inputs), Path(a.out), Path(a.figure))
    log.info("wrote %s and %s", a.out, a.figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actpat", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, settings: str | None, help: str, *args: tuple[str, dict]) -> argparse.ArgumentParser:
        """A subcommand: its job settings (one JSON argument, see actpat.settings), then paths."""
        p = sub.add_parser(name, help=help)
        if settings:
            p.add_argument("--settings", required=True, type=_settings(settings), help=f"{settings} as JSON (or @file)")
        for flag, kwargs in args:
            p.add_argument(flag, **kwargs)
        p.set_defaults(func=func)
        return p

    one, many, opt = {"required": True}, {"nargs": "+", "required": True}, {"default": None}
    runtime = [("--device", {"default": "auto", "choices": ["auto", "cpu", "cuda"]}),
               ("--threads", {"type": int, "default": int(os.environ.get("ACTPAT_THREADS", "2"))})]
    named = ("--model", {"default": None, "help": "the model's name in the config (default: the model directory's)"})
    command("prepare-model", cmd_prepare_model, "ModelSpec", "make a plain local checkpoint from any model source",
            ("--out", one))
    for name, help in (("sample-domain", "draw a domain's token windows"),
                       ("pruning-text", "calibration or evaluation windows of a domain or an evaluation set")):
        command(name, cmd_windows, "WindowJob", help, ("--model-dir", one), ("--out", one),
                ("--samples", {**opt, "help": "evaluation windows: the domain's samples store (its held-out ids)"}))
    command("score-shard", cmd_score_shard, "ScoringJob", "score one shard of a domain's samples into a Zarr store",
            ("--samples", one), ("--shard", {"type": int, "required": True}), ("--model-dir", one), ("--model", one),
            *runtime, ("--batch-size", {"type": int, "default": None, "help": "samples per pass (default: by device)"}),
            ("--out", one))
    command("sample-pairs", cmd_sample_pairs, "PairTextsJob", "validation 3: tokenize a pair set's distinct texts",
            ("--model-dir", one), ("--out", one))
    command("pairs-report", cmd_pairs_report, "AnalysisJob", "validation 3: LLMDcos per layer against human scores",
            ("--texts", one), ("--stores", many), ("--out-dir", one))
    command("density", cmd_density, "DensityJob", "finding 1: activated weights per layer of one domain",
            ("--stores", many), ("--out", one))
    command("similarity", cmd_similarity, None, "finding 2: LLMDcos between all samples of all domains",
            ("--stores", many), ("--out", one))
    command("findings", cmd_findings, "AnalysisJob", "findings 1-3: statistics, tables and figures",
            ("--density", many), ("--similarity", one), ("--samples", many), ("--out-dir", one))
    command("prune", cmd_prune, "PruneJob", "validations 1-2: prune the scored matrices of a model",
            ("--model-dir", one), ("--model", one), ("--calibration", opt), ("--density", opt), *runtime,
            ("--mask", {**one, "help": "the mask store (the pruned model)"}), ("--report", one))
    mask = ("--mask", {**opt, "help": "a pruning run's mask store (none: the dense model)"})
    run = ("--run", {**opt, "help": "the key of the pruning run evaluated, which the mask must be made for"})
    command("perplexity", cmd_perplexity, "EvaluateJob",
            "validations 1-2: perplexity (and last-word accuracy) of a model on an evaluation set",
            ("--model-dir", one), named, mask, run, ("--windows", {**one, "help": "the evaluation windows store"}),
            ("--set", {**one, "help": "the evaluation set, which the windows must be cut from"}), *runtime, ("--out", one))
    command("zero-shot", cmd_zero_shot, "ZeroShotJob", "validations 1-2: accuracy on lm-evaluation-harness tasks",
            ("--model-dir", one), named, mask, run, *runtime, ("--out", one))
    command("pruning-report", cmd_pruning_report, "PruningReportJob", "validations 1-2: tables and figures",
            ("--model", {**one, "help": "the model whose runs are reported (their files: actpat.paths)"}),
            ("--out-dir", one))
    command("summary", cmd_summary, "SummaryJob", "SUMMARY.md: every finding and validation against the paper",
            ("--findings", opt), ("--pairs", {"nargs": "*", "default": []}), ("--pruning", opt), ("--out", one))
    command("models-page", cmd_models_page, "ModelsPageJob", "MODELS.md: every model's findings and validations side by side",
            ("--inputs", {**one, "help": "JSON: each model's result files (findings, density_table, pruning, pairs)"}),
            ("--out", one), ("--figure", one))
    return parser


# commands whose jobs import no torch: a local run forks them from a server without it
# (actpat.forkserver), which they need not wait for
NO_TORCH = frozenset({"density", "similarity", "findings", "pairs-report", "pruning-report", "summary", "models-page"})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ActpatError as exc:
        log.error("%s", exc)
        print(f"actpat error: {exc}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        hint = OOM_HINTS.get(args.command, "raise the job's memory")
        log.error("out of memory", exc_info=True)
        print(f"actpat error: out of memory in {args.command} ({detail}); {hint}", file=sys.stderr)
        return OOM_EXIT
    return 0
