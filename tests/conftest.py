"""Shared fixtures: tiny real models (random weights, real architectures) and the embedded one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Triton's interpreter (the GPU kernels' tests on the CPU, tests/test_triton.py) is chosen when
# triton is first imported, which transformers does as soon as it builds a model: so before anything.
# Nothing of actpat runs triton on a CPU unless a kernel is named (auto takes fused or eager there).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(2)


def tiny_llama(vocab_size: int = 64, seed: int = 0, layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def smol_checkpoint(tmp_path_factory):
    """The embedded default model prepared as the workflow does it (about 20 s, once)."""
    from actpat.models import ModelSource, prepare_checkpoint

    out = tmp_path_factory.mktemp("smol") / "smollm2-135m"
    prepare_checkpoint(ModelSource.parse("smollm2"), out)
    return out


@pytest.fixture(scope="session")
def smollm2(smol_checkpoint):
    from actpat.models import load_checkpoint

    model, tokenizer, _ = load_checkpoint(smol_checkpoint)
    return model, tokenizer


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from actpat.models import ModelSource

    where, gguf = ModelSource.parse("smollm2").resolve()
    return AutoTokenizer.from_pretrained(where, gguf_file=gguf)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, smol_tokenizer):
    """A prepared checkpoint of a tiny random Llama that uses SmolLM2's tokenizer."""
    from actpat.models import ModelSource, prepare_checkpoint

    src = tmp_path_factory.mktemp("tiny-src")
    model = tiny_llama(vocab_size=len(smol_tokenizer))
    model.save_pretrained(src)
    smol_tokenizer.save_pretrained(src)
    out = tmp_path_factory.mktemp("tiny-prepared") / "tiny"
    prepare_checkpoint(ModelSource.parse(str(src)), out)
    return out


def with_value(cfg: dict, path: str, value) -> dict:
    """``cfg`` with the dotted ``path`` set to ``value`` (in place; intermediate keys created)."""
    node = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return cfg


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
SMOKE = ROOT / "tests" / "config" / "smoke.yaml"


def run_snakemake(args, cwd, timeout=900):
    import subprocess

    # SIGINT first: the SLURM executor plugin ignores SIGTERM while it waits for its jobs
    guard = ["timeout", "-s", "INT", "-k", "30", str(timeout)]
    return subprocess.run(guard + SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout + 60)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke workflow run locally once: (directory, completed process)."""
    where = tmp_path_factory.mktemp("smoke-local")
    return where, run_snakemake(["--cores", "2", "--configfile", str(SMOKE)], cwd=where)


@pytest.fixture(scope="session")
def smoke_report(smoke_run):
    """`snakemake --report report.html` of the smoke run: (path, completed process)."""
    where, res = smoke_run
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    rep = run_snakemake(["--configfile", str(SMOKE), "--report", "report.html"], cwd=where)
    return where / "report.html", rep


MINIMAL_CONFIG = {"models": {"m": {"source": "smollm2"}}, "domains": {"code": {"source": "packaged", "name": "python-stdlib"}}}


def default_settings(**overrides):
    """The settings of a minimal config (defaults from the schema), with dotted overrides."""
    import copy

    from actpat.settings import load_settings

    cfg = copy.deepcopy(MINIMAL_CONFIG)
    for path, value in overrides.items():
        with_value(cfg, path.replace("__", "."), value)
    return load_settings(cfg)


def scoring(**overrides):
    """``actpat.settings.Scoring`` with the schema's defaults and ``overrides``."""
    import dataclasses

    return dataclasses.replace(default_settings().scoring, **overrides)


def sample_domain_args(domain: str, spec: dict, model_dir, seq_len: int, n: int, seed: int, holdout: float, out) -> list[str]:
    """`actpat sample-domain` arguments as the workflow builds them (one JSON of the job's settings)."""
    from actpat.settings import TextSource, WindowJob
    from actpat.settings_json import encode

    job = WindowJob("samples", TextSource(domain, spec), n, seq_len, seed, holdout)
    return ["sample-domain", "--settings", encode(job), "--model-dir", str(model_dir), "--out", str(out)]


def score_shard_args(samples, shard: int, shard_size: int, model_dir, out, model: str = "tiny", threads: int = 1,
                     **scoring_overrides) -> list[str]:
    """`actpat score-shard` arguments as the workflow builds them."""
    from actpat.settings import ScoringJob
    from actpat.settings_json import encode

    job = ScoringJob(scoring(**scoring_overrides), shard_size, None)
    return ["score-shard", "--settings", encode(job), "--samples", str(samples), "--shard", str(shard), "--model-dir",
            str(model_dir), "--model", model, "--device", "cpu", "--threads", str(threads), "--out", str(out)]


def density_args(stores, out, mass_shares=(0.5, 0.9)) -> list[str]:
    from actpat.settings import DensityJob
    from actpat.settings_json import encode

    return ["density", "--settings", encode(DensityJob(tuple(mass_shares))), "--stores", *map(str, stores), "--out", str(out)]
