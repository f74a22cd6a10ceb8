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

from actpat.errors import PairsError
from actpat.packages import gensim_data


@dataclass
class PairSet:
    texts: list[str]
    text_ids: list[str]
    first: np.ndarray  # (pair,) index into texts
    second: np.ndarray
    score: np.ndarray  # human score


def _from_rows(rows: list[tuple[str, str, float]], where: str, strict: bool = True) -> PairSet:
    """Distinct texts and their pairs. Refused: a pair without a finite score, an empty text, and
    (``strict``, for the user's own pair files) a text paired with itself and the same pair twice in
    either order (two scores for one question). Packaged benchmarks are used as published:
    WordSim-353 rates tiger–tiger, SimLex-999 rates some pairs in both orders."""
    texts: dict[str, int] = {}
    a, b, s = [], [], []
    seen: dict[frozenset, int] = {}
    for n, (t1, t2, score) in enumerate(rows):
        if score is None or not np.isfinite(score):
            raise PairsError(f"{where}: pair {n} has no score" if score is None or np.isnan(score)
                             else f"{where}: pair {n} has the score {score}, not a finite number")
        for t in (t1, t2):
            if not str(t).strip():
                raise PairsError(f"{where}: pair {n} has an empty text")
        if strict and t1 == t2:
            raise PairsError(f"{where}: pair {n} pairs a text with itself ({str(t1)[:40]!r})")
        key = frozenset((t1, t2))
        if strict and key in seen:
            raise PairsError(f"{where}: pairs {seen[key]} and {n} are the same pair ({str(t1)[:30]!r}, {str(t2)[:30]!r})")
        seen[key] = n
        for t in (t1, t2):
            texts.setdefault(t, len(texts))
        a.append(texts[t1])
        b.append(texts[t2])
        s.append(float(score))
    if not rows:
        raise PairsError(f"{where}: no pairs")
    ordered = list(texts)
    return PairSet(ordered, [f"t{i:05d}" for i in range(len(ordered))], np.asarray(a), np.asarray(b), np.asarray(s))


def _lee() -> PairSet:
    # lee.cor is Latin-1 (a pound sign)
    docs = [line.strip() for line in gensim_data("lee.cor").read_text(encoding="latin-1").splitlines() if line.strip()]
    sims = np.loadtxt(gensim_data("similarities0-1.txt"))
    if sims.shape != (len(docs), len(docs)):
        raise PairsError(f"lee: {len(docs)} documents but a {sims.shape} similarity matrix")
    iu = np.triu_indices(len(docs), 1)
    sym = np.maximum(sims, sims.T)  # the shipped matrix fills the upper triangle
    return PairSet(docs, [f"lee-{i:02d}" for i in range(len(docs))], iu[0], iu[1], sym[iu])


def _word_pairs(name: str) -> PairSet:
    rows = []
    for line in gensim_data(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        w1, w2, score = line.split("\t")[:3]
        rows.append((w1, w2, float(score)))
    return _from_rows(rows, name, strict=False)


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


def _from_records(records: list[dict], spec: dict, where: str) -> PairSet:
    f1, f2, fs = spec.get("text1", "sentence1"), spec.get("text2", "sentence2"), spec.get("score", "score")
    if records:
        missing = [f for f in (f1, f2, fs) if f not in records[0]]
        if missing:
            raise PairsError(f"{where}: records have no field(s) {missing} (fields: {', '.join(records[0])})")
    return _from_rows([(r[f1], r[f2], _score(r[fs])) for r in records], where)


def _packaged(spec: dict) -> PairSet:
    if spec["name"] not in PACKAGED:
        raise PairsError(f"unknown packaged pair set {spec['name']!r}; choose one of {', '.join(PACKAGED)}")
    return PACKAGED[spec["name"]]()


def _files(spec: dict) -> PairSet:
    import io

    from actpat.sources import SourceError, read_text

    path = Path(spec["path"]).expanduser()
    if not path.is_file():
        raise PairsError(f"pairs file {path} does not exist")
    try:
        text = read_text(path, spec.get("encoding", "utf-8"))
    except SourceError as exc:
        raise PairsError(str(exc)) from None
    if path.suffix in (".jsonl", ".json"):
        records = []
        for i, line in enumerate(text.replace("\r\n", "\n").split("\n")):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise PairsError(f"{path}: line {i + 1} is not JSON ({exc})") from None
    else:
        records = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ","))
    return _from_records(records, spec, str(path))


