"""From a domain's documents to token windows (or whole documents), split into shards.

* Documents are split once into a *scoring* part and a *held-out* part (by a hash of the document
  id, so adding documents does not move the others); held-out documents are never scored and are
  kept for perplexity evaluation.
* Candidate windows are the non-overlapping ``seq_len``-token tiles of each scoring document, or of
  the documents joined into one stream when the source has ``pack: true`` (short texts such as
  clinical definitions or chat turns). Documents shorter than a window are skipped and counted.
* With ``per_document: true`` (task domains' default) each document is one sample instead: the
  tokenizer's leading special tokens, then the document's tokens, of its own length up to
  ``seq_len``; a longer document keeps its end (the scored position is the document's last token: a
  task prompt's ``Answer:``) and is counted. Samples shorter than the longest are padded as pair-set
  texts are (``padded``: -1 beyond each sample's ``length``).
* ``n`` windows are drawn without replacement with a generator seeded by (seed, domain name), so a
  domain's samples do not depend on which other domains are configured.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actpat.errors import ActpatError
from actpat.sources import Document
from actpat.models import prefix_tokens


class SamplingError(ActpatError):
    """Not enough text for the requested samples."""


def _holdout_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little") % 1_000_000


def is_held_out(doc_id: str, fraction: float) -> bool:
    return _holdout_hash(doc_id) < fraction * 1_000_000


def split_documents(docs: list[Document], fraction: float) -> tuple[list[Document], list[str]]:
    """(scoring documents, held-out document ids): a document is held out when the hash of its id
    falls below ``fraction`` (adding documents does not move the others). A domain of two or more
    documents whose hashes all fall above it still holds one out (the one with the smallest hash),
    so that perplexity always has held-out text; with ``fraction`` 0 nothing is held out."""
    held = {d.id for d in docs if is_held_out(d.id, fraction)}
    if not held and fraction > 0 and len(docs) >= 2:
        held = {min(docs, key=lambda d: _holdout_hash(d.id)).id}
    return [d for d in docs if d.id not in held], [d.id for d in docs if d.id in held]


# token id of the positions beyond a sample's length (samples of different lengths)
PAD = -1


@dataclass
class SampleSet:
    domain: str
    token_ids: np.ndarray  # (sample, position) int32
    doc_ids: list[str]
    offsets: list[int]  # token offset of the window in its document
    stats: dict = field(default_factory=dict)
    holdout_doc_ids: list[str] = field(default_factory=list)
    lengths: np.ndarray | None = None  # (sample,) real tokens of each row, where rows are padded with PAD

    @property
    def sample_ids(self) -> list[str]:
        return [f"{self.domain}:{d}@{o}" for d, o in zip(self.doc_ids, self.offsets)]


def padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of different lengths as one (sample, position) int32 array padded with ``PAD`` on
    the right, and their lengths: the one layout of variable-length samples (pair-set texts,
    per-document samples), read back with ``actpat.store.sample_tokens``."""
    tokens = np.full((len(rows), max(len(r) for r in rows)), PAD, dtype=np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    return tokens, np.asarray([len(r) for r in rows], dtype=np.int64)


def length_span(lengths: np.ndarray) -> str:
    """Sample lengths for a log line: ``64``, or ``35-64`` when they differ."""
    lo, hi = int(np.min(lengths)), int(np.max(lengths))
    return str(hi) if lo == hi else f"{lo}-{hi}"


def domain_rng(seed: int, domain: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(domain.encode())])


def join_stream(encoded: list[list[int]], sep: list[int], lead: list[int] = (), sep_after_last: bool = True):
    """Documents joined into one token stream (after ``lead``, each followed by ``sep``): the
    stream and the start of each document in it."""
    stream, starts = list(lead), []
    for k, ids in enumerate(encoded):
        starts.append(len(stream))
        stream.extend(ids + sep if sep_after_last or k < len(encoded) - 1 else ids)
    return stream, np.asarray(starts, dtype=np.int64)


def tile_starts(n_tokens: int, length: int) -> range:
    """Starts of the non-overlapping windows of ``length`` tokens that fit in ``n_tokens``: the one
    window cutter of scoring samples, calibration and perplexity windows."""
    return range(0, n_tokens - length + 1, length)


def _room(tokenizer, seq_len: int) -> tuple[list[int], int]:
    """The tokenizer's leading special tokens and the room left for text in ``seq_len`` tokens."""
    prefix = prefix_tokens(tokenizer)
    body = seq_len - len(prefix)
    if body < 1:
        raise SamplingError(f"seq_len {seq_len} leaves no room after the tokenizer's {len(prefix)} prefix tokens")
    return prefix, body


