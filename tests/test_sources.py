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


def test_utf16_files_read_when_the_domain_says_so(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("Two bytes per letter, and NUL bytes between them.", encoding="utf-16")
    with pytest.raises(SourceError, match="binary file"):
        load_documents({"source": "files", "paths": [str(path)]})
    assert load_documents({"source": "files", "paths": [str(path)], "encoding": "utf-16"})[0].text.startswith("Two bytes")


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
