"""Command line behind the workflow's rules: ``python -m actpat <command> ...``.

Each command does one job of the DAG and can be run by hand. Errors the user can fix
(ActpatError) end the process with a single line on stderr naming the cause.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from actpat import __version__
from actpat.errors import ActpatError

log = logging.getLogger("actpat")


def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return f"{__version__}+{rev}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ActpatError("device: cuda was requested but no CUDA device is visible")
    return requested


def cmd_prepare_model(args) -> None:
    from actpat.models import ModelSource, prepare_checkpoint

    source = ModelSource.parse(args.source, args.revision or None)
    log.info("preparing %s (%s) into %s", args.source, source.kind, args.out)
    prov = prepare_checkpoint(source, Path(args.out), args.dtype)
    log.info("done: %s, %d layers, %d scored weights per layer", prov["architecture"], prov["n_layers"], prov["weights_per_layer"])


def cmd_sample_domain(args) -> None:
    from transformers import AutoTokenizer

    from actpat.samples import make_samples
    from actpat.sources import describe, load_documents
    from actpat.store import write_samples

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prov = json.loads((Path(args.model_dir) / "actpat_provenance.json").read_text())
    max_pos = prov.get("max_positions")
    if max_pos and args.seq_len > max_pos:
        raise ActpatError(f"samples.seq_len {args.seq_len} exceeds the model's maximum of {max_pos} positions")
    t0 = time.time()
    docs = load_documents(spec)
    log.info("%s: %d documents from %s in %.1fs", args.domain, len(docs), describe(spec), time.time() - t0)
    sample_set = make_samples(
        args.domain, docs, tokenizer, args.seq_len, args.n, args.seed, args.holdout_fraction,
        pack=spec.get("pack", False), log=log.info,
    )
    write_samples(
        Path(args.out), sample_set,
        {"domain": args.domain, "source": describe(spec), "source_spec": json.dumps(spec, sort_keys=True),
         "seed": args.seed, "seq_len": args.seq_len, "holdout_fraction": args.holdout_fraction,
         "tokenizer": str(args.model_dir), "code_version": code_version()},
    )
    log.info("wrote %d samples to %s", len(sample_set.doc_ids), args.out)


def cmd_score_shard(args) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from actpat.models import load_checkpoint, weight_layout
    from actpat.samples import shard_slices
    from actpat.scoring import ScoringSettings, ShardScorer
    from actpat.sketch import HASH_VERSION
    from actpat.store import open_samples, write_scores

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pick_device(args.device)
    samples = open_samples(Path(args.samples))
    slices = shard_slices(samples.sizes["sample"], args.shard_size, args.n_shards)
    if not 0 <= args.shard < len(slices):
        raise ActpatError(f"shard {args.shard} does not exist: {args.samples} has {len(slices)} shards of {args.shard_size}")
    shard = samples.isel(sample=slices[args.shard])
    settings = ScoringSettings(
        target=args.target, thresholds=tuple(args.thresholds), relative_multiples=tuple(args.relative_multiples),
        sketch_size=args.sketch_size,
        sketch_seed=args.sketch_seed, cache_hashes=device == "cpu",
    )
    t0 = time.time()
    model, _, prov = load_checkpoint(Path(args.model_dir), args.compute_dtype, device)
    layout = weight_layout(model)
    log.info(
        "%s shard %d: %d samples of %d tokens, %s on %s (%s), loaded in %.1fs",
        samples.attrs["domain"], args.shard, shard.sizes["sample"], shard.sizes["position"],
        prov["architecture"], device, args.compute_dtype, time.time() - t0,
    )
    scorer = ShardScorer(model, layout, settings)
    token_ids = shard["token_ids"].values
    lengths = shard["length"].values if "length" in shard else np.full(len(token_ids), token_ids.shape[1])
    ids = shard["sample"].values
    results = []
    for row, length, sample_id in tqdm(zip(token_ids, lengths, ids), total=len(ids), desc="scoring", unit="sample",
                                       file=sys.stderr, mininterval=5, ascii=True):
        input_ids = torch.as_tensor(np.asarray(row[:length], dtype=np.int64), device=device)[None]
        results.append(scorer.score(input_ids, str(sample_id)))
    log.info("scored %d samples in %.1fs; writing %s", len(results), time.time() - t0, args.out)
    attrs = {
        "model": args.model_name,
        "model_source": prov["source"],
        "revision": prov.get("revision"),
        "checkpoint_sha256": json.dumps(prov["checkpoint_sha256"], sort_keys=True),
        "architecture": prov["architecture"],
        "domain": samples.attrs["domain"],
        "source": samples.attrs["source"],
        "shard": args.shard,
        "shard_size": args.shard_size if not args.n_shards else -1,
        "seed": samples.attrs["seed"],
        "seq_len": samples.attrs["seq_len"],
        "target": settings.target,
        "dtype": args.compute_dtype,
        "accumulation_dtype": "float32",
        "device": device,
        "sketch_size": settings.sketch_size,
        "sketch_seed": settings.sketch_seed,
        "sketch_hash_version": HASH_VERSION,
        "code_version": code_version(),
        "torch_version": torch.__version__,
    }
    write_scores(Path(args.out), layout, scorer.sums, shard, results, settings.thresholds, attrs, settings.relative_multiples)
    log.info("done in %.1fs", time.time() - t0)


def _layer_spec(text: str) -> tuple[float | int, float | int]:
    a, b = (float(x) if "." in x else int(x) for x in text.split(":"))
    return a, b


def cmd_sample_pairs(args) -> None:
    import numpy as np
    import xarray as xr
    from transformers import AutoTokenizer

    from actpat.pairs import load_pairs
    from actpat.samples import SampleSet, prefix_tokens
    from actpat.store import write_samples

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    pairs = load_pairs(spec)
    prefix = prefix_tokens(tokenizer)
    room = args.max_tokens - len(prefix)
    full = tokenizer(pairs.texts, add_special_tokens=False)["input_ids"]
    encoded = [prefix + ids[:room] for ids in full]
    truncated = sum(len(ids) > room for ids in full)
    width = max(len(e) for e in encoded)
    tokens = np.full((len(encoded), width), -1, dtype=np.int32)
    for i, e in enumerate(encoded):
        tokens[i, : len(e)] = e
    name = f"pairs-{args.name}"
    sample_set = SampleSet(name, tokens, pairs.text_ids, [0] * len(encoded),
                           stats={"n_texts": len(encoded), "n_pairs": int(len(pairs.score)), "n_truncated": int(truncated)})
    extra = {
        "length": xr.DataArray(np.asarray([len(e) for e in encoded], dtype=np.int64), dims="sample"),
        "text": xr.DataArray(np.asarray(pairs.texts, dtype=object), dims="sample"),
        "pair_first": xr.DataArray(pairs.first.astype(np.int64), dims="pair"),
        "pair_second": xr.DataArray(pairs.second.astype(np.int64), dims="pair"),
        "human_score": xr.DataArray(pairs.score.astype(np.float64), dims="pair"),
    }
    write_samples(Path(args.out), sample_set, {"domain": name, "source": spec.get("name", spec.get("path")),
                  "source_spec": json.dumps(spec, sort_keys=True), "seed": args.seed, "seq_len": args.max_tokens,
                  "code_version": code_version()}, extra)
    log.info("%s: %d distinct texts (%d truncated to %d tokens), %d pairs", name, len(encoded), truncated,
             args.max_tokens, len(pairs.score))


def cmd_pairs_report(args) -> None:
    from actpat.pairs_report import write_pairs_report

    write_pairs_report(Path(args.texts), [Path(p) for p in args.stores], Path(args.out_dir), args.bootstrap, args.seed, log.info)


def cmd_density(args) -> None:
    from actpat.reduce import density
    from actpat.store import write_dataset

    t0 = time.time()
    ds = density([Path(p) for p in args.stores], args.mass_shares)
    write_dataset(ds, Path(args.out))
    table = ds[["active_abs_share"]].to_dataframe().reset_index()
    log.info("%s: density of %d samples from %d shards in %.1fs -> %s", ds.attrs["domain"], ds.attrs["n_samples"],
             ds.attrs["n_shards"], time.time() - t0, args.out)
    log.info("activated share (mean |s| > threshold) by layer:\n%s", table.pivot(index="layer", columns="threshold").round(4).to_string())


def cmd_similarity(args) -> None:
    from actpat.reduce import similarity
    from actpat.store import write_dataset

    groups: dict[str, list[Path]] = {}
    for p in args.stores:
        groups.setdefault(Path(p).parent.name, []).append(Path(p))
    t0 = time.time()
    ds = similarity(groups)
    write_dataset(ds, Path(args.out))
    log.info("LLMDcos for %d samples of %d domains x %d layers in %.1fs", ds.sizes["sample_a"], len(groups),
             ds.sizes["layer"], time.time() - t0)


def cmd_findings(args) -> None:
    from actpat.findings import write_findings

    write_findings(
        densities=[Path(p) for p in args.density], similarity=Path(args.similarity),
        samples=[Path(p) for p in args.samples], out_dir=Path(args.out_dir),
        threshold=args.threshold, multiple=args.multiple, shallow=_layer_spec(args.shallow), deep=_layer_spec(args.deep),
        n_boot=args.bootstrap, seed=args.seed, log=log.info,
    )


def cmd_pruning_text(args) -> None:
    """Calibration windows (from a domain's scoring documents) or evaluation windows (from its
    held-out documents, or from every document of an evaluation-only set)."""
    from transformers import AutoTokenizer

    from actpat.evaluate import EvaluationError, eval_windows
    from actpat.samples import make_samples
    from actpat.sources import describe, load_documents
    from actpat.store import open_samples, write_samples

    spec = json.loads(args.spec)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    docs = load_documents(spec)
    attrs = {"domain": args.name, "source": describe(spec), "source_spec": json.dumps(spec, sort_keys=True),
             "seed": args.seed, "seq_len": args.seq_len, "purpose": args.kind, "code_version": code_version()}
    if args.kind == "calibration":
        windows = make_samples(args.name, docs, tokenizer, args.seq_len, args.n, args.seed, args.holdout_fraction,
                               pack=spec.get("pack", False), log=log.info)
        windows.holdout_doc_ids = []
    else:
        if args.samples:  # a scored domain: only the documents its samples store set aside
            held = set(open_samples(Path(args.samples))["holdout_doc_id"].values.tolist())
            docs = [d for d in docs if d.id in held]
            if {d.id for d in docs} != held:
                raise EvaluationError(f"{args.samples}: its held-out documents are no longer all in {describe(spec)}")
        windows = eval_windows(args.name, docs, tokenizer, args.seq_len, args.n, log=log.info)
        attrs["held_out_only"] = bool(args.samples)
    write_samples(Path(args.out), windows, attrs)


def cmd_prune(args) -> None:
    import numpy as np
    import torch

    from actpat.models import load_checkpoint, weight_layout
    from actpat.pruning import PruneSettings, density_ratios, prune_model
    from actpat.reduce import activated_counts
    from actpat.store import open_reduction, open_samples, write_json

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    t0 = time.time()
    model, tokenizer, prov = load_checkpoint(Path(args.model_dir), "float32", device)
    layout = weight_layout(model)
    bounds = tuple(args.bounds)
    report = {"model": args.model_name, "method": args.method, "structure": args.structure, "target_sparsity": args.sparsity,
              "checkpoint_sha256": prov["checkpoint_sha256"], "code_version": code_version(), "device": device}
    ratios = None
    if args.method in ("wanda-density", "wanda-density-rel"):
        measure = "abs" if args.method == "wanda-density" else "rel"
        density = open_reduction(Path(args.density))
        counts = activated_counts(density, measure, args.density_threshold if measure == "abs" else args.density_multiple)
        dattrs = density.attrs
        info = density_ratios(counts, args.sparsity, args.alpha, args.beta, bounds)
        ratios = info.ratios
        report["density"] = {"store": args.density, "domain": dattrs["domain"], "measure": measure,
                             "threshold": args.density_threshold if measure == "abs" else None,
                             "multiple": args.density_multiple if measure == "rel" else None,
                             "n_samples": dattrs["n_samples"], "counts": counts, "alpha": args.alpha, "beta": args.beta,
                             "raw_ratios": info.raw, "clipped_layers": info.clipped, "clip_shift": info.shift}
        if info.clipped:
            log.warning("layers %s fell outside %s and were clipped (mean restored by a shift of %.4f)", info.clipped, bounds, info.shift)
    calibration = None
    if args.calibration:
        cal = open_samples(Path(args.calibration))
        calibration = torch.as_tensor(cal["token_ids"].values.astype(np.int64))
        report["calibration"] = {"store": args.calibration, "domain": cal.attrs["domain"], "windows": int(calibration.shape[0]),
                                 "seq_len": int(calibration.shape[1]), "seed": cal.attrs["seed"],
                                 "sample_ids": cal["sample"].values.tolist()}
    settings = PruneSettings(args.method, args.sparsity, args.structure, ratios, args.owl_lambda, args.owl_m, bounds)
    log.info("pruning %s: %s %s to %.3f on %s, %d layers%s", args.model_name, args.method, args.structure, args.sparsity, device,
             layout.n_layers, f", {len(calibration)} calibration windows of {calibration.shape[1]} tokens" if calibration is not None else "")
    from tqdm import tqdm

    bar = tqdm(total=layout.n_layers, desc="pruning", unit="layer", file=sys.stderr, mininterval=5, ascii=True)
    result = prune_model(model, layout, settings, calibration, progress=lambda i: bar.update(1))
    bar.close()
    report.update({"layer_sparsity_target": result.ratios, "layer_sparsity_actual": result.actual,
                   "layer_zero_share": result.zeros_after, "overall_sparsity": float(np.mean(result.actual)),
                   "seconds": time.time() - t0})
    if result.outlier_share is not None:
        report["owl"] = {"lambda": args.owl_lambda, "M": args.owl_m, "outlier_share": result.outlier_share}
    if device == "cuda":
        report["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    log.info("overall sparsity %.4f; per layer %s..%s", report["overall_sparsity"], np.round(result.actual.min(), 4), np.round(result.actual.max(), 4))
    out = Path(args.out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "actpat_provenance.json").write_text(json.dumps({**prov, "pruning": {k: report[k] for k in ("method", "structure", "target_sparsity")}}, indent=2))
    write_json(report, Path(args.report))
    log.info("done in %.1fs -> %s", time.time() - t0, args.report)


def cmd_perplexity(args) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from actpat.evaluate import bootstrap_perplexity, perplexity, window_nll
    from actpat.models import load_checkpoint
    from actpat.store import open_samples, write_json

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    t0 = time.time()
    model, _, prov = load_checkpoint(Path(args.model_dir), "float32", device)
    out = {"model_dir": args.model_dir, "pruning": prov.get("pruning"), "code_version": code_version(), "device": device, "sets": {}}
    for spec in args.sets:
        name, path = spec.split("=", 1)
        windows = open_samples(Path(path))
        tokens = windows["token_ids"].values
        bar = tqdm(total=len(tokens), desc=f"perplexity {name}", unit="window", file=sys.stderr, mininterval=5, ascii=True)
        nll, count = window_nll(model, tokens, device, progress=lambda j: bar.update(1))
        bar.close()
        ppl = perplexity(nll, count)
        ci = bootstrap_perplexity(nll, count, args.bootstrap, args.seed)
        out["sets"][name] = {"perplexity": ppl, "ci95": ci, "seq_len": int(tokens.shape[1]), "n_windows": int(len(tokens)),
                             "tokens_predicted": int(count.sum()), "window_nll": nll, "window_tokens": count,
                             "source": windows.attrs["source"], "held_out_only": windows.attrs.get("held_out_only"),
                             "window_ids": windows["sample"].values.tolist()}
        log.info("%s: perplexity %.3f [%.3f, %.3f] over %d windows of %d tokens", name, ppl, *ci, len(tokens), tokens.shape[1])
    out["seconds"] = time.time() - t0
    write_json(out, Path(args.out))


def cmd_pruning_report(args) -> None:
    from actpat.pruning_report import write_pruning_report

    write_pruning_report([Path(p) for p in args.v1_runs], [Path(p) for p in args.v2_runs], Path(args.dense),
                         Path(args.out_dir), general=args.general,
                         v2_sparsity=args.v2_sparsity, v2_method=args.v2_method, n_boot=args.bootstrap, seed=args.seed,
                         log=log.info)


def cmd_summary(args) -> None:
    from actpat.summary import write_summary

    text = write_summary(Path(args.findings) if args.findings else None, [Path(p) for p in args.pairs],
                         Path(args.pruning) if args.pruning else None, Path(args.out), json.loads(args.settings))
    log.info("wrote %s:\n%s", args.out, text)


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Where a model-running job runs and with how many torch threads."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=int(os.environ.get("ACTPAT_THREADS", "2")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actpat", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare-model", help="make a plain local checkpoint from any model source")
    p.add_argument("--source", required=True, help="'smollm2', a .gguf path, a HF model id or a local directory")
    p.add_argument("--revision", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_prepare_model)

    p = sub.add_parser("sample-domain", help="draw a domain's token windows")
    p.add_argument("--domain", required=True)
    p.add_argument("--spec", required=True, help="the domain's source spec as JSON")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sample_domain)

    p = sub.add_parser("score-shard", help="score one shard of a domain's samples into a Zarr store")
    p.add_argument("--samples", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shard-size", type=int, default=0)
    p.add_argument("--n-shards", type=int, default=0, help="split into this many shards instead of --shard-size")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--model-name", required=True)
    p.add_argument("--target", default="max_logit")
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--thresholds", type=float, nargs="+", default=[2e-5, 2e-6])
    p.add_argument("--relative-multiples", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--sketch-size", type=int, default=32768)
    p.add_argument("--sketch-seed", type=int, default=0)
    _add_runtime_args(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_score_shard)

    p = sub.add_parser("sample-pairs", help="validation 3: tokenize a pair set's distinct texts")
    p.add_argument("--name", required=True)
    p.add_argument("--spec", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sample_pairs)

    p = sub.add_parser("pairs-report", help="validation 3: LLMDcos per layer against human scores")
    p.add_argument("--texts", required=True)
    p.add_argument("--stores", nargs="+", required=True)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_pairs_report)

    p = sub.add_parser("density", help="finding 1: activated weights per layer of one domain")
    p.add_argument("--stores", nargs="+", required=True, help="the domain's shard stores")
    p.add_argument("--mass-shares", type=float, nargs="+", default=[0.5, 0.9])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_density)

    p = sub.add_parser("similarity", help="finding 2: LLMDcos between all samples of all domains")
    p.add_argument("--stores", nargs="+", required=True, help="score stores (results/<model>/scores/<domain>/shard-*.zarr)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("findings", help="findings 1-3: statistics, tables and figures")
    p.add_argument("--density", nargs="+", required=True)
    p.add_argument("--similarity", required=True)
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--threshold", type=float, default=2e-6)
    p.add_argument("--multiple", type=float, default=1.0)
    p.add_argument("--shallow", default="0.0:0.5", help="layer range start:stop (fractions or indices)")
    p.add_argument("--deep", default="0.5:-2")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser("pruning-text", help="validations 1-2: calibration or evaluation windows of a domain")
    p.add_argument("--kind", required=True, choices=["calibration", "evaluation"])
    p.add_argument("--name", required=True)
    p.add_argument("--spec", required=True, help="the text source spec as JSON")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--samples", default=None, help="evaluation: the domain's samples store (its held-out document ids)")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--n", type=int, required=True, help="windows (evaluation: at most)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_pruning_text)

    p = sub.add_parser("prune", help="validations 1-2: prune the scored matrices of a model")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--model-name", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--structure", default="unstructured")
    p.add_argument("--sparsity", type=float, required=True)
    p.add_argument("--calibration", default=None, help="calibration windows store")
    p.add_argument("--density", default=None, help="density store of the domain that sets the layer-wise sparsities")
    p.add_argument("--density-threshold", type=float, default=2e-5)
    p.add_argument("--density-multiple", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=2.0)
    p.add_argument("--beta", type=float, default=0.2)
    p.add_argument("--owl-lambda", type=float, default=0.08)
    p.add_argument("--owl-m", type=float, default=5.0)
    p.add_argument("--bounds", type=float, nargs=2, default=[0.0, 0.99])
    _add_runtime_args(p)
    p.add_argument("--out-dir", required=True, help="the pruned checkpoint")
    p.add_argument("--report", required=True, help="JSON with per-layer target and actual sparsities")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("perplexity", help="validations 1-2: perplexity of a checkpoint on evaluation windows")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--sets", nargs="+", required=True, help="NAME=evaluation-windows-store")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    _add_runtime_args(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("pruning-report", help="validations 1-2: tables and figures")
    p.add_argument("--v1-runs", nargs="+", required=True, help="run directories (pruning.json + perplexity.json)")
    p.add_argument("--v2-runs", nargs="*", default=[], help="validation 2's run directories")
    p.add_argument("--dense", required=True, help="perplexity.json of the dense model")
    p.add_argument("--general", required=True, help="evaluation set of validation 1")
    p.add_argument("--v2-sparsity", type=float, default=0.5)
    p.add_argument("--v2-method", default="wanda-density")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_pruning_report)

    p = sub.add_parser("summary", help="SUMMARY.md: every finding and validation against the paper")
    p.add_argument("--findings", default=None)
    p.add_argument("--pairs", nargs="*", default=[])
    p.add_argument("--pruning", default=None)
    p.add_argument("--settings", default="{}", help="JSON: model, model_source, samples_per_domain, seq_len, pruning_note")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_summary)
    return parser


# what to lower when a job runs out of memory (the rule's memory also grows with each retry)
OOM_HINTS = {
    "score-shard": "lower samples.seq_len, use scoring.compute_dtype: bfloat16, lower scoring.sketch_size, or raise "
                   "resources.score_mem_mb (samples.shard_size only shortens the job: samples are scored one at a time)",
    "prune": "lower pruning.calibration.windows or pruning.calibration.seq_len, or raise pruning.mem_mb",
    "perplexity": "lower pruning.evaluation.seq_len, or raise pruning.mem_mb",
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