def _scoring_documents(domain: str, docs: list[Document], holdout_fraction: float) -> tuple[list[Document], list[str]]:
    """``split_documents``, refusing a domain left with nothing to score."""
    scoring, held = split_documents(docs, holdout_fraction)
    if not scoring:
        raise SamplingError(f"domain {domain}: all {len(docs)} documents fell in the held-out part; lower holdout_fraction")
    return scoring, held


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
    fields: tuple[str, str] = ("samples.per_domain", "samples.seq_len"),
) -> SampleSet:
    """``n`` windows of ``seq_len`` tokens (see the module docstring); ``fields``: the settings that
    ask for ``n`` and ``seq_len``, named when the text is too short."""
    prefix, body = _room(tokenizer, seq_len)
    scoring, held = _scoring_documents(domain, docs, holdout_fraction)
    encoded = tokenizer([d.text for d in scoring], add_special_tokens=False)["input_ids"]

    # candidate windows: (index of document, offset in that document, tokens)
    if pack:
        stream, starts = join_stream(encoded, tokenizer("\n\n", add_special_tokens=False)["input_ids"])
        candidates = []
        for pos in tile_starts(len(stream), body):
            j = int(np.searchsorted(starts, pos, side="right") - 1)
            candidates.append((j, pos - int(starts[j]), stream[pos : pos + body]))
        skipped = 0
    else:
        candidates = [(j, pos, ids[pos : pos + body]) for j, ids in enumerate(encoded) for pos in tile_starts(len(ids), body)]
        skipped = sum(len(ids) < body for ids in encoded)
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
            f"domain {domain}: only {len(candidates)} windows of {seq_len} tokens available ({skipped} of "
            f"{len(scoring)} documents were shorter than a window), {n} asked for by {fields[0]}; lower it or "
            f"{fields[1]}{hint}"
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


def _count_field(domain: str) -> str:
    """The setting that says how many samples a domain has."""
    return f"domains.{domain}.samples (default samples.per_domain)"


def document_samples(
    domain: str,
    docs: list[Document],
    tokenizer,
    seq_len: int,
    n: int,
    seed: int,
    holdout_fraction: float = 0.2,
    log=print,
) -> SampleSet:
    """``n`` of the scoring documents, drawn like windows, each one whole sample (``per_document``):
    the tokenizer's leading special tokens, then the document's tokens. A document longer than
    ``seq_len`` keeps its end (its offset is where the kept part starts), so the last real
    position, at which the paper's D is read, is the document's end: a task prompt's ``Answer:``.
    Rows are ``padded`` to the longest; empty documents are skipped."""
    prefix, body = _room(tokenizer, seq_len)
    scoring, held = _scoring_documents(domain, docs, holdout_fraction)
    encoded = tokenizer([d.text for d in scoring], add_special_tokens=False)["input_ids"]
    candidates = [j for j, ids in enumerate(encoded) if ids]
    if len(candidates) < n:
        raise SamplingError(
            f"domain {domain}: only {len(candidates)} non-empty documents to score, one sample each "
            f"({len(held)} of {len(docs)} held out), {n} asked for by {_count_field(domain)}; lower it or "
            "samples.holdout_fraction"
        )
    chosen = [candidates[c] for c in domain_rng(seed, domain).choice(len(candidates), size=n, replace=False)]
    offsets = [max(0, len(encoded[j]) - body) for j in chosen]
    tokens, lengths = padded([prefix + encoded[j][off:] for j, off in zip(chosen, offsets)])
    truncated = sum(off > 0 for off in offsets)
    stats = {
        "n_documents": len(docs),
        "n_scoring_documents": len(scoring),
        "n_holdout_documents": len(held),
        "n_empty_documents_skipped": len(encoded) - len(candidates),
        "n_tokens": int(sum(len(e) for e in encoded)),
        "n_truncated": truncated,
    }
    log(
        f"domain {domain}: {len(docs)} documents, {len(held)} held out, {n} drawn as one sample each of "
        f"{length_span(lengths)} tokens; {truncated} longer than {seq_len} tokens kept their last {body}"
    )
    return SampleSet(domain, tokens, [scoring[j].id for j in chosen], offsets, stats, held, lengths)


