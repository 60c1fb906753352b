"""The network as the user wrote it: layer widths, activations, loss, reduction.

Parsing here is plain string work (split, isdigit, table look-up): no user text
is ever evaluated as Python. This module imports nothing of symbp; the checked spec is
built by :func:`symbp.network.make_spec`, which knows the activations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

LOSSES = ("half_se", "bce", "cross_entropy", "hinge")
REDUCTIONS = ("sum", "mean")
LOSS_OUTPUTS = {"bce": "sigmoid", "cross_entropy": "softmax"}  # the output layer a loss needs, where it needs one
MAX_WIDTH = 100_000
MAX_WIDTHS = 101  # an input and at most 100 weight layers

# The optimizers, as torch.optim defines them, with the hyperparameters each takes and their
# defaults: torch.optim's, except momentum's 0.9 (torch.optim.SGD's default 0 is plain SGD).
OPTIMIZERS = {
    "sgd": {"weight_decay": "0.0"},
    "momentum": {"momentum": "0.9", "weight_decay": "0.0"},
    "nesterov": {"momentum": "0.9", "weight_decay": "0.0"},
    "rmsprop": {"alpha": "0.99", "eps": "1e-08", "weight_decay": "0.0"},
    "adam": {"betas": "0.9,0.999", "eps": "1e-08", "weight_decay": "0.0"},
    "adamw": {"betas": "0.9,0.999", "eps": "1e-08", "weight_decay": "0.01"},
}
HYPERPARAMETERS = ("momentum", "betas", "eps", "alpha", "weight_decay")  # in the order options() writes them


# Ops the command line inserts into every hidden layer with one flag (per layer: --op NAME:LAYER).
NETWORK_FLAGS = {"batch_norm": "--batch-norm", "layer_norm": "--layer-norm", "dropout": "--dropout"}
NORMALIZATIONS = ("batch_norm", "layer_norm")


class SpecError(ValueError):
    """A network description that symbp refuses; the message is one line for the user."""


@dataclass(frozen=True)
class NetworkSpec:
    """A feed-forward network: widths n_0 … n_L, one activation per layer 1 … L, a loss."""

    layers: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str = "half_se"
    reduction: str = "sum"
    ops: tuple[tuple[str, int], ...] = ()  # registered ops inserted into layers: (name, layer)
    l2: str = ""  # λ of the weight penalty ½λ Σ‖W‖², as the decimal the user wrote; "" for none
    optimizer: str = "sgd"
    # (name, canonical text) of the hyperparameters given with values other than their defaults
    hyperparameters: tuple[tuple[str, str], ...] = ()
    dropout: str = ""  # p, the probability of dropping a unit (as torch's), as the decimal the user wrote

    @property
    def hidden(self) -> tuple[int, ...]:
        """The hidden layers, 1 … L − 1: where normalization and dropout go."""
        return tuple(range(1, self.depth))

    @property
    def depth(self) -> int:
        """L, the number of weight layers."""
        return len(self.layers) - 1

    def options(self) -> str:
        """The command-line options that describe this network, in canonical form."""
        acts = self.activations
        activation = acts[0] if len(set(acts)) == 1 else ",".join(acts)
        text = f"--layers {'-'.join(map(str, self.layers))} --activation {_quote(activation)} --loss {self.loss}"
        if self.reduction != "sum":
            text += f" --reduction {self.reduction}"
        for name, layer in self.ops:
            if name not in NETWORK_FLAGS or self._layers_of(name) != self.hidden:
                text += f" --op {name}:{layer}"
        for name, flag in NETWORK_FLAGS.items():
            if self._layers_of(name) == self.hidden and self.hidden:
                text += f" {flag}" + (f" {self.dropout}" if name == "dropout" else "")
            elif name == "dropout" and self.dropout:
                text += f" --dropout {self.dropout}"
        if self.l2:
            text += f" --l2 {self.l2}"
        if self.optimizer != "sgd":
            text += f" --optimizer {self.optimizer}"
        for name, value in self.hyperparameters:
            text += f" --{name.replace('_', '-')} {value}"
        return text

    def _layers_of(self, name: str) -> tuple[int, ...]:
        return tuple(layer for op, layer in self.ops if op == name)

    @property
    def plain_sgd(self) -> bool:
        """Gradient descent as the tutorial does it: no optimizer state, no weight decay."""
        return self.optimizer == "sgd" and not self.hyperparameters

    def setting(self, name: str) -> str:
        """A hyperparameter of the optimizer as canonical text: the one given, or its default."""
        return dict(self.hyperparameters).get(name, OPTIMIZERS[self.optimizer][name])


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_.,=-]+", text) else "'" + text.replace("'", "") + "'"


def parse_layers(text: str) -> tuple[int, ...]:
    """'2-2-1' -> (2, 2, 1). At least an input and an output width, each a positive integer."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"bad --layers {text!r}: expected widths joined by '-', e.g. 2-2-1")
    parts = text.strip().split("-")
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(parts) < 2:
        raise SpecError(f"bad --layers {shown!r}: need at least an input and an output width, e.g. 2-2-1")
    if len(parts) > MAX_WIDTHS:
        raise SpecError(f"bad --layers {shown!r}: {len(parts) - 1} weight layers; at most {MAX_WIDTHS - 1}")
    widths = []
    for part in parts:
        if not part.isdigit() or not part.isascii() or len(part) > 6:
            raise SpecError(f"bad --layers {shown!r}: {part[:20]!r} is not a positive integer width")
        widths.append(check_width(int(part), shown))
    return tuple(widths)


