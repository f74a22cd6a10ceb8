"""The README's figure from a finished run: finding 1 (share of each layer's weights above the
sample's mean score, per domain) beside validation 2 (calibration x evaluation perplexity).

  python workflow/scripts/readme_figure.py results/smollm2-135m docs/figures/default_run.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from actpat.plots import draw_calibration_matrix  # noqa: E402
from actpat.store import open_reduction  # noqa: E402


def main(results: Path, out: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.1]})
    for path in sorted((results / "density").glob("*.zarr")):
        ds = open_reduction(path)
        share = ds["sample_share_rel"].sel(multiple=1.0).mean("sample")
        a.plot(ds["layer"] + 1, share, marker=".", label=ds.attrs["domain"])
    a.set_xlabel("layer")
    a.set_ylabel("share of weights above the sample's mean score")
    a.set_title("Finding 1: activated share per layer")
    a.legend(fontsize=8, ncol=2)
    matrix = pd.read_csv(results / "pruning" / "validation2.csv", index_col=0)
    im = draw_calibration_matrix(b, matrix)
    b.set_title("Validation 2: perplexity at 50% sparsity")
    fig.colorbar(im, ax=b, label="% vs column mean")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