def eval_windows(name: str, docs: list[Document], tokenizer, seq_len: int, max_windows: int, log=print) -> SampleSet:
    """Perplexity windows (the WikiText-2 protocol of Wanda/SparseGPT, on any text): the documents
    joined with blank lines into one stream after the tokenizer's leading special tokens (once), cut
    into non-overlapping windows of ``seq_len``; with more than ``max_windows``, evenly spaced ones
    are kept, so the text is covered end to end."""
    if not docs:
        raise SamplingError(f"evaluation set {name}: no documents")
    encoded = tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]
    stream, starts = join_stream(encoded, tokenizer("\n\n", add_special_tokens=False)["input_ids"],
                                 lead=prefix_tokens(tokenizer), sep_after_last=False)
    ids = np.asarray(stream, dtype=np.int64)
    n_avail = len(tile_starts(len(ids), seq_len))
    if n_avail < 1:
        raise SamplingError(
            f"evaluation set {name}: {len(ids)} tokens of held-out text, fewer than one window of {seq_len}; "
            "lower pruning.evaluation.seq_len or raise samples.holdout_fraction"
        )
    keep = np.unique(np.linspace(0, n_avail - 1, min(max_windows, n_avail)).round().astype(int))
    tokens = np.stack([ids[k * seq_len : (k + 1) * seq_len] for k in keep]).astype(np.int32)
    # the document each window starts in, for provenance
    doc_of = [docs[max(0, int(np.searchsorted(starts, k * seq_len, side="right")) - 1)].id for k in keep]
    log(f"evaluation set {name}: {len(docs)} documents, {len(ids)} tokens, {n_avail} windows of {seq_len}, {len(keep)} kept")
    return SampleSet(
        domain=name,
        token_ids=tokens,
        doc_ids=doc_of,
        offsets=[int(k * seq_len) for k in keep],
        stats={"n_documents": len(docs), "n_tokens": int(len(ids)), "n_windows_available": int(n_avail)},
    )


def write_windows(job, model_dir: Path, out: Path, samples_store: Path | None = None, log=print) -> None:
    """The job behind sample_domain, calibration_windows and eval_windows: cut ``job``'s windows
    (``actpat.settings.WindowJob``) with the prepared model's tokenizer and write them as a store.
    Evaluation windows of a scored domain come from the held-out documents of its ``samples_store``."""
    import json
    import time

    from actpat.models import check_window_length, load_tokenizer
    from actpat.provenance import window_attrs
    from actpat.sources import bom_files, checked_content, describe, load_documents
    from actpat.store import open_samples, write_samples

    tokenizer, checkpoint = load_tokenizer(model_dir)
    check_window_length(job.length_field, job.seq_len, checkpoint.get("max_positions"))
    t0 = time.time()
    files = checked_content(job.text.spec)  # [path, size, CRC-32C] of each local file: those it was planned with
    docs = load_documents(job.text)
    log(f"{job.text.name}: {len(docs)} documents from {describe(job.text.spec)} in {time.time() - t0:.1f}s")
    attrs = window_attrs(job, describe(job.text.spec), model_dir)
    attrs["source_files"] = json.dumps(files)
    attrs["n_bom_stripped"] = len(bom_files(job.text.spec))  # files whose leading byte-order mark was not read as text
    if job.kind == "evaluation":
        if samples_store is not None:  # a scored domain: only the documents its samples store set aside
            held = set(open_samples(samples_store)["holdout_doc_id"].values.tolist())
            docs = [d for d in docs if d.id in held]
            if {d.id for d in docs} != held:
                raise SamplingError(f"{samples_store}: its held-out documents are no longer all in {describe(job.text.spec)}")
        windows = eval_windows(job.text.name, docs, tokenizer, job.seq_len, job.n, log=log)
        attrs["held_out_only"] = samples_store is not None
    elif job.kind == "samples" and job.text.per_document:
        windows = document_samples(job.text.name, docs, tokenizer, job.seq_len, job.n, job.seed, job.holdout_fraction,
                                   log=log)
    else:  # calibration wants long token streams: a per-document domain's calibration windows tile its joined documents
        fields = {"samples": (_count_field(job.text.name), "samples.seq_len"),
                  "calibration": ("pruning.calibration.windows", "pruning.calibration.seq_len")}[job.kind]
        windows = make_samples(job.text.name, docs, tokenizer, job.seq_len, job.n, job.seed, job.holdout_fraction,
                               pack=job.text.pack or job.text.per_document, log=log, fields=fields)
        if job.kind == "calibration":
            windows.holdout_doc_ids = []
    write_samples(out, windows, attrs)
    log(f"wrote {len(windows.doc_ids)} windows to {out}")


def shard_slices(n: int, shard_size: int = 0, n_shards: int = 0) -> list[slice]:
    """Consecutive shards of ``shard_size`` samples, or ``n_shards`` near-equal shards (pair sets,
    whose size the DAG does not know)."""
    if n_shards:
        bounds = np.linspace(0, n, n_shards + 1).round().astype(int)
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return [slice(i, min(i + shard_size, n)) for i in range(0, n, shard_size)]

