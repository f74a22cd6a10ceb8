"""Text sources: every packaged corpus, local files of each format, and `datasets` on local files."""

from __future__ import annotations

import json

import pytest

from actpat.sources import PACKAGED, SourceError, load_documents


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_corpus_loads_real_text(name):
    docs = load_documents({"source": "packaged", "name": name})
    assert len(docs) >= 20
    assert sum(len(d.text) for d in docs) > 50_000
    assert len({d.id for d in docs}) == len(docs)
    assert load_documents({"source": "packaged", "name": name})[0] == docs[0]  # stable order


def test_packaged_corpora_look_like_their_domain():
    first = lambda name: load_documents({"source": "packaged", "name": name})  # noqa: E731
    assert any("def " in d.text for d in first("python-stdlib"))
    assert any("Anarchism" in d.id for d in first("enwiki-excerpt"))
    assert any("Permission" in d.text or "license" in d.text.lower() for d in first("spdx-licenses"))
    assert first("hpo-definitions")[0].id.startswith("HP:")
    assert any("Solution:" in d.text for d in first("champ-math"))
    assert any("hamlet" in d.id for d in first("shakespeare"))
    assert not any("**" in d.text for d in first("shakespeare"))


def test_local_files_of_each_format(tmp_path):
    (tmp_path / "a.txt").write_text("first text document")
    (tmp_path / "b.txt").write_text("second text document")
    rows = [{"id": "r1", "body": "jsonl one"}, {"id": "r2", "body": "jsonl two"}, {"id": "r3", "body": ""}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["parquet one", "parquet two"]}), tmp_path / "d.parquet")

    txt = load_documents({"source": "files", "paths": [str(tmp_path / "*.txt")]})
    assert [d.id for d in txt] == ["a.txt", "b.txt"] and txt[0].text == "first text document"
    jl = load_documents({"source": "files", "paths": [str(tmp_path / "c.jsonl")], "field": "body", "id_field": "id"})
    assert [(d.id, d.text) for d in jl] == [("r1", "jsonl one"), ("r2", "jsonl two")]  # empty text dropped
    pqd = load_documents({"source": "files", "paths": [str(tmp_path / "d.parquet")]})
    assert [d.text for d in pqd] == ["parquet one", "parquet two"] and pqd[0].id == "d.parquet:0"


def test_datasets_source_on_local_files(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"datasets row {i}"}) for i in range(5)))
    docs = load_documents({"source": "datasets", "name": "json", "data_files": str(path), "split": "train", "field": "content"})
    assert [d.text for d in docs] == [f"datasets row {i}" for i in range(5)]
    with pytest.raises(SourceError, match="has no field 'text'"):
        load_documents({"source": "datasets", "name": "json", "data_files": str(path), "split": "train", "field": "text"})


def test_source_errors_are_clear(tmp_path):
    with pytest.raises(SourceError, match="no file matches"):
        load_documents({"source": "files", "paths": [str(tmp_path / "missing*.txt")]})
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(SourceError, match="no non-empty document"):
        load_documents({"source": "files", "paths": [str(tmp_path / "empty.txt")]})
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "x"}))
    with pytest.raises(SourceError, match="no text field 'text'"):
        load_documents({"source": "files", "paths": [str(tmp_path / "x.jsonl")]})
    with pytest.raises(SourceError, match="cannot load dataset"):
        load_documents({"source": "datasets", "name": str(tmp_path / "nothing-here")})


