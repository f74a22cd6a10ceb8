"""Reductions of the score stores with xarray: density (finding 1), similarity (finding 2) and
relevance (finding 3).

All reductions read the stores lazily and combine any number of shards exactly: per-weight means
are the sum of the shards' sums over the total sample count; per-sample quantities are concatenated.
The density reduction holds one matrix of one layer (summed over shards) in memory at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from actpat.errors import ReductionError, StoreError
from actpat.provenance import CARRIED_BY_DENSITY, CARRIED_BY_SIMILARITY
from actpat.sketch import llmdcos
from actpat.store import check_compatible, open_samples, open_scores, sample_tokens

# log10 histogram of mean scores, for the mass-share density (streamed one matrix at a time)
HIST_LO, HIST_HI, HIST_PER_DECADE = -16.0, 4.0, 256


def open_domain(paths: list[Path]) -> list[xr.Dataset]:
    """The shard stores of one domain, checked to belong together."""
    return check_domain({str(p): open_scores(p) for p in paths})


def check_domain(stores: dict[str, xr.Dataset]) -> list[xr.Dataset]:
    """Opened shard stores of one domain, checked to belong together (same provenance, matrices and
    domain; no sample twice)."""
    if not stores:
        raise ReductionError("no score stores given")
    check_compatible(stores)
    from actpat.sketch import HASH_VERSION

    ref_path, ref = next(iter(stores.items()))
    seen: set[str] = set()
    for path, ds in stores.items():
        if ds.attrs.get("sketch_hash_version") != HASH_VERSION:
            raise StoreError(f"{path}: its sketches use hash version {ds.attrs.get('sketch_hash_version')}, this code "
                             f"version {HASH_VERSION}; rescore it (delete the store and rerun the job that wrote it)")
        if ds.attrs["shapes"] != ref.attrs["shapes"] or ds.attrs["matrices"] != ref.attrs["matrices"]:
            raise StoreError(f"{path}: weight matrices {ds.attrs['matrices']} {ds.attrs['shapes']} differ from {ref_path}")
        if ds.attrs["domain"] != ref.attrs["domain"]:
            raise StoreError(f"{path}: domain {ds.attrs['domain']!r} differs from {ref_path} ({ref.attrs['domain']!r})")
        dup = seen & set(ds["sample"].values)
        if dup:
            raise StoreError(f"{path}: samples {sorted(dup)[:3]} also appear in another shard of the domain")
        seen |= set(ds["sample"].values)
    return list(stores.values())


def per_sample(stores: list[xr.Dataset], names: list[str]) -> xr.Dataset:
    return xr.concat([ds[names].load() for ds in stores], dim="sample")


def sample_norms(stores: list[xr.Dataset]) -> np.ndarray:
    """(sample, layer) exact L2 norm of each sample's layer score vector (all matrices)."""
    return np.concatenate([np.sqrt((ds["l2"].values ** 2).sum(-1)) for ds in stores])


def layer_sketches(stores: list[xr.Dataset], layer: int) -> np.ndarray:
    """(sample, bucket) sketches of one layer of all samples (one layer in memory at a time)."""
    return np.concatenate([ds["sketch"].isel(layer=layer).values for ds in stores])


def _hist_bins() -> int:
    return int((HIST_HI - HIST_LO) * HIST_PER_DECADE)