def _datasets(spec: dict) -> PairSet:
    from actpat.sources import load_dataset_split

    return _from_records(list(load_dataset_split(spec, "test", PairsError)), spec, spec["name"])


# the source kinds of a pair set's config entry (the schema's enum equals these keys; tested)
SOURCES = {"packaged": _packaged, "files": _files, "datasets": _datasets}


def _load(spec: dict) -> PairSet:
    if spec["source"] not in SOURCES:
        raise PairsError(f"unknown pairs source {spec['source']!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[spec["source"]](spec)


def write_pair_texts(job, model_dir: Path, out: Path, log=print) -> None:
    """The sample_pairs job (``job``: ``actpat.settings.PairTextsJob``): the pair set's distinct
    texts, tokenized and truncated to ``max_tokens``, with the pair table, as a samples store."""
    import xarray as xr

    from actpat.models import check_window_length, load_tokenizer, prefix_tokens
    from actpat.provenance import code_version
    from actpat.samples import SampleSet, padded
    from actpat.sources import bom_files, checked_content
    from actpat.store import write_samples

    spec, name = job.pairs.spec, job.pairs.domain
    tokenizer, checkpoint = load_tokenizer(model_dir)
    check_window_length(f"pairs.{job.pairs.name}.max_tokens", job.pairs.max_tokens, checkpoint.get("max_positions"))
    files = checked_content(spec)  # the pair file it was planned with
    pairs = load_pairs(spec)
    prefix = prefix_tokens(tokenizer)
    room = job.pairs.max_tokens - len(prefix)
    full = tokenizer(pairs.texts, add_special_tokens=False)["input_ids"]
    encoded = [prefix + ids[:room] for ids in full]
    truncated = sum(len(ids) > room for ids in full)
    tokens, lengths = padded(encoded)
    sample_set = SampleSet(name, tokens, pairs.text_ids, [0] * len(encoded),
                           stats={"n_texts": len(encoded), "n_pairs": int(len(pairs.score)), "n_truncated": int(truncated),
                                  "n_bom_stripped": len(bom_files(spec))},
                           lengths=lengths)
    extra = {
        "text": xr.DataArray(np.asarray(pairs.texts, dtype=object), dims="sample"),
        "pair_first": xr.DataArray(pairs.first.astype(np.int64), dims="pair"),
        "pair_second": xr.DataArray(pairs.second.astype(np.int64), dims="pair"),
        "human_score": xr.DataArray(pairs.score.astype(np.float64), dims="pair"),
    }
    write_samples(Path(out), sample_set, {"domain": name, "source": spec.get("name", spec.get("path")),
                  "source_spec": json.dumps(spec, sort_keys=True), "source_files": json.dumps(files), "seed": job.seed,
                  "seq_len": job.pairs.max_tokens, "code_version": code_version()}, extra)
    log(f"{name}: {len(encoded)} distinct texts ({truncated} truncated to {job.pairs.max_tokens} tokens), "
        f"{len(pairs.score)} pairs")


# ----------------------------------------------------------------------------------------------
# Statistics


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


def layer_ranges(analysis, n_layers: int) -> dict[str, tuple[int, int]]:
    """Validation 3's layer ranges: ``deep`` and ``shallow`` as configured for the findings
    (``analysis.deep_layers``, ``analysis.shallow_layers``; one definition,
    ``actpat.settings.layer_range``), the paper's other relative ranges, and its absolute
    [20, L−2), each where the model is deep enough for it to be non-empty."""
    from actpat.settings import layer_range

    specs = {"deep": analysis.deep_layers, "shallow": analysis.shallow_layers, "[2L/3, L-2)": (2 / 3, -2),
             "[L/3, L-2)": (1 / 3, -2), "[0, L)": (0, n_layers)}
    if n_layers > 22:
        specs["[20, L-2) (paper)"] = (20, -2)
    out = {}
    for name, (a, b) in specs.items():
        try:
            r = layer_range(a, b, n_layers)
        except ValueError:
            if name in ("deep", "shallow"):
                raise
            continue  # the paper's other ranges are shown only where the model is deep enough
        out[name] = (int(r[0]), int(r[-1]) + 1)
    return out
