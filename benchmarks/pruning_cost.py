"""Time and peak memory of calibration + pruning + evaluation (validations 1-2).

Each configuration runs the workflow's own commands (``python -m actpat prune``, which writes the
mask, then ``python -m actpat perplexity`` on the dense checkpoint with the mask) in a fresh
process, so its peak RSS is its own:
  * every method at one sparsity with the default calibration (16 windows of 256 tokens); the
    evaluation includes the last-word accuracy of the config's ``pruning.evaluation.accuracy``;
  * Wanda with 4, 16, 64 calibration windows: peak memory should grow only by the layer inputs
    kept for all windows (n x seq_len x hidden x 4 bytes, twice: inputs and outputs).

Needs a prepared checkpoint and a density store (run the default workflow first, or any config):

  python benchmarks/pruning_cost.py --model-dir resources/models/smollm2-135m \
      --density results/smollm2-135m/density/encyclopedic.zarr --domain encyclopedic
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "HF_HUB_OFFLINE": "1"}
sys.path.insert(0, str(ROOT / "workflow"))


def run(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS of the child in MiB)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], env=ENV, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    peak_kib = int(proc.stdout.strip().splitlines()[-1])
    return time.time() - t0, peak_kib / 1024


# runs one actpat command and prints its own peak RSS (KiB) last
_CHILD = """
import resource, sys
from actpat.cli import main
rc = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="resources/models/smollm2-135m")
    ap.add_argument("--density", default="results/smollm2-135m/density/encyclopedic.zarr")
    ap.add_argument("--domain", default="encyclopedic")
    ap.add_argument("--config", default=str(ROOT / "config.yaml"), help="settings of the domain, ratios and OWL")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/actpat-pruning-bench")
    ap.add_argument("--scaling-only", action="store_true", help="only Wanda with 4, 16 and 64 calibration windows")
    ap.add_argument("--sparsity", type=float, default=0.5, help="target sparsity of the unstructured runs")
    ap.add_argument("--methods", nargs="+", help="only these methods with the default calibration (no N:M, no scaling)")
    args = ap.parse_args()
    import dataclasses

    import yaml

    from actpat.settings import PruningRun, load_settings
    from actpat.settings_json import encode

    S = load_settings(yaml.safe_load(Path(args.config).read_text()))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    def text(kind: str, n: int) -> Path:
        out = work / f"{kind}-{n}.zarr"
        if not out.exists():
            job = dataclasses.replace(S.window_job(kind, args.domain), n=n, seq_len=args.seq_len)
            run(["pruning-text", "--settings", encode(job), "--model-dir", args.model_dir, "--out", str(out)])
        return out

    evalset = text("evaluation", args.eval_windows)
    rows = []

    def configuration(method: str, n_cal: int, structure: str = "unstructured", sparsity: float | None = None) -> None:
        sparsity = args.sparsity if sparsity is None else sparsity
        tag = f"{method}-{structure.replace(':', 'of')}-{n_cal}-{sparsity:g}"
        from actpat.methods import METHODS

        job = S.prune_job(PruningRun(method, structure, sparsity, args.domain if METHODS[method].calibrated else None))
        prune = ["prune", "--settings", encode(job), "--model-dir", args.model_dir, "--model", "bench", "--threads",
                 str(args.threads), "--device", "cpu", "--mask", str(work / tag / "mask.zarr"),
                 "--report", str(work / tag / "pruning.json")]
        if S.method(job.run).calibrated:
            prune += ["--calibration", str(text("calibration", n_cal))]
        if S.method(job.run).uses_density:
            prune += ["--density", args.density]
        t_prune, m_prune = run(prune)
        t_eval, m_eval = run(["perplexity", "--settings", encode(S.evaluate_job()), "--model-dir", args.model_dir,
                              "--model", "bench", "--mask", str(work / tag / "mask.zarr"), "--run", job.run.key,
                              "--windows", str(evalset), "--set", args.domain, "--threads", str(args.threads), "--device", "cpu",
                              "--out", str(work / tag / "perplexity.json")])
        result = json.loads((work / tag / "perplexity.json").read_text())
        ppl, acc = result["perplexity"], (result["accuracy"] or {}).get("value")
        rows.append((method, structure, n_cal, t_prune, m_prune, t_eval, m_eval, ppl, acc))
        print(f"{method:18s} {structure:12s} {n_cal:5d} {t_prune:9.1f} {m_prune:9.0f} {t_eval:9.1f} {m_eval:9.0f} {ppl:9.2f} "
              f"{acc if acc is not None else float('nan'):9.3f}", flush=True)

    print(f"SmolLM2 checkpoint {args.model_dir}, calibration/evaluation windows of {args.seq_len} tokens, "
          f"{args.eval_windows} evaluation windows, {args.threads} threads, CPU")
    print(f"{'method':18s} {'structure':12s} {'calib':>5s} {'prune_s':>9s} {'prune_MiB':>9s} {'eval_s':>9s} {'eval_MiB':>9s} {'ppl':>9s} {'accuracy':>9s}")
    if args.methods:
        for method in args.methods:
            configuration(method, 16)
        return
    if not args.scaling_only:
        for method in ("magnitude", "wanda", "wanda-density", "wanda-density-rel", "wanda-owl", "wanda-alpha", "wanda-dlp",
                       "sparsegpt", "sparsegpt-density", "sparsegpt-dlp"):
            configuration(method, 16)
        configuration("wanda", 16, "2:4")
    for n in (4, 64) if not args.scaling_only else (4, 16, 64):
        configuration("wanda", n)
    hidden = 576
    for n in (4, 16, 64):
        print(f"expected growth of held activations at {n} windows: {2 * n * args.seq_len * hidden * 4 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
