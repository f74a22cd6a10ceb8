"""Checks that need more than the schema but no job: run when the workflow starts, so that bad
input is refused in one line before hours are spent.

* duplicate keys in a config file (YAML keeps the last one silently);
* local text files: a domain's globs match files that hold text; a task's ``path`` matches files of
  a kind ``datasets`` reads; a pair file loads and every pair has a score; the harness task
  directory (``accuracy.include_path``) exists;
* a local model directory holds a causal language model, and no window is longer than its maximum
  number of positions (also for the embedded model). Hub ids are checked by ``prepare_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from actpat.errors import ConfigError
from actpat.sources import SourceError, local_files, task_files
from actpat.models import EMBEDDED_MAX_POSITIONS, POSITION_KEYS, check_window_length, has_lm_head
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


def _check_task_file(where: str, spec: dict) -> None:
    """A task source's ``path`` matches files of a readable kind, and comes without dataset keys."""
    try:
        task_files(spec)
    except SourceError as exc:
        raise ConfigError(f"config error at {where}.path: {exc}") from None


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
