"""Pruning methods by name, without torch (the workflow plans runs from these).

A method is a *base* (how the weights of one layer are ranked and removed: magnitude, Wanda) and
an *allocation* (how the target sparsity is spread over the layers: uniform, the paper's density
formula, OWL). Their implementations are the registries ``actpat.pruning.BASES`` and
``actpat.pruning.ALLOCATIONS``; the schema's enum of method names equals ``METHODS`` (tested).

To add a method: declare it here, implement a new base or allocation in ``actpat.pruning`` if it
needs one, and add its name to the schema's enums.
"""

from __future__ import annotations

from dataclasses import dataclass

# base -> whether it needs calibration windows (Wanda's input norms ‖X_j‖)
BASES = {"magnitude": False, "wanda": True}
# allocation -> whether it needs calibration windows (OWL's outlier shares are Wanda scores)
ALLOCATIONS = {"uniform": False, "density-abs": False, "density-rel": False, "owl": True}


@dataclass(frozen=True)
class PruningMethod:
    name: str
    base: str
    allocation: str

    @property
    def calibrated(self) -> bool:
        """Whether it needs calibration windows."""
        return BASES[self.base] or ALLOCATIONS[self.allocation]

    @property
    def uses_density(self) -> bool:
        """Whether its layer-wise sparsities come from a domain's activation density."""
        return self.allocation.startswith("density")


METHODS: dict[str, PruningMethod] = {
    m.name: m
    for m in (
        PruningMethod("magnitude", "magnitude", "uniform"),
        PruningMethod("wanda", "wanda", "uniform"),
        PruningMethod("wanda-density", "wanda", "density-abs"),
        PruningMethod("wanda-density-rel", "wanda", "density-rel"),
        PruningMethod("wanda-owl", "wanda", "owl"),
    )
}

# N:M structures fix every layer's sparsity at N/M: only uniform allocations apply
NM_BASES = tuple(name for name, m in METHODS.items() if m.allocation == "uniform")
