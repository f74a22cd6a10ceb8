"""A SparseGPT run's mask store and its pruned model: every scored weight in float32 (before) against
the kept weights alone in the checkpoint's dtype (after). Sizes and perplexities, not timings.

Two checkpoints: a prepared one (``--model-dir``: the embedded model, float32 since it is
de-quantized), and ``--random-1p5b``: a random model of Qwen2-1.5B's decoder shape (hidden 1536,
MLP 8960, 12 heads, 2 key-value heads; ``--layers`` of its 28, the store's size per layer scaled to
28 too), saved in bfloat16 with the first checkpoint's tokenizer and prepared as the workflow
prepares a local model (``dtype: bfloat16``). Each is pruned twice as the prune job prunes (float32,
SparseGPT, uniform, ``--sparsity``; ``--windows`` calibration windows from the packaged domain's
scoring documents): before, the kept weights left in float32 and the store as it was written before
(the bits, plus ``<matrix>.weight``: every scored weight in float32, same codec and chunks); after,
rounded once to the checkpoint's dtype (the later layers calibrated on them) and stored alone
(``actpat.store.write_mask``). Perplexity on ``--eval-windows`` windows of the domain's held-out
documents with the bootstrap 95% interval over windows, in each of ``--eval-dtypes``, of the model
as the perplexity job makes it (eager attention on the CPU; before: the dense checkpoint in that
dtype with the float32 weights copied in, as the old reader did; after: ``actpat.masks.apply_mask``).

  python benchmarks/sparsegpt_store.py --model-dir resources/models/smollm2-135m [--random-1p5b [--random-only] --layers 2]
      [--sparsity 0.5] [--domain enwiki-excerpt] [--windows 16 --eval-windows 32 --seq-len 256]
      [--eval-dtypes float32 bfloat16] [--threads 2] [--workdir /tmp/actpat-sparsegpt-store]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_before(path: Path, layout, pruned) -> None:
    """The float32 ``<matrix>.weight`` arrays the mask store held before (what ``write_mask`` wrote
    beside the bits: same codec, chunks of ``_row_chunk`` rows)."""
    import zarr

    from actpat.store import _compressor, _row_chunk

    group = zarr.open_group(path, mode="w", zarr_format=3)
    for j, (name, (rows, cols)) in enumerate(zip(layout.matrices, layout.shapes)):
        w = group.create_array(f"{name}.weight", shape=(layout.n_layers, rows, cols), chunks=(1, _row_chunk(rows, cols), cols),
                               dtype="float32", fill_value=0.0, compressors=_compressor(),
                               dimension_names=["layer", f"{name}.row", f"{name}.col"])
        for i in range(layout.n_layers):
            w[i] = pruned[i][j].detach().float().numpy()


def random_checkpoint(work: Path, tokenizer_dir: Path, layers: int) -> Path:
    """A random model of Qwen2-1.5B's decoder shape, saved in bfloat16 and prepared like a local model."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from actpat.models import ModelSource, prepare_checkpoint

    out = work / f"random-1p5b-{layers}"
    if (out / "actpat_provenance.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers,
                         num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    src = work / f"random-1p5b-{layers}-src"
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(src)
    tokenizer.save_pretrained(src)
    prepare_checkpoint(ModelSource.parse(str(src)), out, "bfloat16")
    shutil.rmtree(src)
    return out


def windows(domain: str, tokenizer, seq_len: int, n_calibration: int, n_eval: int):
    """Calibration windows from the domain's scoring documents, evaluation windows from its held-out ones."""
    from actpat.samples import eval_windows, is_held_out
    from actpat.sources import PACKAGED

    docs = list(PACKAGED[domain][0]())
    quiet = lambda m: None  # noqa: E731
    held = [d for d in docs if is_held_out(d.id, 0.2)]
    scoring = [d for d in docs if not is_held_out(d.id, 0.2)]
    calibration = eval_windows(domain, scoring, tokenizer, seq_len, n_calibration, log=quiet).token_ids
    evaluation = eval_windows(domain, held, tokenizer, seq_len, n_eval, log=quiet).token_ids
    return torch.as_tensor(calibration.astype(np.int64)), evaluation


def evaluate(model, tokens) -> tuple[float, list[float]]:
    from actpat.evaluate import window_nll
    from actpat.stats import bootstrap_perplexity, perplexity

    model.set_attn_implementation("eager")
    nll, count, _ = window_nll(model, tokens)
    return perplexity(nll, count), bootstrap_perplexity(nll, count, 1000, 0)


def measure(checkpoint: Path, args, scale: float) -> None:
    from actpat.decoder import layer_weights, weight_layout
    from actpat.masks import apply_mask
    from actpat.models import load_checkpoint
    from actpat.pruning import prune_model
    from actpat.store import open_mask, write_mask

    model, tokenizer, provenance = load_checkpoint(checkpoint, "float32")
    layout = weight_layout(model)
    calibration, evaluation = windows(args.domain, tokenizer, args.seq_len, args.windows, args.eval_windows)
    dtype = provenance["dtype"]
    print(f"\n{checkpoint.name}: checkpoint in {dtype}, {layout.n_layers} layers, {layout.weights_per_layer:,} scored "
          f"weights per layer; SparseGPT to {args.sparsity}, {len(calibration)} calibration windows and "
          f"{len(evaluation)} evaluation windows of {args.seq_len} tokens ({args.domain})", flush=True)
    runs = {}
    for label, precision in (("before", None), ("after", dtype)):
        model, _, _ = load_checkpoint(checkpoint, "float32")
        result = prune_model(model, layout, "sparsegpt", args.sparsity, calibration=calibration, precision=precision)
        store = args.workdir / f"{checkpoint.name}-{label}.zarr"
        write_mask(store, layout, result.masks, {"overall_sparsity": float(np.mean(result.actual))},
                   kept=result.kept if precision else None)
        nbytes = size(store)
        if not precision:
            write_before(args.workdir / f"{checkpoint.name}-before-weights.zarr", layout, layer_weights(model, layout))
            nbytes += size(args.workdir / f"{checkpoint.name}-before-weights.zarr")
        pruned = None if precision else [[w.detach().clone() for w in layer] for layer in layer_weights(model, layout)]
        runs[label] = (store, pruned, nbytes)
        del model
    print(f"{'store':<8} {'MB':>10} {'MB at 28 layers' if scale != 1 else '':>16}")
    for label, (_, _, nbytes) in runs.items():
        print(f"{label:<8} {nbytes / 1e6:>10.1f} {nbytes * scale / 1e6 if scale != 1 else '':>16}", flush=True)
    print(f"{'eval dtype':<11} {'model':<7} {'perplexity':>11} {'95% interval':>22}")
    for eval_dtype in args.eval_dtypes:
        for label, (store, pruned, _) in runs.items():
            model, _, _ = load_checkpoint(checkpoint, eval_dtype)
            if label == "before":
                with torch.no_grad():
                    for layer, values in zip(layer_weights(model, layout), pruned):
                        for w, v in zip(layer, values):
                            w.copy_(v.to(w.dtype))
            else:
                apply_mask(model, layout, open_mask(store))
            ppl, (lo, hi) = evaluate(model, evaluation)
            print(f"{eval_dtype:<11} {label:<7} {ppl:>11.4f} {f'[{lo:.4f}, {hi:.4f}]':>22}", flush=True)
            del model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True, help="a prepared checkpoint (and the random model's tokenizer)")
    ap.add_argument("--random-1p5b", action="store_true", help="also a random Qwen2-1.5B-shaped model in bfloat16")
    ap.add_argument("--random-only", action="store_true", help="only the random model")
    ap.add_argument("--layers", type=int, default=28, help="decoder layers of the random model")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--domain", default="enwiki-excerpt", help="packaged domain of the calibration and evaluation text")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/actpat-sparsegpt-store"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.random_only:
        measure(args.model_dir, args, 1.0)
    if args.random_1p5b or args.random_only:
        measure(random_checkpoint(args.workdir, args.model_dir, args.layers), args, 28 / args.layers)


if __name__ == "__main__":
    main()
