"""Checks that need more than the schema but no job: run when the workflow starts, so that bad
input is refused in one line before hours are spent.

* duplicate keys in a config file (YAML keeps the last one silently);
* local text files: a domain's globs match files that hold text, whose first bytes neither look
  like another encoding (UTF-16/32) nor hold a NUL byte; a task's ``path`` matches files of a kind
  ``datasets`` reads; a pair file loads and every pair has a score; the harness task directory
  (``accuracy.include_path``) exists;
* a local model directory holds a causal language model, and no window is longer than its maximum
  number of positions (also for the embedded models, whose data packages are installed where the
  model is still to be prepared). Hub ids are checked by ``prepare_model``;
* once a model is prepared: a domain that cannot hold the samples asked of it, counted exactly by
  its samples store where a rerun asks for more of the same text, else, for local UTF-8 text, even
  if each token stood for one byte (``most_windows``; also its calibration windows).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from actpat import paths
from actpat.errors import ConfigError, ModelError
from actpat.sources import HEAD, TEXT_KINDS, SourceError, check_head, file_kind, local_files, task_files, text_files
from actpat.models import (EMBEDDED, EMBEDDED_MAX_POSITIONS, POSITION_KEYS, PROVENANCE_FILE, check_window_length,
                           has_lm_head)
from actpat.settings import WINDOW_LENGTH_FIELDS


class _StrictLoader(yaml.SafeLoader):
    pass


def _no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"config error in {Path(loader.name).name} line {key_node.start_mark.line + 1}: key {key!r} "
                              f"appears twice (first on line {seen[key] + 1}); YAML would keep only the last one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def check_duplicate_keys(path: Path) -> None:
    with open(path, encoding="utf-8") as fh:
        loader = _StrictLoader(fh)
        loader.name = str(path)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()


def _check_files(where: str, spec: dict, needs_holdout: bool) -> None:
    """The globs match regular files, not all empty; with pruning on, a domain of one document
    (one text file) has no held-out document for perplexity."""
    try:
        matched = local_files(spec["paths"])
    except SourceError as exc:
        raise ConfigError(f"config error at {where}.paths: {exc}") from None
    if all(p.stat().st_size == 0 for p in matched):
        raise ConfigError(f"config error at {where}.paths: the {len(matched)} matching file(s) are empty")
    text_only = all((spec.get("format") or p.suffix.lstrip(".").lower()) in ("txt", "text", "md") for p in matched)
    if needs_holdout and text_only and len(matched) < 2:
        raise ConfigError(f"config error at {where}.paths: one document ({matched[0]}); validations 1-2 measure "
                          "perplexity on held-out documents, so a domain needs at least two (or set pruning.enabled: false)")
    _check_heads(f"{where}.paths", spec)


def _check_heads(where: str, spec: dict, settable: bool = True) -> None:
    """The first bytes of each text file are text of the source's encoding (``sources.check_head``)."""
    for path in text_files(spec):
        with open(path, "rb") as fh:
            head = fh.read(HEAD)
        try:
            check_head(path, head, spec.get("encoding", "utf-8"), settable)
        except SourceError as exc:
            raise ConfigError(f"config error at {where}: {exc}") from None


def _check_task_file(where: str, spec: dict) -> None:
    """A task source's ``path`` matches files of a readable kind, and comes without dataset keys."""
    try:
        task_files(spec)
    except SourceError as exc:
        raise ConfigError(f"config error at {where}.path: {exc}") from None
    _check_heads(f"{where}.path", spec, settable=False)


def _window_lengths(cfg: dict) -> dict[str, int]:
    kinds = ["samples"] + (["calibration", "evaluation"] if cfg["pruning"]["enabled"] else [])
    out = {}
    for field in (WINDOW_LENGTH_FIELDS[k] for k in kinds):
        node = cfg
        for key in field.split("."):
            node = node[key]
        out[field] = node
    out.update({f"pairs.{name}.max_tokens": spec["max_tokens"] for name, spec in cfg["pairs"].items()})
    return out


