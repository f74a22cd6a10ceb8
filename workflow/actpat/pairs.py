"""Validation 3: text pairs with human similarity scores.

A pair set is a list of distinct texts and pairs (i, j, human score). Each distinct text is scored
once (like a domain's sample); the reduction estimates LLMDcos per layer for every pair from the
sketches and correlates it with the human scores.

Sources: packaged (``lee-documents``: 50 news documents with the 50×50 matrix of mean human
similarity ratings, 1,225 pairs; ``wordsim353``; ``simlex999``, all shipped with gensim), local
files (jsonl/tsv/csv with two text fields and a score field), or ``datasets`` (STS-B:
``mteb/stsbenchmark-sts`` or ``SetFit/stsb``; SICK: fields ``sentence_A``, ``sentence_B``,
``relatedness_score``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actpat.errors import ActpatError
from actpat.models import package_dir


class PairsError(ActpatError):
    pass


@dataclass
class PairSet:
    texts: list[str]
    text_ids: list[str]
    first: np.ndarray  # (pair,) index into texts
    second: np.ndarray
    score: np.ndarray  # human score


def _from_rows(rows: list[tuple[str, str, float]], where: str) -> PairSet:
    texts: dict[str, int] = {}
    a, b, s = [], [], []
    for n, (t1, t2, score) in enumerate(rows):
        if score is None or (isinstance(score, float) and np.isnan(score)):
            raise PairsError(f"{where}: pair {n} has no score")
        for t in (t1, t2):
            if not str(t).strip():
                raise PairsError(f"{where}: pair {n} has an empty text")
            texts.setdefault(t, len(texts))
        a.append(texts[t1])
        b.append(texts[t2])
        s.append(float(score))
    if not rows:
        raise PairsError(f"{where}: no pairs")
    ordered = list(texts)
    return PairSet(ordered, [f"t{i:05d}" for i in range(len(ordered))], np.asarray(a), np.asarray(b), np.asarray(s))


def _gensim(name: str) -> Path:
    return package_dir("gensim") / "test" / "test_data" / name


def _lee() -> PairSet:
    # lee.cor is Latin-1 (a pound sign)
    docs = [line.strip() for line in _gensim("lee.cor").read_text(encoding="latin-1").splitlines() if line.strip()]
    sims = np.loadtxt(_gensim("similarities0-1.txt"))
    if sims.shape != (len(docs), len(docs)):
        raise PairsError(f"lee: {len(docs)} documents but a {sims.shape} similarity matrix")
    iu = np.triu_indices(len(docs), 1)
    sym = np.maximum(sims, sims.T)  # the shipped matrix fills the upper triangle
    return PairSet(docs, [f"lee-{i:02d}" for i in range(len(docs))], iu[0], iu[1], sym[iu])


def _word_pairs(name: str) -> PairSet:
    rows = []
    for line in _gensim(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        w1, w2, score = line.split("\t")[:3]
        rows.append((w1, w2, float(score)))
    return _from_rows(rows, name)


PACKAGED = {
    "lee-documents": _lee,
    "wordsim353": lambda: _word_pairs("wordsim353.tsv"),
    "simlex999": lambda: _word_pairs("simlex999.txt"),
}


def _score(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def load_pairs(spec: dict) -> PairSet:
    """The pair set of a config entry; ``limit`` keeps the first N pairs (and their texts)."""
    pairs = _load(spec)
    if spec.get("limit") and spec["limit"] < len(pairs.score):
        n = spec["limit"]
        keep = sorted(set(pairs.first[:n]) | set(pairs.second[:n]))
        new = {old: i for i, old in enumerate(keep)}
        pairs = PairSet([pairs.texts[i] for i in keep], [pairs.text_ids[i] for i in keep],
                        np.asarray([new[i] for i in pairs.first[:n]]), np.asarray([new[i] for i in pairs.second[:n]]),
                        pairs.score[:n])
    return pairs


def _load(spec: dict) -> PairSet:
    kind = spec["source"]
    if kind == "packaged":
        if spec["name"] not in PACKAGED:
            raise PairsError(f"unknown packaged pair set {spec['name']!r}; choose one of {', '.join(PACKAGED)}")
        return PACKAGED[spec["name"]]()
    f1, f2, fs = spec.get("text1", "sentence1"), spec.get("text2", "sentence2"), spec.get("score", "score")
    if kind == "files":
        path = Path(spec["path"])
        if not path.is_file():
            raise PairsError(f"pairs file {path} does not exist")
        if path.suffix in (".jsonl", ".json"):
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            delim = "\t" if path.suffix == ".tsv" else ","
            records = list(csv.DictReader(path.open(encoding="utf-8"), delimiter=delim))
        where = str(path)
    elif kind == "datasets":
        import datasets

        kwargs = {k: spec[k] for k in ("data_files", "revision") if spec.get(k)}
        try:
            records = list(datasets.load_dataset(spec["name"], spec.get("config"), split=spec.get("split", "test"), **kwargs))
        except Exception as exc:
            raise PairsError(f"cannot load dataset {spec['name']!r}: {str(exc).splitlines()[0]}") from exc
        where = spec["name"]
    else:
        raise PairsError(f"unknown pairs source {kind!r}; choose packaged, files or datasets")
    if records:
        missing = [f for f in (f1, f2, fs) if f not in records[0]]
        if missing:
            raise PairsError(f"{where}: records have no field(s) {missing} (fields: {', '.join(records[0])})")
    return _from_rows([(r[f1], r[f2], _score(r[fs])) for r in records], where)


# ----------------------------------------------------------------------------------------------
# Statistics


def pair_llmdcos(sketch: np.ndarray, norms: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(layer, pair) LLMDcos estimates: sketch (text, layer, k), norms (text, layer)."""
    dot = np.einsum("plk,plk->lp", sketch[first].astype(np.float64), sketch[second].astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(dot / (norms[first] * norms[second]).T, 0.0, 1.0)


def cosine_rows(x: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine between rows first[p] and second[p] of x (text, ..., dim) -> (..., pair)."""
    a, b = x[first].astype(np.float64), x[second].astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.moveaxis(num / den, 0, -1)


def bag_of_tokens(token_ids: list[list[int]], first, second) -> np.ndarray:
    vocab = 1 + max(max(t) for t in token_ids if t)
    counts = np.zeros((len(token_ids), vocab))
    for i, t in enumerate(token_ids):
        np.add.at(counts[i], t, 1)
    return cosine_rows(counts, first, second)


def spearman_with_ci(x: np.ndarray, human: np.ndarray, n_boot: int, rng) -> dict:
    import warnings

    from scipy.stats import spearmanr

    n = len(human)
    boots = []
    with warnings.catch_warnings():  # a resample with constant values has no correlation: nan
        warnings.simplefilter("ignore")
        res = spearmanr(x, human)
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            boots.append(spearmanr(x[idx], human[idx]).statistic)
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return {"rho": float(res.statistic), "p_value": float(res.pvalue), "ci95": [float(lo), float(hi)], "n_pairs": int(n)}


def layer_ranges(n_layers: int) -> dict[str, tuple[int, int]]:
    """The paper's layer ranges expressed relative to depth, plus its absolute [20, L−2)."""
    out = {
        "[L/2, L-2)": (n_layers // 2, n_layers - 2),
        "[2L/3, L-2)": ((2 * n_layers) // 3, n_layers - 2),
        "[L/3, L-2)": (n_layers // 3, n_layers - 2),
        "[0, L)": (0, n_layers),
    }
    if n_layers > 22:
        out["[20, L-2) (paper)"] = (20, n_layers - 2)
    return out
