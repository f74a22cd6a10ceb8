"""Start-up of a perplexity job on this machine: from its command to its model ready (the pruning
run's mask applied), forked by a local fork server and plain.

For the checkout ``--code`` (default: this one) it starts the fork servers as the Snakefile does
(``actpat.forkserver.start``, the rules' shell prefix, Snakemake's thread variables), then runs the
perplexity job as the rule runs it (``python -m actpat perplexity --mask ...``) ``--runs`` times
forked and once plain. A job's start-up is the time from its command to the log line that says its
model is ready (``applied <mask>``; with ``--mask none``, the start's header line), read off the
log's timestamps; the job is stopped there (its perplexity is not the point). The first forked run
includes the server's imports (and, where the server holds checkpoints, its loading them); the
later ones are what the jobs of a run see. Run it on two checkouts (before and after a change)
with the same files: a mask store both can read (a Wanda run's), the evaluation windows.

  python benchmarks/job_startup.py --code /path/to/checkout --model-dir resources/models/smollm2-135m \\
      --mask results/smollm2-135m/pruning/runs/encyclopedic/wanda/unstructured/0.5/mask.zarr \\
      --windows results/smollm2-135m/pruning/text/eval/encyclopedic.zarr [--runs 5] [--threads 2]
      [--run encyclopedic/wanda/unstructured/0.5 --set encyclopedic]   (checkouts whose jobs are told their run and set)
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def startup(command: str, env: dict, ready: str) -> float:
    """Seconds from starting ``command`` to its first log line containing ``ready``; the job is
    stopped then."""
    t0 = time.time()
    proc = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if ready in line:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                return stamp - t0
        raise SystemExit(f"the job ended before its model was ready:\n{''.join(seen[-20:])}")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent, help="the checkout to run")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--mask", required=True, help="a pruning run's mask store, or none (the dense model)")
    ap.add_argument("--windows", type=Path, required=True, help="the evaluation windows store")
    ap.add_argument("--runs", type=int, default=5, help="forked runs (the first includes the server's start)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="the evaluation dtype (pruning.evaluation.dtype)")
    ap.add_argument("--run", help="the pruning run's key, for checkouts whose jobs are told it (e.g. encyclopedic/wanda/unstructured/0.5)")
    ap.add_argument("--set", dest="evalset", help="the evaluation set, for checkouts whose jobs are told it (e.g. encyclopedic)")
    args = ap.parse_args()
    workflow = (args.code / "workflow").resolve()
    sys.path.insert(0, str(workflow))
    from actpat import forkserver
    from actpat.settings import EvaluateJob
    from actpat.settings_json import encode

    prefix = (f"export PYTHONPATH={shlex.quote(str(workflow))}; "
              f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:\"$PATH\"; ")
    mask = [] if args.mask == "none" else ["--mask", str(Path(args.mask).resolve())]
    job = ["perplexity", "--settings", encode(EvaluateJob(args.dtype, 0, 0)), "--model-dir", str(args.model_dir.resolve()),
           *mask, *(["--run", args.run] if args.run else []), "--windows", str(args.windows.resolve()),
           *(["--set", args.evalset] if args.evalset else []), "--device", "cpu", "--threads", str(args.threads),
           "--out", os.devnull]
    command = prefix + "exec python -m actpat " + " ".join(shlex.quote(a) for a in job)
    ready = "applied " if mask else "threads; "
    threads = {var: str(args.threads) for var in forkserver.THREAD_VARIABLES}
    directory = Path(tempfile.mkdtemp(prefix="actpat-fork-"))
    env = {**os.environ, **threads, forkserver.ENV: str(directory)}
    os.environ.update(env)  # the servers start in the jobs' environment
    servers = forkserver.start(directory, [args.threads], prefix, directory / "logs")
    try:
        forked = [startup(command, env, ready) for _ in range(args.runs)]
    finally:
        forkserver.stop(servers, directory)
    plain_env = {k: v for k, v in env.items() if k != forkserver.ENV}
    plain = startup(command, plain_env, ready)
    print(f"{args.code}: perplexity job start-up (command to model ready), {args.threads} threads")
    print(f"  forked, first (server starting): {forked[0]:.2f} s")
    if len(forked) > 1:
        later = sorted(forked[1:])
        print(f"  forked, runs 2-{len(forked)}: median {later[len(later) // 2]:.2f} s (min {later[0]:.2f}, max {later[-1]:.2f})")
    print(f"  plain: {plain:.2f} s")


if __name__ == "__main__":
    main()