def _hist(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count, mass) of positive values per log10 bin."""
    v = values[values > 0].astype(np.float64)
    b = np.clip(((np.log10(v) - HIST_LO) * HIST_PER_DECADE).astype(np.int64), 0, _hist_bins() - 1)
    return np.bincount(b, minlength=_hist_bins()), np.bincount(b, weights=v, minlength=_hist_bins())


def mass_share(count: np.ndarray, mass: np.ndarray, n_total: int, q: float) -> float:
    """Smallest share of weights that holds a share q of the total mass, from a histogram
    (largest bins first; linear within the bin where q is reached)."""
    count, mass = count[::-1], mass[::-1]
    total = mass.sum()
    if total <= 0:
        return float("nan")
    cum = np.cumsum(mass)
    k = int(np.searchsorted(cum, q * total))
    before_mass = cum[k - 1] if k else 0.0
    before_count = count[:k].sum()
    frac = (q * total - before_mass) / mass[k] if mass[k] > 0 else 0.0
    return float((before_count + frac * count[k]) / n_total)


def density(paths: list[Path], mass_shares: list[float]) -> xr.Dataset:
    """Activated weights per layer and matrix type, from the exact mean |s| over all samples:

    * ``active_abs (threshold, layer, matrix)``: mean score above each absolute threshold γ of the
      stores (the paper's 2e-5, the authors' code's 2e-6, ...);
    * ``active_rel (multiple, layer, matrix)``: above a multiple of the model-wide mean score
      (the multiples of the stores);
    * ``mass_share (q, layer)``: the smallest share of a layer's weights that holds a share q of
      the layer's total score (scale-free; small = concentrated);
    * ``sample_share_abs (sample, layer, threshold)`` and ``sample_share_rel (sample, layer,
      multiple)``: per sample, the share of a layer's weights whose own score is above γ, or above
      a multiple of the sample's model-wide mean score (for bootstrap intervals over samples).
    """
    stores = open_domain(paths)
    ref = stores[0]
    matrices, shapes = ref.attrs["matrices"], ref.attrs["shapes"]
    n_layers = ref.sizes["layer"]
    thresholds = ref["threshold"].values
    multiples = ref["multiple"].values
    sizes = np.asarray([r * c for r, c in shapes], dtype=np.int64)
    n_samples = sum(ds.sizes["sample"] for ds in stores)
    stats = per_sample(stores, ["l1", "count_above", "count_above_rel"])
    model_mean = float(stats["l1"].sum()) / n_samples / (sizes.sum() * n_layers)

    abs_count = np.zeros((len(thresholds), n_layers, len(matrices)), dtype=np.int64)
    rel_count = np.zeros((len(multiples), n_layers, len(matrices)), dtype=np.int64)
    layer_mean = np.zeros(n_layers)
    shares = np.zeros((len(mass_shares), n_layers))
    for i in range(n_layers):
        h_count = np.zeros(_hist_bins(), dtype=np.int64)
        h_mass = np.zeros(_hist_bins())
        for j, name in enumerate(matrices):
            mean = sum(ds[name].isel(layer=i).values.astype(np.float64) for ds in stores) / n_samples
            abs_count[:, i, j] = [(mean > t).sum() for t in thresholds]
            rel_count[:, i, j] = [(mean > m * model_mean).sum() for m in multiples]
            layer_mean[i] += mean.sum()
            c, m = _hist(mean)
            h_count += c
            h_mass += m
        layer_mean[i] /= sizes.sum()
        shares[:, i] = [mass_share(h_count, h_mass, int(sizes.sum()), q) for q in mass_shares]

    per_layer_size = sizes.sum()
    sample_share = stats["count_above"].sum("matrix").transpose("sample", "layer", "threshold") / per_layer_size
    sample_share_rel = stats["count_above_rel"].sum("matrix").transpose("sample", "layer", "multiple") / per_layer_size
    ds = xr.Dataset(
        {
            "active_abs": (("threshold", "layer", "matrix"), abs_count),
            "active_rel": (("multiple", "layer", "matrix"), rel_count),
            "mass_share": (("q", "layer"), shares),
            "layer_mean_score": ("layer", layer_mean),
            "sample_share_abs": (("sample", "layer", "threshold"), sample_share.values),
            "sample_share_rel": (("sample", "layer", "multiple"), sample_share_rel.values),
        },
        coords={
            "threshold": thresholds,
            "multiple": np.asarray(multiples, dtype=np.float64),
            "q": np.asarray(mass_shares, dtype=np.float64),
            "layer": np.arange(n_layers),
            "matrix": np.asarray(matrices, dtype=object),
            "matrix_size": ("matrix", sizes),
            "sample": stats["sample"].values.astype(object),
        },
        attrs={
            **{k: ref.attrs[k] for k in CARRIED_BY_DENSITY},
            "n_samples": n_samples,
            "n_shards": len(stores),
            "model_mean_score": model_mean,
            "weights_per_layer": int(per_layer_size),
        },
    )
    ds["active_abs_share"] = ds["active_abs"].sum("matrix") / per_layer_size
    ds["active_rel_share"] = ds["active_rel"].sum("matrix") / per_layer_size
    return ds


def activated_counts(ds: xr.Dataset, measure: str, value: float) -> np.ndarray:
    """Activated weights per layer (all matrices) from a density dataset: above the absolute
    threshold ``value`` (``measure='abs'``) or above ``value`` × the model-mean score (``'rel'``)."""
    var, dim = ("active_abs", "threshold") if measure == "abs" else ("active_rel", "multiple")
    if value not in ds[dim].values:
        raise ReductionError(f"density of {ds.attrs.get('domain')!r}: no {dim} {value} (has {ds[dim].values.tolist()})")
    return ds[var].sel({dim: value}).sum("matrix").values


def similarity(paths: list[Path]) -> xr.Dataset:
    """Estimated LLMDcos between every pair of samples of all domains, per layer
    (``gram (layer, sample_a, sample_b)``), with the domain of each sample (from its store)."""
    by_domain: dict[str, dict[str, xr.Dataset]] = {}
    for p in paths:
        ds = open_scores(p)
        by_domain.setdefault(ds.attrs["domain"], {})[str(p)] = ds
    stores, domains = [], []
    for domain, group in by_domain.items():
        for ds in check_domain(group):
            stores.append(ds)
            domains += [domain] * ds.sizes["sample"]
    check_compatible({f"{ds.attrs['domain']}/shard-{ds.attrs['shard']}": ds for ds in stores})
    ref = stores[0]
    n_layers = ref.sizes["layer"]
    ids = np.concatenate([ds["sample"].values for ds in stores]).astype(object)
    docs = np.concatenate([ds["doc_id"].values for ds in stores]).astype(object)
    norms = sample_norms(stores)
    gram = np.zeros((n_layers, len(ids), len(ids)), dtype=np.float32)
    for i in range(n_layers):
        gram[i] = llmdcos(layer_sketches(stores, i), norms[:, i])
    return xr.Dataset(
        {"llmdcos": (("layer", "sample_a", "sample_b"), gram)},
        coords={
            "layer": np.arange(n_layers),
            "sample_a": ids,
            "sample_b": ids,
            "domain_a": ("sample_a", np.asarray(domains, dtype=object)),
            "domain_b": ("sample_b", np.asarray(domains, dtype=object)),
            "doc_a": ("sample_a", docs),
            "doc_b": ("sample_b", docs),
        },
        attrs={
            **{k: ref.attrs[k] for k in CARRIED_BY_SIMILARITY},
            "estimator": "CountSketch inner product / exact norms (actpat.sketch), not clipped",
        },
    )


def valid_pairs(labels: np.ndarray, docs: np.ndarray | None) -> np.ndarray:
    """(n, n) which pairs of samples count as two independent inputs: not a sample with itself,
    and (``docs`` given) not two windows of one document of a domain (those would inflate
    same-domain similarity against the paper's independent prompts)."""
    n = len(labels)
    valid = ~np.eye(n, dtype=bool)
    if docs is not None:
        same_doc = (np.asarray(docs)[:, None] == np.asarray(docs)[None, :]) & (labels[:, None] == labels[None, :])
        valid &= ~same_doc
    return valid


def domain_means(gram: np.ndarray, labels: np.ndarray, domains: list[str], protocol: str,
                 docs: np.ndarray | None = None) -> np.ndarray:
    """(layer, domain, domain) mean LLMDcos from a (layer, n, n) matrix.

    ``all``: every cross-domain pair; within a domain every pair of distinct samples (with
    ``docs``: from distinct documents; NaN for a domain without such a pair).
    ``paper``: sample i of A against sample i of B; within a domain, the first half against the
    second half (i against i + n/2), as the authors paired two independent draws.
    """
    out = np.full((gram.shape[0], len(domains), len(domains)), np.nan)
    idx = {d: np.flatnonzero(labels == d) for d in domains}
    valid = valid_pairs(labels, docs)
    for a, da in enumerate(domains):
        for b, db in enumerate(domains):
            ia, ib = idx[da], idx[db]
            if protocol == "all":
                block = gram[:, ia][:, :, ib]
                if da == db:
                    mask = valid[np.ix_(ia, ia)]
                    if mask.any():
                        out[:, a, b] = block[:, mask].mean(1)
                else:
                    out[:, a, b] = block.mean((1, 2))
            else:
                pa, pb = paper_pairs(ia, ib, same=da == db)
                out[:, a, b] = gram[:, pa, pb].mean(1)
    return out


def paper_pairs(ia: np.ndarray, ib: np.ndarray, same: bool) -> tuple[np.ndarray, np.ndarray]:
    if same:
        h = len(ia) // 2
        return ia[:h], ia[h : 2 * h]
    n = min(len(ia), len(ib))
    return ia[:n], ib[:n]


def token_relevance(samples_paths: dict[str, Path]) -> tuple[list[str], np.ndarray]:
    """Relevance of two domains from their own text: 1 − Jensen–Shannon distance (base 2) of
    their token unigram distributions over the scored samples (their real tokens, no padding)."""
    from scipy.spatial.distance import jensenshannon

    counts = {}
    for d, p in samples_paths.items():
        counts[d] = np.bincount(np.concatenate(sample_tokens(open_samples(p))))
    width = max(len(c) for c in counts.values())
    domains = list(counts)
    probs = [np.pad(counts[d], (0, width - len(counts[d]))).astype(np.float64) for d in domains]
    rel = np.ones((len(domains), len(domains)))
    for a in range(len(domains)):
        for b in range(a + 1, len(domains)):
            rel[a, b] = rel[b, a] = 1.0 - jensenshannon(probs[a] / probs[a].sum(), probs[b] / probs[b].sum(), base=2)
    return domains, rel


def write_density(job, stores: list[Path], out: Path, log=print) -> None:
    """The density job (``job``: ``actpat.settings.DensityJob``)."""
    import time

    from actpat.store import write_dataset

    t0 = time.time()
    ds = density(stores, list(job.mass_shares))
    write_dataset(ds, out)
    table = ds[["active_abs_share"]].to_dataframe().reset_index()
    log(f"{ds.attrs['domain']}: density of {ds.attrs['n_samples']} samples from {ds.attrs['n_shards']} shards in "
        f"{time.time() - t0:.1f}s -> {out}")
    log("activated share (mean |s| > threshold) by layer:\n"
        + table.pivot(index="layer", columns="threshold").round(4).to_string())


def write_similarity(stores: list[Path], out: Path, log=print) -> None:
    """The similarity job."""
    import time

    from actpat.store import write_dataset

    t0 = time.time()
    ds = similarity(stores)
    write_dataset(ds, out)
    log(f"LLMDcos for {ds.sizes['sample_a']} samples of {len(set(ds['domain_a'].values))} domains x "
        f"{ds.sizes['layer']} layers in {time.time() - t0:.1f}s")
