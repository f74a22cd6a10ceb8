"""Pruning methods by name, without torch (the workflow plans runs from these).

A method is a *base* (how the weights of one layer are ranked and removed: magnitude, Wanda,
SparseGPT) and an *allocation* (how the target sparsity is spread over the layers: uniform, the
paper's density formula, OWL, AlphaPruning, DLP). Their implementations are the registries ``actpat.pruning.BASES`` and
``actpat.pruning.ALLOCATIONS``; the schema's enum of method names equals ``METHODS`` (tested).

To add a method: declare it here, implement a new base or allocation in ``actpat.pruning`` if it
needs one, and add its name to the schema's enums.
"""

from __future__ import annotations

from dataclasses import dataclass

# base -> whether it needs calibration windows (Wanda's input norms ‖X_j‖, SparseGPT's XᵀX)
BASES = {"magnitude": False, "wanda": True, "sparsegpt": True}
# allocation -> whether it needs calibration windows (OWL's outlier shares and DLP's layer medians
# are statistics of Wanda scores; AlphaPruning reads the weights' spectra only)
ALLOCATIONS = {"uniform": False, "density-abs": False, "density-rel": False, "owl": True, "alpha": False, "dlp": True}
# the suffix of a method's name for each allocation
SUFFIX = {"uniform": "", "density-abs": "-density", "density-rel": "-density-rel", "owl": "-owl", "alpha": "-alpha",
          "dlp": "-dlp"}


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


# every base with every allocation: magnitude, wanda-density, sparsegpt-alpha, ... (magnitude with
# an allocation that needs calibration windows, OWL's or DLP's Wanda scores, is left out: the
# magnitude base is the data-free baseline, and it would need calibration data only to spread its
# sparsity; both papers do report magnitude with their allocation)
METHODS: dict[str, PruningMethod] = {
    f"{base}{SUFFIX[allocation]}": PruningMethod(f"{base}{SUFFIX[allocation]}", base, allocation)
    for base in BASES
    for allocation in ALLOCATIONS
    if not (base == "magnitude" and ALLOCATIONS[allocation])
}


def uniform_of(method: str) -> str:
    """The uniform-allocation method of the same base (the baseline of a layer-wise allocation)."""
    return METHODS[method].base

# N:M structures fix every layer's sparsity at N/M: only uniform allocations apply
NM_BASES = tuple(name for name, m in METHODS.items() if m.allocation == "uniform")
