"""Where pruning bases and allocations declare themselves, each where it is defined.

A *base* decides which weights of one matrix go (magnitude, Wanda, SparseGPT: ``actpat.bases``);
an *allocation* spreads the target sparsity over the layers (uniform, the paper's density formula,
OWL, ...: ``actpat.allocations``). A decorator on the class or function declares:

* its name and title (an allocation also the suffix of the method names that use it: ``wanda-owl``);
* what it needs: calibration windows; an allocation, possibly a domain's density store;
* its settings: a frozen dataclass, read from one section of the config's ``pruning:`` (or none).

``actpat.methods`` derives the method names from these declarations, and the config checks, the
planning of runs and each prune job's settings follow from them, so adding a base or an
allocation is one declaration beside its code, its schema section and its tests. As with
lm-evaluation-harness's ``@register_model``, a name is declared once, the declared object is
checked, and an unknown name is answered with the known ones. No torch here: the workflow plans
its runs from these declarations.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from actpat.errors import PruningError


@dataclass(frozen=True)
class Declaration:
    name: str
    calibrated: bool  # needs calibration windows
    settings: type | None  # a frozen dataclass of its settings, or None
    section: str | None  # the config section under `pruning:` its settings are read from
    implementation: Callable  # a base class (built with its settings' fields), or an allocation function
    title: str  # how reports name it ("Wanda", "OWL baseline")


@dataclass(frozen=True)
class BaseDeclaration(Declaration):
    pass


@dataclass(frozen=True)
class AllocationDeclaration(Declaration):
    suffix: str  # of the method names: "" for uniform, "-owl" for OWL
    density: bool  # needs a domain's density store (actpat.reduce.density)


BASES: dict[str, BaseDeclaration] = {}
ALLOCATIONS: dict[str, AllocationDeclaration] = {}


def _check_settings(name: str, settings: type | None, section: str | None) -> None:
    if (settings is None) != (section is None):
        raise TypeError(f"{name}: settings and their config section are declared together")
    if settings is not None and not (dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen):
        raise TypeError(f"{name}: its settings must be a frozen dataclass, not {settings!r}")


def _add(table: dict, declaration: Declaration) -> None:
    if declaration.name in table:
        raise TypeError(f"{declaration.name!r} is declared twice")
    table[declaration.name] = declaration


def base(name: str, *, title: str, calibrated: bool, settings: type | None = None, section: str | None = None):
    """Declare a base: a class whose instances (built with its settings' fields as keywords)
    have ``statistic(module)`` (a per-module calibration statistic fed with ``add_batch``, or
    None), ``prune(weight, statistic, ratio, nm) -> mask`` and ``expected_share(shape, ratio, nm)``."""
    _check_settings(name, settings, section)

    def declare(cls):
        missing = [m for m in ("statistic", "prune", "expected_share", "changes_weights") if not hasattr(cls, m)]
        if not inspect.isclass(cls) or missing:
            raise TypeError(f"base {name!r}: {cls!r} is not a base class (missing {', '.join(missing)})")
        _add(BASES, BaseDeclaration(name, calibrated, settings, section, cls, title))
        return cls

    return declare


def allocation(name: str, *, suffix: str, title: str, calibrated: bool = False, density: bool = False,
               settings: type | None = None, section: str | None = None):
    """Declare an allocation: a function ``(target, inputs: actpat.allocations.AllocationInputs)
    -> (LayerRatios, details)``, the per-layer sparsities with mean ``target`` and what the run's
    report records about how they were found."""
    _check_settings(name, settings, section)

    def declare(func):
        if not callable(func) or len(inspect.signature(func).parameters) != 2:
            raise TypeError(f"allocation {name!r}: {func!r} is not a function of (target, inputs)")
        if any(a.suffix == suffix for a in ALLOCATIONS.values()):
            raise TypeError(f"allocation {name!r}: the suffix {suffix!r} is taken")
        _add(ALLOCATIONS, AllocationDeclaration(name, calibrated, settings, section, func, title, suffix, density))
        return func

    return declare


def known(table: dict, name: str, what: str):
    """``table[name]``, or a PruningError that lists the known names."""
    if name not in table:
        raise PruningError(f"unknown {what} {name!r}; choose one of {', '.join(table)}")
    return table[name]