def _check_model(name: str, spec: dict, cfg: dict) -> None:
    source = spec["source"]
    where = f"models.{name}.source"
    max_pos = EMBEDDED_MAX_POSITIONS.get(source)
    if source in EMBEDDED and _prepared(cfg, name) is None:  # its data packages are read by prepare_model
        try:
            EMBEDDED[source].locate_parts()
        except ModelError as exc:
            raise ConfigError(f"config error at {where}: {exc}") from None
    looks_local = source.startswith(("/", ".", "~")) or source.endswith(".gguf") or Path(source).exists()
    if max_pos is None and looks_local:
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"config error at {where}: {source!r} does not exist")
        if path.is_dir():
            config_file = path / "config.json"
            if not config_file.is_file():
                raise ConfigError(f"config error at {where}: {source!r} is not a model directory (no config.json)")
            mcfg = json.loads(config_file.read_text())
            archs = mcfg.get("architectures") or []
            if archs and not has_lm_head(archs) or mcfg.get("is_encoder_decoder"):
                raise ConfigError(f"config error at {where}: {source!r} is a {', '.join(archs) or mcfg.get('model_type')} "
                                  "model, not a causal language model (actpat needs a decoder with a language-model head)")
            max_pos = next((mcfg[k] for k in POSITION_KEYS if isinstance(mcfg.get(k), int)), None)
    for field, length in _window_lengths(cfg).items():
        check_window_length(field, length, max_pos, name)