def check_width(width: int, shown: str) -> int:
    """A width between 1 and MAX_WIDTH, or the command line's error."""
    if width < 1 or width > MAX_WIDTH:
        raise SpecError(f"bad --layers {shown!r}: width {width} must be between 1 and {MAX_WIDTH}")
    return width


def layers_from(value: object) -> tuple[int, ...]:
    """What the API takes for layers, checked as the command line checks it: '2-2-1' or (2, 2, 1)."""
    if isinstance(value, str):
        return parse_layers(value)
    if isinstance(value, (tuple, list)) and value and all(type(w) is int for w in value):
        if len(value) < 2:
            raise SpecError(f"bad layers {tuple(value)!r}: need at least an input and an output width, e.g. 2-2-1")
        if len(value) > MAX_WIDTHS:
            raise SpecError(f"bad layers: {len(value) - 1} weight layers; at most {MAX_WIDTHS - 1}")
        return tuple(check_width(w, "-".join(map(str, value))) for w in value)
    raise SpecError(f"bad layers {value!r:.60}: give widths as a string such as '2-2-1' or a list of integers")


def require_text(name: str, value: object) -> str:
    """The API's string options (activation, loss, reduction) are strings, as on the command line."""
    if not isinstance(value, str):
        raise SpecError(f"bad {name} {value!r:.60}: expected a string")
    return value


def split_activations(text: str, depth: int) -> tuple[str, ...]:
    """One name for every layer, or a comma-separated list with one per layer."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("bad --activation: give a name such as sigmoid, or one per layer separated by commas")
    names = tuple(part.strip() for part in _split_top_level_commas(text))
    if len(names) == 1:
        return names * depth
    if len(names) != depth:
        raise SpecError(
            f"bad --activation {text!r}: {len(names)} activations for {depth} layers; give one, or one per layer"
        )
    return names


def _split_top_level_commas(text: str) -> list[str]:
    """Split on commas outside parentheses, so 'leaky_relu(0.1),sigmoid' stays two names."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def check_combination(spec: NetworkSpec) -> None:
    """Refuse networks whose pieces do not fit together, naming the piece and the fix."""
    *hidden, output = spec.activations
    for index, name in enumerate(hidden, start=1):
        if name == "softmax":
            raise SpecError(f"softmax is only allowed on the output layer, not on layer {index} of {spec.depth}")
    if output == "softmax" and spec.layers[-1] < 2:
        raise SpecError("softmax needs at least 2 output units (with 1 it is the constant 1)")
    if spec.loss == "cross_entropy" and output != LOSS_OUTPUTS["cross_entropy"]:
        raise SpecError(f"loss cross_entropy needs a softmax output layer, not {output}; "
                        "e.g. --activation tanh,softmax")
    if spec.loss == "bce" and output == "softmax":
        # Softmax outputs are not independent probabilities, and bce's 1/(1 − aⱼ) through the softmax
        # has no form in a that stays finite where one output rounds to 1.
        raise SpecError("loss bce treats each output unit as its own probability, which a softmax output is not: "
                        "use --loss cross_entropy with softmax, or a sigmoid output with bce")
    if spec.loss == "bce" and output != LOSS_OUTPUTS["bce"]:
        raise SpecError(f"loss bce needs outputs in (0, 1): a sigmoid output layer, not {output}")
    if spec.loss == "hinge" and output != "identity":
        raise SpecError(f"loss hinge scores the output layer's values as they are: use an identity output, not {output}")
    if spec.loss == "hinge" and spec.layers[-1] < 2:
        raise SpecError("loss hinge compares the true class's score with the others: it needs 2 or more outputs")
    for name, layer in spec.ops:
        if name in NETWORK_FLAGS and layer == spec.depth:
            raise SpecError(f"{name} goes into hidden layers, and layer {layer} is the output layer")
        if name == "dropout" and not spec.dropout:
            raise SpecError(f"dropout:{layer} needs its probability: add --dropout P, e.g. --dropout 0.5")
    for layer in spec.hidden:
        if all((name, layer) in spec.ops for name in NORMALIZATIONS):
            raise SpecError(f"layer {layer} has both batch_norm and layer_norm: choose one normalization")
    if spec.dropout and "dropout" not in {name for name, _ in spec.ops}:
        raise SpecError("--dropout drops hidden units, and this network has no hidden layer")


