"""Pruning methods by name, derived from the declared bases and allocations, without torch (the
workflow plans its runs from these).

A method is a *base* (how the weights of one matrix are ranked and removed: ``actpat.bases``) and
an *allocation* (how the target sparsity is spread over the layers: ``actpat.allocations``); each
declares itself where it is defined (``actpat.registry``). Its name is the base's followed by the
allocation's suffix: ``magnitude``, ``wanda-density``, ``sparsegpt-alpha``, ...

A run also has a *structure*: ``unstructured``, or N:M (N of every M consecutive input weights of a
row pruned; its sparsity is then N/M in every layer, so only uniform allocations apply).
"""

from __future__ import annotations

from dataclasses import dataclass

from actpat import allocations, bases  # noqa: F401 -- their declarations fill the registry
from actpat.errors import PruningError
from actpat.registry import ALLOCATIONS, BASES, AllocationDeclaration, BaseDeclaration, known


@dataclass(frozen=True)
class PruningMethod:
    name: str
    base: str
    allocation: str

    @property
    def base_declaration(self) -> BaseDeclaration:
        return BASES[self.base]

    @property
    def allocation_declaration(self) -> AllocationDeclaration:
        return ALLOCATIONS[self.allocation]

    @property
    def calibrated(self) -> bool:
        """Whether it needs calibration windows."""
        return BASES[self.base].calibrated or ALLOCATIONS[self.allocation].calibrated

    @property
    def uses_density(self) -> bool:
        """Whether its layer-wise sparsities come from a domain's activation density."""
        return ALLOCATIONS[self.allocation].density


# every base with every allocation: magnitude, wanda-density, sparsegpt-alpha, ... (magnitude with
# an allocation that needs calibration windows, OWL's or DLP's Wanda scores, is left out: the
# magnitude base is the data-free baseline, and it would need calibration data only to spread its
# sparsity; both papers do report magnitude with their allocation)
METHODS: dict[str, PruningMethod] = {
    f"{base}{a.suffix}": PruningMethod(f"{base}{a.suffix}", base, name)
    for base in BASES
    for name, a in ALLOCATIONS.items()
    if not (not BASES[base].calibrated and a.calibrated)
}

# N:M structures fix every layer's sparsity at N/M: only uniform allocations apply
NM_BASES = tuple(name for name, m in METHODS.items() if m.allocation == "uniform")


def method(name: str) -> PruningMethod:
    """The method of this name, or a PruningError listing the known names."""
    return known(METHODS, name, "pruning method")


def uniform_of(name: str) -> str:
    """The uniform-allocation method of the same base (the baseline of a layer-wise allocation)."""
    return METHODS[name].base


def parse_structure(structure: str) -> tuple[int, int] | None:
    """``unstructured`` → None; N:M, written ``"2:4"`` (the config) or ``"2of4"`` (a run's key) →
    (2, 4): N of every M consecutive weights of a row pruned, 0 < N < M."""
    if structure == "unstructured":
        return None
    for sep in (":", "of"):
        if sep in structure:
            n, m = structure.split(sep)
            if not (n.isdigit() and m.isdigit()):
                break
            n, m = int(n), int(m)
            if not 0 < n < m:
                raise PruningError(f"{structure!r} needs 0 < N < M (N pruned of every M)")
            return n, m
    raise PruningError(f"unknown structure {structure!r}; use 'unstructured' or N:M such as '2:4'")
