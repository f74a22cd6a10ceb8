"""Data files shipped inside installed PyPI packages: the embedded models, the packaged corpora and
pair sets. A package is found with ``importlib.util.find_spec`` and never imported (some data
packages' ``__init__`` cannot be imported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from actpat.errors import ModelError


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


def gensim_data(name: str) -> Path:
    """A file of gensim's test data (Wikipedia and Lee corpora, WordSim-353, SimLex-999)."""
    return package_dir("gensim") / "test" / "test_data" / name
