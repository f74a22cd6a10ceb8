"""The cost of the stores' checksums on the reductions of a finished default run.

For each domain's score stores: the time to read every file of the stores (warm page cache), the
time to read them and compute their CRC-32C (what verification adds on top of reading: every
chunk's codec checksum and the inventory's whole-file checksums are both CRC-32C over the same
bytes, so twice this is the upper bound), against the density job's wall time from the run's own
benchmark file.

  python benchmarks/checksum_cost.py --workdir <directory of a finished default run>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))


def main() -> None:
    from actpat.checksums import crc32c

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    work = Path(args.workdir)
    print(f"{'domain':14s} {'MB':>7s} {'read_s':>7s} {'crc_s':>7s} {'density_s':>9s} {'2xcrc/density':>13s}")
    for domain_dir in sorted((work / "results" / args.model / "scores").iterdir()):
        if domain_dir.name.startswith("pairs-"):
            continue
        files = [f for f in domain_dir.rglob("*") if f.is_file()]
        for f in files:  # warm the page cache, as the density job finds it after scoring
            f.read_bytes()
        t0 = time.perf_counter()
        blobs = [f.read_bytes() for f in files]
        t_read = time.perf_counter() - t0
        size = sum(map(len, blobs))
        t0 = time.perf_counter()
        for b in blobs:
            crc32c(b)
        t_crc = time.perf_counter() - t0
        bench = work / "logs" / args.model / "density" / f"{domain_dir.name}.bench.tsv"
        density = float(bench.read_text().splitlines()[1].split()[0]) if bench.exists() else float("nan")
        print(f"{domain_dir.name:14s} {size / 1e6:7.0f} {t_read:7.2f} {t_crc:7.2f} {density:9.1f} {2 * t_crc / density:13.1%}")


if __name__ == "__main__":
    main()
