"""A checked network description, built from the words the command line takes."""

from __future__ import annotations

from decimal import Decimal

from .activations import canonical_name, get_activation
from .ops import REGISTRY
from .spec import (
    HYPERPARAMETERS,
    LOSSES,
    REDUCTIONS,
    NetworkSpec,
    SpecError,
    check_combination,
    layers_from,
    parse_decimal,
    parse_op,
    parse_optimizer,
    require_text,
    split_activations,
)


def _checked_activation(text: str) -> str:
    """The canonical name of an activation, derived once here so that any error names the
    formula as the user wrote it, not as SymPy rewrote it (Max(z, Max(1, -z)) is Max(1, -z, z))."""
    name = canonical_name(text)
    try:
        get_activation(name)
    except SpecError as error:
        raise SpecError(str(error).replace(repr(name), repr(text))) from None
    return name


def make_spec(layers: str | tuple[int, ...], activation: str = "sigmoid", loss: str = "half_se",
              reduction: str = "sum", ops: tuple[str | tuple[str, int], ...] = (), l2: str | float = "",
              optimizer: str = "sgd", batch_norm: bool = False, layer_norm: bool = False, dropout: str | float = "",
              **hyperparameters: object) -> NetworkSpec:
    """Build and check a NetworkSpec; ``ops`` names registered ops as ``"NAME:LAYER"`` or (NAME, LAYER);
    ``l2`` is λ of the weight penalty ½λ Σ‖W‖² (a decimal, such as "0.01"); ``optimizer`` and the
    ``hyperparameters`` (momentum, betas, eps, alpha, weight_decay) are named as in torch.optim.
    ``batch_norm`` and ``layer_norm`` normalize every hidden layer; ``dropout`` is p, the probability of
    dropping a unit, on every hidden layer unless ``ops`` names ``dropout:LAYER`` for some."""
    widths = layers_from(layers)
    activation, loss, reduction = (require_text(name, value) for name, value in
                                   (("activation", activation), ("loss", loss), ("reduction", reduction)))
    if loss not in LOSSES:
        raise SpecError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if reduction not in REDUCTIONS:
        raise SpecError(f"unknown reduction {reduction!r}: choose sum or mean")
    names = tuple(_checked_activation(name) for name in split_activations(activation, len(widths) - 1))
    inserted = []
    if isinstance(ops, str):
        ops = (ops,)
    for item in ops:
        if isinstance(item, str):
            name, layer = parse_op(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and type(item[1]) is int:
            name, layer = item
        else:
            raise SpecError(f"bad op {item!r:.60}: give 'NAME:LAYER' or (NAME, LAYER)")
        if name not in REGISTRY:
            known = ", ".join(sorted(REGISTRY)) or "none registered"
            raise SpecError(f"unknown op {name!r}: registered ops are {known}")
        if not 1 <= layer < len(widths):
            raise SpecError(f"bad op {name}:{layer}: layers run from 1 to {len(widths) - 1}")
        inserted.append((name, layer))
    hidden = range(1, len(widths) - 1)
    for name, wanted in (("batch_norm", batch_norm), ("layer_norm", layer_norm)):
        if not isinstance(wanted, bool):
            raise SpecError(f"bad {name} {wanted!r:.40}: expected True or False")
        if wanted and not hidden:
            raise SpecError(f"--{name.replace('_', '-')} normalizes hidden layers, and this network has none")
        inserted += [(name, layer) for layer in hidden if wanted]
    rate = parse_decimal("--dropout", dropout, below_one=True) if dropout not in ("", None) else ""
    if rate and Decimal(rate) == 0:
        raise SpecError("bad --dropout 0: p is the probability of dropping a unit; leave --dropout out for none")
    if rate and not any(name == "dropout" for name, _ in inserted):
        inserted += [("dropout", layer) for layer in hidden]
    penalty = parse_decimal("--l2", l2) if l2 not in ("", None) else "0"
    unknown = sorted(set(hyperparameters) - set(HYPERPARAMETERS))
    if unknown:
        raise SpecError(f"unknown hyperparameter {unknown[0]!r}: choose from {', '.join(HYPERPARAMETERS)}")
    optimizer, settings = parse_optimizer(optimizer, hyperparameters)
    spec = NetworkSpec(widths, names, loss, reduction, tuple(sorted(set(inserted), key=lambda o: (o[1], o[0]))),
                       "" if penalty == "0" else penalty, optimizer, settings, rate)
    check_combination(spec)
    return spec