def test_text_that_is_not_utf8_is_refused_with_file_and_offset(tmp_path):
    text = "Le caf\u00e9 du coin ouvre \u00e0 sept heures, et la boulang\u00e8re aussi. " * 5
    latin = tmp_path / "latin" / "a.txt"
    latin.parent.mkdir()
    latin.write_bytes(text.encode("latin-1"))
    spec = {"source": "files", "paths": [str(latin)]}
    at = text.encode("latin-1").index(0xE9)  # the first byte that is not UTF-8
    assert at == 6
    with pytest.raises(SourceError, match=rf"{latin}: not utf-8 text at byte {at} \(invalid continuation byte\)"):
        load_documents(spec)
    assert load_documents({**spec, "encoding": "latin-1"})[0].text == text  # the domain says what it is
    replaced = load_documents({**spec, "errors": "replace"})[0].text
    assert "\ufffd" in replaced and "caf" in replaced  # only when the domain asks for it
    jsonl = tmp_path / "latin" / "b.jsonl"
    data = json.dumps({"text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    jsonl.write_bytes(data)
    with pytest.raises(SourceError, match=rf"b.jsonl: not utf-8 text at byte {data.index(0xE9)}"):
        load_documents({"source": "files", "paths": [str(jsonl)]})


@pytest.mark.parametrize("content", [bytes(range(256)) * 40, b"\x00" * 4096, b"valid text, then\x00 a NUL"],
                         ids=["random binary", "NUL bytes", "text with a NUL"])
def test_binary_files_are_refused(tmp_path, content):
    path = tmp_path / "blob.txt"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=rf"{path}: a binary file \(NUL byte at byte {content.find(0)}\)"):
        load_documents({"source": "files", "paths": [str(path)]})


WIDE = "Two bytes per letter, and NUL bytes between them. Caf\u00e9 \u00e0 sept heures."


@pytest.mark.parametrize("codec, says, advice", [
    ("utf-16", r"UTF-16 \(byte-order mark\)", "utf-16"),
    ("utf-16-le", r"UTF-16 \(little-endian, NUL bytes between the letters\)", "utf-16-le"),
    ("utf-16-be", r"UTF-16 \(big-endian, NUL bytes between the letters\)", "utf-16-be"),
    ("utf-32", r"UTF-32 \(byte-order mark\)", "utf-32"),
    ("utf-32-le", r"UTF-32 \(little-endian, NUL bytes between the letters\)", "utf-32-le"),
    ("utf-32-be", r"UTF-32 \(big-endian, NUL bytes between the letters\)", "utf-32-be"),
])
def test_utf16_and_utf32_files_are_refused_with_the_encoding_to_set(tmp_path, codec, says, advice):
    """Not "a binary file": what the bytes look like and the ``encoding:`` that reads them, which
    then gives back the text Python wrote (a byte-order mark included in the file or not)."""
    path = tmp_path / "wide.txt"
    path.write_bytes(WIDE.encode(codec))
    spec = {"source": "files", "paths": [str(path)]}
    with pytest.raises(SourceError, match=rf"^{path}: {says} text, not utf-8; set encoding: {advice}$"):
        load_documents(spec)
    with pytest.raises(SourceError, match=rf"{says} text, not latin-1; set encoding: {advice}$"):
        load_documents({**spec, "encoding": "latin-1"})  # latin-1 would decode any byte without a word
    assert load_documents({**spec, "encoding": advice})[0].text == WIDE


def _with_bom(path, text: str, codec: str = "utf-8", bom: bytes = b"\xef\xbb\xbf"):
    path.write_bytes(bom + text.encode(codec))
    return path


def test_a_byte_order_mark_is_removed_and_counted_in_every_text_format(tmp_path):
    """Files with a byte-order mark read as the same files without one (a txt file's first window
    does not begin with the mark's tokens; a JSONL file parses; a CSV pair file's first column is
    named as written), and ``bom_files`` lists them."""
    from actpat.pairs import load_pairs
    from actpat.sources import bom_files

    text = "The ferry crossed the bay twice a day, carrying bicycles and mail."
    rows = json.dumps({"text": text}) + "\n" + json.dumps({"text": "a second record"})
    pairs = "sentence1,sentence2,score\na cat,a dog,3.5\nthe sea,a lake,2.0\n"
    for folder, bom in (("plain", b""), ("bom", b"\xef\xbb\xbf")):
        (tmp_path / folder).mkdir()
        _with_bom(tmp_path / folder / "a.txt", text, bom=bom)
        _with_bom(tmp_path / folder / "b.jsonl", rows, bom=bom)
        _with_bom(tmp_path / folder / "pairs.csv", pairs, bom=bom)
    specs = {f: {"source": "files", "paths": [str(tmp_path / f / "a.txt"), str(tmp_path / f / "b.jsonl")]} for f in ("plain", "bom")}
    assert load_documents(specs["bom"]) == load_documents(specs["plain"])
    assert [d.text for d in load_documents(specs["bom"])] == [text, text, "a second record"]
    assert bom_files(specs["bom"]) == [str(tmp_path / "bom" / n) for n in ("a.txt", "b.jsonl")] and not bom_files(specs["plain"])
    plain, marked = ({"source": "files", "path": str(tmp_path / f / "pairs.csv")} for f in ("plain", "bom"))
    assert load_pairs(marked).texts == load_pairs(plain).texts == ["a cat", "a dog", "the sea", "a lake"]
    assert bom_files(marked) == [marked["path"]]
    # UTF-16 read as UTF-16 with its byte order named: the codec keeps the mark, and it is removed too
    wide = _with_bom(tmp_path / "le.txt", text, "utf-16-le", b"\xff\xfe")
    assert load_documents({"source": "files", "paths": [str(wide)], "encoding": "utf-16-le"})[0].text == text
    # a UTF-8 mark on a file declared latin-1 (which would read it as three letters) is refused
    with pytest.raises(SourceError, match=r"a.txt: UTF-8 \(byte-order mark\) text, not latin-1; set encoding: utf-8$"):
        load_documents({"source": "files", "paths": [str(tmp_path / "bom" / "a.txt")], "encoding": "latin-1"})


def test_jsonl_records_keep_unicode_line_separators(tmp_path):
    path = tmp_path / "seps.jsonl"
    path.write_text(json.dumps({"text": "one\u2028two\u000cthree"}, ensure_ascii=False) + "\n" + json.dumps({"text": "four"}))
    assert [d.text for d in load_documents({"source": "files", "paths": [str(path)]})] == ["one\u2028two\u000cthree", "four"]


def test_home_relative_paths_and_directory_globs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("a text in the home directory")
    (tmp_path / "corpus" / "sub.txt").mkdir()  # a directory that the glob also matches: skipped
    docs = load_documents({"source": "files", "paths": ["~/corpus/*.txt"]})
    assert [d.id for d in docs] == ["a.txt"]
    with pytest.raises(SourceError, match="matches no regular file"):
        load_documents({"source": "files", "paths": ["~/corpus/sub.txt"]})


def test_a_samples_store_of_marked_files_equals_that_of_unmarked_ones_and_counts_them(tmp_path, tiny_checkpoint):
    """The sampling job on the same documents with and without UTF-8 byte-order marks (same file
    names, same domain name): the same windows, and the store says how many files had a mark."""
    from actpat.samples import write_windows
    from actpat.settings import TextSource, WindowJob
    from actpat.store import open_samples

    stores = {}
    for folder, bom in (("plain", b""), ("bom", b"\xef\xbb\xbf")):
        (tmp_path / folder).mkdir()
        for i in range(6):
            _with_bom(tmp_path / folder / f"t{i}.txt", f"Text {i} tells of rivers, hills and towns. " * 6, bom=bom)
        spec = {"source": "files", "paths": [str(tmp_path / folder / "*.txt")]}
        write_windows(WindowJob("samples", TextSource("d", spec), 8, 16, 1, 0.2), tiny_checkpoint, tmp_path / f"{folder}.zarr",
                      log=lambda m: None)
        stores[folder] = open_samples(tmp_path / f"{folder}.zarr")
    assert (stores["bom"]["token_ids"].values == stores["plain"]["token_ids"].values).all()
    assert list(stores["bom"]["offset"].values) == list(stores["plain"]["offset"].values)
    assert 0 in stores["bom"]["offset"].values  # a window at the start of a document, where the mark was
    assert stores["bom"].attrs["n_bom_stripped"] == 6 and stores["plain"].attrs["n_bom_stripped"] == 0


def test_content_ids_read_a_file_again_only_when_its_stat_changed(tmp_path, monkeypatch):
    """The planning process checksums each local file; a new one reads its cache and reads a file
    again only when its size, times or inode changed: a write with the modification time set back
    still moves the change time."""
    import os

    import google_crc32c

    from actpat import sources

    reads = []
    crc = sources.file_crc32c
    monkeypatch.setattr(sources, "file_crc32c", lambda path: reads.append(path) or crc(path))
    path, cache = tmp_path / "a.txt", str(tmp_path / "plan" / "content-ids.json")
    path.write_bytes(b"one text")
    first = sources.content_ids([path], cache)
    assert first == [[str(path), 8, google_crc32c.value(b"one text")]] and len(reads) == 1
    sources._CACHES.clear()  # the next plan
    assert sources.content_ids([path], cache) == first and len(reads) == 1
    st = path.stat()
    path.write_bytes(b"two text")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    sources._CACHES.clear()
    assert sources.content_ids([path], cache)[0][2] == google_crc32c.value(b"two text")
    assert len(reads) == 2
    assert sources.content_ids([path]) == sources.content_ids([path], cache) and len(reads) == 3  # no cache: read


def test_a_job_refuses_text_that_changed_after_it_was_planned(tmp_path):
    """The plan puts the files' identity in the job's settings (a source without local files keeps
    its settings as they were); the job reads the files afresh and refuses others."""
    from actpat.settings import PairTextsJob, PairSetSpec, TextSource, WindowJob
    from actpat.settings_json import encode
    from actpat.sources import checked_content, with_content_ids

    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text(f"text {name}, a few words")
    spec = {"source": "files", "paths": [str(tmp_path / "*.txt")]}
    planned = with_content_ids(WindowJob("samples", TextSource("d", spec), 4, 16, 1, 0.2))
    assert planned.text.spec["content"].startswith("2 file(s), 38 bytes, ") and "content" not in spec
    assert [row[:2] for row in checked_content(planned.text.spec)] == [[str(tmp_path / "a.txt"), 19], [str(tmp_path / "b.txt"), 19]]
    (tmp_path / "b.txt").write_text("text B, a few words")
    with pytest.raises(SourceError, match=r"\.txt'\]: the files changed after this job was planned \(2 file\(s\), 38 bytes, "):
        checked_content(planned.text.spec)
    pairs = tmp_path / "p.csv"
    pairs.write_text("sentence1,sentence2,score\na,b,1\n")
    job = with_content_ids(PairTextsJob(PairSetSpec("p", {"source": "files", "path": str(pairs)}), 1))
    assert job.pairs.spec["content"].startswith("1 file(s), 32 bytes, ")
    packaged = WindowJob("samples", TextSource("code", {"source": "packaged", "name": "python-stdlib"}), 4, 16, 1, 0.2)
    assert encode(with_content_ids(packaged)) == encode(packaged)
