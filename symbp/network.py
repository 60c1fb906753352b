"""A checked network description, built from the words the command line takes."""

from __future__ import annotations

from .activations import canonical_name
from .ops import REGISTRY
from .spec import (
    LOSSES,
    REDUCTIONS,
    NetworkSpec,
    SpecError,
    check_combination,
    parse_layers,
    parse_op,
    split_activations,
)


def make_spec(layers: str | tuple[int, ...], activation: str = "sigmoid", loss: str = "half_se",
              reduction: str = "sum", ops: tuple[str | tuple[str, int], ...] = ()) -> NetworkSpec:
    """Build and check a NetworkSpec; ``ops`` names registered ops as ``"NAME:LAYER"`` or (NAME, LAYER)."""
    widths = parse_layers(layers) if isinstance(layers, str) else tuple(int(w) for w in layers)
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise SpecError(f"bad layers {widths!r}: need at least two positive widths")
    if loss not in LOSSES:
        raise SpecError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if reduction not in REDUCTIONS:
        raise SpecError(f"unknown reduction {reduction!r}: choose sum or mean")
    names = tuple(canonical_name(name) for name in split_activations(activation, len(widths) - 1))
    inserted = []
    for item in ops:
        name, layer = parse_op(item) if isinstance(item, str) else (str(item[0]), int(item[1]))
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY)) or "none registered"
            raise SpecError(f"unknown op {name!r}: registered ops are {known}")
        if not 1 <= layer < len(widths):
            raise SpecError(f"bad op {name}:{layer}: layers run from 1 to {len(widths) - 1}")
        inserted.append((name, layer))
    spec = NetworkSpec(widths, names, loss, reduction, tuple(sorted(set(inserted), key=lambda o: (o[1], o[0]))))
    check_combination(spec)
    return spec
