"""Model sources, the checkpoint they are prepared into, and weight grouping by decoder layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
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
        (GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)),
         "transformer.h", ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")),
        (GPTNeoXForCausalLM(GPTNeoXConfig(intermediate_size=48, num_hidden_layers=2, **SMALL)),
         "gpt_neox.layers",
         ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")),
    ],
    ids=["llama", "qwen2", "gemma", "gpt2", "gpt-neox"],
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
