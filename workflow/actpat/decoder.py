"""The decoder layers of a causal LM and their scored weight matrices.

Every model family keeps its decoder blocks in one ``nn.ModuleList`` (``model.layers`` for Llama,
Qwen2 and Gemma, ``transformer.h`` for GPT-2, ``gpt_neox.layers`` for GPT-NeoX): ``find_decoder_layers``
finds it without a per-family table, and ``weight_layout`` names the 2-D weight matrices of a
block, the same in every block, which is what scoring, stores and pruning index by. torch is
imported only when a model is at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from actpat.errors import ModelError


@dataclass(frozen=True)
class WeightLayout:
    """The scored weight matrices: ``matrices[j]`` is a name relative to a decoder layer
    (e.g. ``self_attn.q_proj``), ``shapes[j]`` its 2-D shape, the same in every layer."""

    layer_prefix: str  # e.g. "model.layers"
    n_layers: int
    matrices: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]

    @property
    def weights_per_layer(self) -> int:
        return sum(r * c for r, c in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each matrix in the concatenated per-layer score vector."""
        out, pos = [], 0
        for r, c in self.shapes:
            out.append(pos)
            pos += r * c
        return tuple(out)

    def parameter_name(self, layer: int, matrix: str) -> str:
        return f"{self.layer_prefix}.{layer}.{matrix}.weight"


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder blocks and its name: a ModuleList of identical blocks whose length
    is the config's layer count; without that count, the longest such list."""
    from torch import nn

    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(m) for m in module}) == 1
    ]
    exact = [c for c in candidates if len(c[1]) == n_layers]
    pool = exact or candidates
    if not pool:
        raise ModelError(f"cannot find the decoder layers of {type(model).__name__}")
    return min(pool, key=lambda c: (-len(c[1]), c[0].count(".")))


def weight_layout(model: nn.Module) -> WeightLayout:
    """Group the 2-D weight matrices of every decoder layer.

    Following the paper, 1-D tensors (norms, biases) are excluded, and so are embeddings and the
    output head, which live outside the decoder layers."""
    prefix, layers = find_decoder_layers(model)
    per_layer = []
    for block in layers:
        mats = [(n.removesuffix(".weight"), tuple(p.shape)) for n, p in block.named_parameters() if p.ndim == 2]
        per_layer.append(mats)
    if not per_layer[0]:
        raise ModelError(f"decoder layers of {type(model).__name__} have no 2-D weight matrices")
    if any(m != per_layer[0] for m in per_layer[1:]):
        raise ModelError("decoder layers differ in their weight matrices; non-uniform layers are not supported")
    names = tuple(n for n, _ in per_layer[0])
    shapes = tuple(s for _, s in per_layer[0])
    return WeightLayout(prefix, len(layers), names, shapes)


def layer_weights(model: nn.Module, layout: WeightLayout) -> list[list[nn.Parameter]]:
    """``[layer][matrix]`` parameters in layout order."""
    params = dict(model.named_parameters())
    return [[params[layout.parameter_name(i, m)] for m in layout.matrices] for i in range(layout.n_layers)]
