"""JSON results: a pruning run's ``pruning.json``, a perplexity or zero-shot file, ``findings.json``
and the reports' ``summary.json``. Each names its kind and what made it (the model, the run, the
evaluation set...) and carries a CRC-32C of its own content; ``read_json`` checks the checksum and
the identity the reader expects, and names the file on any failure: a truncated or edited file, one
copied from another run, or one written before results carried checksums.

The checksum covers the content, not the bytes: the CRC-32C of the compact, key-sorted JSON of every
field but ``crc32c`` (as a store's inventory covers its file list, ``actpat.store``). JSON numbers
read back as the same floats, so the reader recomputes it exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from actpat.checksums import crc32c
from actpat.errors import ResultError
from actpat.provenance import check_made_for

RERUN = "delete it and run the workflow again (the job that writes it reruns)"
# each kind of result and the rules whose jobs write it (named when a file of before checksums is found)
WRITTEN_BY = {"pruning": "prune", "perplexity": "perplexity perplexity_dense", "zero-shot": "zero_shot zero_shot_dense",
              "pruning-report": "pruning_report", "findings": "findings", "pairs": "pairs_report"}


def _canonical(content: dict) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _clean(o):
    """Strict JSON values: NaN (an undefined statistic) becomes null, numpy scalars plain."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    return o


def write_json(result: dict, path: Path, kind: str) -> None:
    """A result of ``kind`` (``perplexity``, ``zero-shot``, ``pruning``, ``findings``, ...) as
    strict JSON with its checksum (``kind``: one of ``WRITTEN_BY``), written under a temporary name and renamed into place (a reader
    never sees half a file)."""
    assert kind in WRITTEN_BY, kind
    content = _clean({**result, "kind": f"actpat.{kind}"})
    content["crc32c"] = crc32c(_canonical(content))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2, allow_nan=False))
    os.replace(tmp, path)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: Path, kind: str, **expected) -> dict:
    """The result of ``kind`` at ``path``, made for ``expected`` (e.g. ``model=..., run=...``: the
    fields that name what made it); ResultError naming the file when it is missing, not JSON, has no
    checksum or another one, or was made for something else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultError(f"{path}: missing; run the workflow again (the job that writes it reruns)") from None
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: unreadable ({exc}); {RERUN}") from None
    try:
        content = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ResultError(f"{path}: not valid JSON ({exc}): truncated or edited; {RERUN}") from None
    if not isinstance(content, dict):
        raise ResultError(f"{path}: not a JSON object; {RERUN}")
    recorded = content.pop("crc32c", None)
    if recorded is None:
        raise ResultError(f"{path}: has no checksum (written before results carried one, or not by actpat); rerun the "
                          f"jobs that write such files: snakemake --forcerun {WRITTEN_BY[kind]}")
    if recorded != crc32c(_canonical(content)):
        raise ResultError(f"{path}: its content does not match its checksum (edited or damaged after it was written); "
                          f"{RERUN}")
    if content.get("kind") != f"actpat.{kind}":
        raise ResultError(f"{path}: not a {kind} result (its kind: {content.get('kind')})")
    check_made_for(path, content, ResultError, **expected)
    return content


def check_derived(path: Path, name: str, recorded, recomputed: float, source: str, rtol: float = 1e-9) -> None:
    """A headline number against the same number recomputed from the file's own data (``source``):
    a file that disagrees with itself is refused."""
    if not isinstance(recorded, (int, float)) or isinstance(recorded, bool) or not np.isclose(recorded, recomputed,
                                                                                               rtol=rtol, atol=0):
        raise ResultError(f"{path}: {name} {recorded!r} disagrees with {recomputed!r} recomputed from its {source}; "
                          f"the file contradicts itself: {RERUN}")


def checked(path: Path, check, result: dict) -> dict:
    """``result`` after ``check(result)``; a field missing or of the wrong type is one ResultError
    naming the file (a file that passed its checksum but was not written by this version)."""
    try:
        check(result)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ResultError(f"{path}: unexpected content ({type(exc).__name__}: {exc}); {RERUN}") from None
    return result
