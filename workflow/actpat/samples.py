"""From a domain's documents to fixed-length token windows, split into shards.

* Documents are split once into a *scoring* part and a *held-out* part (by a hash of the document
  id, so adding documents does not move the others); held-out documents are never scored and are
  kept for perplexity evaluation.
* Candidate windows are the non-overlapping ``seq_len``-token tiles of each scoring document, or of
  the documents joined into one stream when the source has ``pack: true`` (short texts such as
  clinical definitions or chat turns). Documents shorter than a window are skipped and counted.
* ``n`` windows are drawn without replacement with a generator seeded by (seed, domain name), so a
  domain's samples do not depend on which other domains are configured.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

import numpy as np

from actpat.errors import ActpatError
from actpat.sources import Document


class SamplingError(ActpatError):
    """Not enough text for the requested samples."""


def is_held_out(doc_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little")
    return (h % 1_000_000) < fraction * 1_000_000


@dataclass
class SampleSet:
    domain: str
    token_ids: np.ndarray  # (sample, position) int32
    doc_ids: list[str]
    offsets: list[int]  # token offset of the window in its document
    stats: dict = field(default_factory=dict)
    holdout_doc_ids: list[str] = field(default_factory=list)

    @property
    def sample_ids(self) -> list[str]:
        return [f"{self.domain}:{d}@{o}" for d, o in zip(self.doc_ids, self.offsets)]


def prefix_tokens(tokenizer) -> list[int]:
    """Special tokens the tokenizer puts before a text by default (e.g. Llama's BOS)."""
    with_special = tokenizer("x")["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(without)
    return list(with_special[:n]) if n > 0 and with_special[n:] == without else []


def domain_rng(seed: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(domain.encode())])


def make_samples(
    domain: str,
    docs: list[Document],
    tokenizer,
    seq_len: int,
    n: int,
    seed: int,
    holdout_fraction: float = 0.2,
    pack: bool = False,
    log=print,
) -> SampleSet:
    prefix = prefix_tokens(tokenizer)
    body = seq_len - len(prefix)
    if body < 1:
        raise SamplingError(f"seq_len {seq_len} leaves no room after the tokenizer's {len(prefix)} prefix tokens")
    scoring = [d for d in docs if not is_held_out(d.id, holdout_fraction)]
    held = [d.id for d in docs if is_held_out(d.id, holdout_fraction)]
    if not scoring:
        raise SamplingError(f"domain {domain}: all {len(docs)} documents fell in the held-out part; lower holdout_fraction")
    encoded = tokenizer([d.text for d in scoring], add_special_tokens=False)["input_ids"]

    # candidate windows: (index of document, offset in that document, tokens)
    if pack:
        sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        stream, starts = [], []
        for ids in encoded:
            starts.append(len(stream))
            stream.extend(ids + sep)
        starts_arr = np.asarray(starts)
        n_windows = len(stream) // body
        candidates = []
        for w in range(n_windows):
            pos = w * body
            j = int(np.searchsorted(starts_arr, pos, side="right") - 1)
            candidates.append((j, pos - starts[j], stream[pos : pos + body]))
        skipped = 0
    else:
        candidates, skipped = [], 0
        for j, ids in enumerate(encoded):
            if len(ids) < body:
                skipped += 1
                continue
            for pos in range(0, len(ids) - body + 1, body):
                candidates.append((j, pos, ids[pos : pos + body]))
    stats = {
        "n_documents": len(docs),
        "n_scoring_documents": len(scoring),
        "n_holdout_documents": len(held),
        "n_short_documents_skipped": skipped,
        "n_tokens": int(sum(len(e) for e in encoded)),
        "n_windows_available": len(candidates),
    }
    log(
        f"domain {domain}: {len(docs)} documents, {len(held)} held out, {skipped} shorter than "
        f"{body} tokens skipped, {len(candidates)} windows available, {n} requested"
    )
    if len(candidates) < n:
        hint = "" if pack else ", or set pack: true for a source of short texts"
        raise SamplingError(
            f"domain {domain}: only {len(candidates)} windows of {seq_len} tokens available "
            f"({skipped} of {len(scoring)} documents were shorter than a window); lower samples.per_domain "
            f"or samples.seq_len{hint}"
        )
    chosen = domain_rng(seed, domain).choice(len(candidates), size=n, replace=False)
    tokens = np.asarray([prefix + candidates[c][2] for c in chosen], dtype=np.int32)
    return SampleSet(
        domain=domain,
        token_ids=tokens,
        doc_ids=[scoring[candidates[c][0]].id for c in chosen],
        offsets=[int(candidates[c][1]) for c in chosen],
        stats=stats,
        holdout_doc_ids=held,
    )


def shard_slices(n: int, shard_size: int = 0, n_shards: int = 0) -> list[slice]:
    """Consecutive shards of ``shard_size`` samples, or ``n_shards`` near-equal shards (pair sets,
    whose size the DAG does not know)."""
    if n_shards:
        bounds = np.linspace(0, n, n_shards + 1).round().astype(int)
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return [slice(i, min(i + shard_size, n)) for i in range(0, n, shard_size)]


def n_shards(n: int, shard_size: int) -> int:
    return -(-n // shard_size)