def parse_op(text: str) -> tuple[str, int]:
    """'scale:1' -> ('scale', 1): a registered op and the layer it goes into."""
    name, _, layer = text.partition(":")
    if not name or not layer.isdigit() or not layer.isascii():
        raise SpecError(f"bad --op {text!r}: expected NAME:LAYER, e.g. scale:1")
    return name, int(layer)


def parse_decimal(option: str, text: object, below_one: bool = False) -> str:
    """A non-negative decimal such as 0.01, in canonical text, read without evaluating anything."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    if not isinstance(text, str):
        raise SpecError(f"bad {option} {text!r:.40}: expected a decimal number such as 0.01")
    body = text.strip()
    digits = body.replace(".", "", 1)
    if not digits.isdigit() or not digits.isascii() or len(digits) > 12:
        raise SpecError(f"bad {option} {body[:40]!r}: expected a decimal number of at most 12 digits, such as 0.01")
    value = format(Decimal(body).normalize(), "f")
    if below_one and not Decimal(value) < 1:
        raise SpecError(f"bad {option} {body!r}: must be below 1")
    return value


_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?")


def parse_number(option: str, text: object) -> float:
    """A non-negative number such as 0.9 or 1e-8, read by a pattern (never evaluated), finite and at most 10⁶."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    if not isinstance(text, str):
        raise SpecError(f"bad {option} {text!r:.40}: expected a number such as 0.9 or 1e-8")
    body = text.strip()
    if body.startswith("-") and _NUMBER.fullmatch(body[1:]):
        raise SpecError(f"bad {option} {body!r}: must not be negative")
    if len(body) > 24 or not _NUMBER.fullmatch(body):
        raise SpecError(f"bad {option} {body[:40]!r}: expected a number such as 0.9 or 1e-8")
    value = float(Decimal(body))
    if not value <= 1e6:
        raise SpecError(f"bad {option} {body!r}: must be at most 1e6")
    return value


def _below_one(option: str, text: object, above_zero: bool = False) -> str:
    value = parse_number(option, text)
    if not (0 < value < 1 if above_zero else value < 1):
        raise SpecError(f"bad {option} {str(text).strip()!r}: must be {'above 0 and ' if above_zero else ''}below 1")
    return repr(value)


def _betas(text: object) -> str:
    if isinstance(text, (tuple, list)) and len(text) == 2:
        text = ",".join(repr(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else str(b) for b in text)
    if not isinstance(text, str) or text.count(",") != 1:
        raise SpecError(f"bad --betas {text!r:.40}: expected two numbers in [0, 1) joined by a comma, e.g. 0.9,0.999")
    first, second = (_below_one("--betas", part) for part in text.split(","))
    return f"{first},{second}"


def _positive(option: str, text: object) -> str:
    value = parse_number(option, text)
    if value <= 0:
        raise SpecError(f"bad {option} {str(text).strip()!r}: must be above 0")
    return repr(value)


_PARSERS = {
    "momentum": lambda text: _below_one("--momentum", text, above_zero=True),
    "betas": _betas,
    "eps": lambda text: _positive("--eps", text),
    "alpha": lambda text: _below_one("--alpha", text),
    "weight_decay": lambda text: repr(parse_number("--weight-decay", text)),
}


def parse_optimizer(optimizer: object, given: dict[str, object]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The optimizer's name and its hyperparameters that differ from the defaults, as canonical text.

    ``given`` maps hyperparameter names to what the user wrote (None: not given). A hyperparameter
    the optimizer does not take is an error, not ignored.
    """
    if optimizer is None:
        optimizer = "sgd"
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise SpecError(f"unknown optimizer {optimizer!r:.40}: choose one of {', '.join(OPTIMIZERS)}")
    takes = OPTIMIZERS[optimizer]
    settings = []
    for name in HYPERPARAMETERS:
        text = given.get(name)
        if text is None or text == "":
            continue
        option = f"--{name.replace('_', '-')}"
        if name not in takes:
            accepted = ", ".join(f"--{n.replace('_', '-')}" for n in takes)
            raise SpecError(f"{option} is not a hyperparameter of --optimizer {optimizer}; it takes {accepted}")
        value = _PARSERS[name](text)
        if value != _PARSERS[name](takes[name]):
            settings.append((name, value))
    return optimizer, tuple(settings)