def most_windows(spec: dict, seq_len: int, prefix: int, whole_documents: bool, packed: bool) -> int | None:
    """At most how many windows of ``seq_len`` tokens (``prefix`` of them the tokenizer's special
    tokens) a ``files`` domain yields, or documents where each is one sample (``whole_documents``),
    without a tokenizer: a token stands for at least one byte of the UTF-8 text, but for one per
    document (a SentencePiece tokenizer's leading '▁'), as in byte-level BPE (GPT-2, Llama 3, Qwen,
    SmolLM) and SentencePiece with byte fallback (Llama 2, Gemma). A JSONL line holds its text's
    bytes and more than a token's worth of punctuation. None where bytes do not bound the text:
    another encoding than strict UTF-8, parquet files, documents of JSONL records."""
    import codecs

    if codecs.lookup(spec.get("encoding", "utf-8")).name != "utf-8" or spec.get("errors", "strict") != "strict":
        return None
    files = local_files(spec["paths"])
    kinds = [file_kind(spec, p) for p in files]
    if any(k not in TEXT_KINDS for k in kinds) or whole_documents and any(k in ("jsonl", "json") for k in kinds):
        return None
    sizes = [(p.stat().st_size, k in ("jsonl", "json")) for p, k in zip(files, kinds)]
    if whole_documents:
        return sum(size > 0 for size, _ in sizes)
    body = seq_len - prefix
    if packed:  # one stream: each document's tokens, then a blank line's (two bytes, and a '▁')
        return sum(size + (0 if jsonl else 4) for size, jsonl in sizes) // body
    return sum(size // body for size, jsonl in sizes if jsonl) + sum((size + 1) // body for size, jsonl in sizes if not jsonl)


def _prepared(cfg: dict, name: str) -> dict | None:
    """The provenance of model ``name`` as prepared by an earlier run (``resources/models/<name>``,
    prepare_model's output), where it is the configured model (else it will be prepared again)."""
    from actpat.models import ModelSource

    try:
        prov = json.loads((Path(paths.model_dir(name)) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    spec = cfg["models"][name]
    same = (prov.get("source") == ModelSource.parse(spec["source"]).location and prov.get("dtype") == spec["dtype"]
            and spec["revision"] in (None, prov.get("revision")))
    return prov if same else None


def _recorded(store: Path, spec: dict, seq_len: int, holdout: float, whole: bool) -> int | None:
    """What a domain's samples store, cut by the same tokenizer from the same text (``spec`` with its
    ``content``) with the same settings but the count, says the text holds: its windows, or its
    documents where each is one sample. None without such a store."""
    try:
        attrs = json.loads((store / "zarr.json").read_text())["attributes"]
        recorded = json.loads(attrs["source_spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    drop = lambda s: {k: v for k, v in s.items() if k != "samples"}  # noqa: E731
    if not (attrs.get("complete") and attrs.get("seq_len") == seq_len and attrs.get("holdout_fraction") == holdout
            and drop(recorded) == drop(spec)):
        return None
    if whole:
        return attrs["n_scoring_documents"] - attrs.get("n_empty_documents_skipped", 0)
    return attrs.get("n_windows_available")


def _check_sizes(cfg: dict) -> None:
    """Each domain can hold the samples asked of it, and each local calibration domain its
    calibration windows: refused at start-up, before a rerun removes a valid store. The count is
    exact where the domain's samples store was cut from the same text with the same settings but
    the count (a rerun asking for more); otherwise, for local UTF-8 text, ``most_windows`` bounds it."""
    from actpat.sources import PLAN_CACHE, with_content

    prepared = {m: prov for m in cfg["models"] if (prov := _prepared(cfg, m))}
    if not prepared:
        return
    prefix = min(prov.get("prefix_tokens", -1) for prov in prepared.values())  # -1: prepared before it was recorded
    pr, seq_len, holdout = cfg["pruning"], cfg["samples"]["seq_len"], cfg["samples"]["holdout_fraction"]
    calibration = {pr["calibration"]["domain"], *pr["validation2"]["calibration_domains"]} if pr["enabled"] else set()
    for name, spec in cfg["domains"].items():
        count = "samples.per_domain" if spec["samples"] == cfg["samples"]["per_domain"] else f"domains.{name}.samples"
        whole = spec.get("per_document", False)
        what = "documents, one sample each" if whole else f"windows of {seq_len} tokens"
        fix = f"lower {count}" + ("" if whole else " or samples.seq_len")
        for model in prepared:
            store = Path(paths.samples(model, name))
            found = _recorded(store, with_content(spec, PLAN_CACHE), seq_len, holdout, whole)
            if found is not None and found < spec["samples"]:
                raise ConfigError(f"config error at {count}: domain {name} holds {found} {what} ({store}), fewer than "
                                  f"the {spec['samples']} asked for; {fix}")
        if spec["source"] != "files" or prefix < 0:
            continue
        asks = [(count, spec["samples"], seq_len, whole, fix)]
        if name in calibration:
            asks.append(("pruning.calibration.windows", pr["calibration"]["windows"], pr["calibration"]["seq_len"], False,
                         "lower pruning.calibration.windows or pruning.calibration.seq_len"))
        for field, n, length, documents, advice in asks:
            most = most_windows(spec, length, prefix, documents, spec["pack"] or whole)
            if most is not None and most < n:
                unit = "documents, one sample each" if documents else f"windows of {length} tokens even at one byte a token"
                raise ConfigError(f"config error at {field}: domain {name} has text for at most {most} {unit}, "
                                  f"fewer than the {n} asked for; {advice}, or add text")


def preflight(cfg: dict, config_files: list[Path]) -> None:
    """Raise ConfigError (one line, naming the field) for input that would fail a job later."""
    from actpat.errors import PairsError
    from actpat.pairs import load_pairs

    for path in config_files:
        if Path(path).is_file():
            check_duplicate_keys(Path(path))
    texts = {f"domains.{n}": s for n, s in cfg["domains"].items()}
    texts |= {f"pruning.evaluation.sets.{n}": s for n, s in cfg["pruning"]["evaluation"]["sets"].items()}
    for where, spec in texts.items():
        if spec["source"] == "files":
            _check_files(where, spec, needs_holdout=cfg["pruning"]["enabled"] and where.startswith("domains."))
        elif spec["source"] == "task" and spec.get("path"):
            _check_task_file(where, spec)
    include = cfg["pruning"]["evaluation"]["accuracy"]["include_path"]
    if cfg["pruning"]["enabled"] and include and not Path(include).expanduser().is_dir():
        raise ConfigError(f"config error at pruning.evaluation.accuracy.include_path: {include!r} is not a directory "
                          "(of lm-evaluation-harness task YAML files)")
    for name, spec in cfg["pairs"].items():
        if spec["source"] == "files":
            try:
                load_pairs(spec)
            except PairsError as exc:
                raise ConfigError(f"config error at pairs.{name}: {exc}") from None
    for name, spec in cfg["models"].items():
        _check_model(name, spec, cfg)
    _check_sizes(cfg)
