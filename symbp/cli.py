"""The ``symbp`` command: derive, generate, train.

Every error the user can cause is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import signal
import sys
import textwrap
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .activations import activation_names
from .api import derive, generate
from .codegen import plain_formula
from .datasets import DATASETS, DEFAULTS
from .document import FORMATS
from .example import worked_example
from .expressions import vocabulary
from .files import GENERATED_MARKER, atomic_path, head, writable, write_output
from .losses import get_loss
from .render import BACKENDS
from .spec import HYPERPARAMETERS, LOSS_OUTPUTS, LOSSES, OPTIMIZERS, REDUCTIONS, SpecError, parse_layers
from .train import (
    DEFAULT_SEED,
    Record,
    fit,
    load_module,
    module_for,
    success_rate,
)
from .version import __version__


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's lines as written, and names every option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, [], "", argparse.SUPPRESS) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Raises one line for main() to print as ``symbp: error: …``, instead of printing the usage block.

    ``context`` says where the words came from when they are not the command line (a file's header).
    """

    def __init__(self, *args: object, context: str = "", **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)
        self.context = context

    def error(self, message: str) -> None:
        raise SpecError(f"{self.context}: {message}" if self.context else message)


_HELP_WIDTH = 79
_UNBROKEN = "\N{NO-BREAK SPACE}"  # textwrap breaks lines only at ASCII whitespace


def _examples(*commands: str) -> str:
    return "examples:\n" + "\n".join(f"  {command}" for command in commands)


def _network_help() -> str:
    """Activations and losses, from the tables the code uses."""
    width = max(map(len, LOSSES))
    losses = []
    for name in LOSSES:
        loss = get_loss(name)
        needs = f", with a {LOSS_OUTPUTS[name]} output" if name in LOSS_OUTPUTS else ""
        if name == "hinge":
            needs = ", with an identity output and one-hot y; t = Σₖ yₖaₖ, the true class's score"
        formula = plain_formula(loss.per_unit).replace(" ", _UNBROKEN)  # wrapped around, never inside
        line = textwrap.fill(f"{name:<{width}}  {loss.title}{needs}: {formula}", _HELP_WIDTH,
                             initial_indent="  ", subsequent_indent=" " * (width + 4))
        losses.append(line.replace(_UNBROKEN, " "))
    return "\n".join([
        "activations (--activation, one for every layer or one per layer):",
        textwrap.fill(f"{', '.join(activation_names())} (softmax: output layer only), or a formula in z, e.g. "
                      f"'z/(1+exp(-z))' (quoted for the shell) that SymPy differentiates, using {vocabulary()}",
                      _HELP_WIDTH, initial_indent="  ", subsequent_indent="  "),
        "losses (--loss): ℓ(a, y) for one output unit and one sample, summed over the",
        "output units, then summed or averaged over the samples (--reduction):",
        *losses,
    ])


def _network_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--layers", required=required, help="widths from input to output, e.g. 2-2-1")
    parser.add_argument("--activation", default="sigmoid",
                        help="a name or a formula in z (listed below) for every layer, or one per layer, "
                             "comma-separated")
    parser.add_argument("--loss", default="half_se", help=f"{', '.join(LOSSES)} (defined below)")
    parser.add_argument("--reduction", default="sum", help=f"over the samples: {' or '.join(REDUCTIONS)}")
    parser.add_argument("--l2", default="", metavar="LAMBDA",
                        help="add the weight penalty ½λ Σ‖W‖² (weights, not biases) with this λ, e.g. 0.01")
    parser.add_argument("--op", action="append", default=[], metavar="NAME:LAYER",
                        help="insert a registered op into a layer (symbp.ops.register), e.g. batch_norm:1; "
                             "repeatable")
    _layer_options(parser)
    _optimizer_options(parser)


def _layer_options(parser: argparse.ArgumentParser) -> None:
    """Normalization and dropout in every hidden layer (one layer: --op batch_norm:1, --op dropout:2)."""
    parser.add_argument("--batch-norm", action="store_true", default=None,
                        help="batch normalization after every hidden layer's affine map (γ, β; ε = 1e-5, "
                             "running mean and variance as torch's BatchNorm1d)")
    parser.add_argument("--layer-norm", action="store_true", default=None,
                        help="layer normalization after every hidden layer's affine map (γ, β; ε = 1e-5)")
    parser.add_argument("--dropout", metavar="P",
                        help="inverted dropout after every hidden activation, P the probability of dropping a "
                             "unit (as torch's); with --op dropout:LAYER only in those layers")


def _optimizer_options(parser: argparse.ArgumentParser) -> None:
    """The optimizer and its hyperparameters, named as torch.optim names them."""
    parser.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default sgd), as in torch.optim")
    parser.add_argument("--momentum", help="momentum and nesterov: the momentum μ (default 0.9)")
    parser.add_argument("--betas", metavar="B1,B2", help="adam and adamw: β₁,β₂ (default 0.9,0.999)")
    parser.add_argument("--eps", help="rmsprop, adam, adamw: ε added to the denominator (default 1e-8)")
    parser.add_argument("--alpha", help="rmsprop: the smoothing constant (default 0.99)")
    parser.add_argument("--weight-decay", help="adamw: decoupled decay (default 0.01); the others, as "
                                               "torch.optim: wd·W added to the gradient (default 0)")


def _optimizer(args: argparse.Namespace) -> dict:
    """The optimizer and layer options as keyword arguments of symbp.derive and symbp.generate."""
    layers = {name: getattr(args, name) for name in ("batch_norm", "layer_norm", "dropout")
              if getattr(args, name, None) is not None}
    return {"optimizer": args.optimizer, **{name: getattr(args, name) for name in HYPERPARAMETERS}, **layers}


def _per_dataset(field: str) -> str:
    """A default that depends on --dataset, from the table train uses."""
    return "default per data set: " + ", ".join(f"{name} {getattr(d, field)}" for name, d in DEFAULTS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="symbp", description="Backpropagation derived by SymPy: LaTeX and NumPy code.",
                     epilog=_examples(
                         "symbp derive --layers 2-2-1 --activation sigmoid --loss half_se --verify",
                         "symbp generate --layers 2-2-1 -o xor.py",
                         "symbp train --dataset digits --plot digits.png",
                     ) + "\n\nsymbp COMMAND --help tells more about each command.")
    parser.add_argument("--version", action="version", version=f"symbp {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND", parser_class=_Parser)

    network = _network_help()
    p = commands.add_parser(
        "derive", help="print the derivation as LaTeX or Markdown, and prove it",
        description="Derive backpropagation for a network with SymPy and print it.",
        epilog=network + "\n\n" + _examples(
            "symbp derive --layers 2-2-1 --activation sigmoid --loss half_se --verify",
            "symbp derive --layers 2-3-1 --activation 'z/(1+exp(-z))' --format markdown",
            "symbp derive --layers 2-2-1 --format tex --example -o xor.tex",
        ))
    _network_options(p)
    p.add_argument("--verify", action="store_true", help="prove each gradient entry against sympy.diff")
    p.add_argument("--format", default="latex", choices=FORMATS,
                   help="latex: the equations; markdown: prose with $$ blocks; tex: a standalone LaTeX document; "
                        "html: a self-contained web page")
    p.add_argument("--example", action="store_true",
                   help="add a worked example to markdown, tex and html: one sample's numbers, computed by the generated "
                        "module, next to each formula (networks of at most 4 units per layer)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the worked example's init_params seed")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite a file symbp did not write")

    p = commands.add_parser(
        "generate", help="write the NumPy training module",
        description="Write a training module (forward, loss, gradients, train) for a network.",
        epilog=network + "\n\n" + _examples(
            "symbp generate --layers 2-2-1 --activation sigmoid --loss half_se -o xor.py",
            "symbp generate --layers 2-8-1 --backend numba -o fast.py",
            "symbp generate --check generated/*.py",
        ))
    _network_options(p, required=False)
    p.add_argument("-o", "--output", help="the module's path, e.g. generated/xor.py")
    p.add_argument("--force", action="store_true", help="overwrite a file symbp did not generate")
    p.add_argument("--backend", default="numpy", choices=BACKENDS,
                   help="numpy: numpy only; numba: train's loop compiled by numba (pip install symbp[fast]); "
                        "jax: jax.numpy, jit-compiled, data parallel over devices (pip install symbp[jax])")
    p.add_argument("--check", nargs="+", metavar="PATH",
                   help="exit 1 if a generated file differs from what this symbp generates from its header")

    p = commands.add_parser(
        "train", help="train a generated network on a data set (default: XOR)",
        description="Generate a network and train it on a data set, reporting loss and accuracy.",
        epilog=network + "\n\n" + _examples(
            "symbp train",
            "symbp train --dataset digits --epochs 50 --plot digits.png",
            "symbp train --layers 2-2-1 --learning-rate 0.1 --seeds 100",
        ))
    p.add_argument("--dataset", default="xor", choices=DATASETS,
                   help="xor (the document's), or scikit-learn's digits or breast_cancer (pip install symbp[datasets])")
    p.add_argument("--layers", help=f"widths; {_per_dataset('layers')}")
    p.add_argument("--activation", help=_per_dataset("activation"))
    p.add_argument("--loss", help=f"{', '.join(LOSSES)} (defined below); {_per_dataset('loss')}")
    p.add_argument("--reduction", help=f"{' or '.join(REDUCTIONS)}; {_per_dataset('reduction')}")
    p.add_argument("--l2", metavar="LAMBDA", help="the weight penalty's λ (½λ Σ‖W‖², weights only); default none")
    _layer_options(p)
    _optimizer_options(p)
    p.add_argument("--module", help="a generated module to train (default: generate one for --layers)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="the generated module's backend (default numpy; with jax, --dtype float64 switches on "
                        "JAX's x64 mode)")
    p.add_argument("--epochs", type=int, help=_per_dataset("epochs"))
    p.add_argument("--learning-rate", type=float, help=_per_dataset("learning_rate"))
    p.add_argument("--batch-size", type=int, help="mini-batch SGD with batches of this size; "
                   + _per_dataset("batch_size").replace("None", "full batch"))
    p.add_argument("--init", choices=("normal", "fan_in"),
                   help="normal: the document's standard-normal weights; fan_in: variance 1/inputs, zero biases; "
                        + _per_dataset("init"))
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="initial weights, batches and the test split")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="the precision training computes in, end to end: parameters, state and data")
    p.add_argument("--devices", type=int, metavar="N",
                   help="with --backend jax: split every batch along the samples over the first N devices JAX "
                        "sees (data parallel; the result is one device's); the batch size must divide by N")
    p.add_argument("--log-every", type=int, help="progress every N epochs (default: about ten lines)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of progress")
    p.add_argument("--save", metavar="FILE.npz", help="write the trained weights (and input scaling) here")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw loss and accuracy curves (train and test), a confusion matrix on the test split, "
                        "and the decision surface for two inputs (pip install symbp[plot])")
    p.add_argument("--compare", action="store_true",
                   help="also fit scikit-learn's MLPClassifier with the same hidden layers on the same split")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="xor only: train from seeds 0 … N-1 and count how often XOR is solved")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error the user can cause is one line on stderr and exit status 2."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # `symbp` alone asks what it can do
            parser.print_help()
            return 0
        return {"derive": _derive, "generate": _generate, "train": _train}[args.command](args)
    except (SpecError, ValueError, FloatingPointError, NotImplementedError) as error:
        return _fail(str(error))
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except MemoryError:
        return _fail("not enough memory for this network or data; try smaller layers")
    except RecursionError:
        return _fail("the network is too deep for this step; try fewer layers")


def _fail(message: str) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"symbp: error: {first}", file=sys.stderr)
    return 2


def _derive(args: argparse.Namespace) -> int:
    from .document import render

    derivation = derive(args.layers, args.activation, args.loss, args.reduction, args.op, args.l2,
                        **_optimizer(args))
    if args.example and args.format == "latex":
        raise SpecError("--example is for documents: add --format markdown, tex or html")
    if args.seed < 0:
        raise SpecError(f"bad --seed {args.seed}: it must be 0 or more")
    example = worked_example(derivation, args.seed) if args.example else None
    report = derivation.verify() if args.verify else None
    text = render(derivation, args.format, report, example)
    if report is not None and args.format == "latex":
        text += "\n\n" + "\n".join(f"% {line}" for line in report.summary().splitlines())
    if args.output:
        write_output(args.output, text + "\n", args.force)
    else:
        print(text)
    if report is not None and not report.ok:
        print(f"symbp: error: {report.summary()}", file=sys.stderr)
        return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args.check)
    if args.layers is None or args.output is None:
        raise SpecError("generate needs --layers and -o PATH (or --check PATH...)")
    generate(args.layers, args.activation, args.loss, args.reduction, output=args.output, force=args.force,
             backend=args.backend, ops=args.op, l2=args.l2, **_optimizer(args))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def header_options(path: str) -> list[str]:
    """The options recorded in a generated file's header (read from its first bytes only)."""
    for line in head(path):
        if line.startswith(GENERATED_MARKER) and " from: symbp generate " in line:
            try:
                return shlex.split(line.split(" from: symbp generate ", 1)[1])
            except ValueError as error:
                raise SpecError(f"{path}: its header cannot be read ({error})") from None
    raise SpecError(f"{path}: no symbp header; was it generated by symbp?")


def regenerate(path: str) -> tuple[list[str], str]:
    """The header's options and what this symbp generates from them; the options are parsed strictly."""
    options = _Parser(prog="symbp generate", add_help=False, context=f"{path}: header")
    _network_options(options)
    options.add_argument("--backend", default="numpy", choices=BACKENDS)
    recorded = header_options(path)
    spec = options.parse_args(recorded)
    return recorded, generate(spec.layers, spec.activation, spec.loss, spec.reduction, backend=spec.backend,
                              ops=spec.op, l2=spec.l2, **_optimizer(spec))


def _body(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read {path!r}: {error}") from None


def _check(paths: list[str]) -> int:
    stale = []
    for path in paths:
        recorded, expected = regenerate(path)
        if _body(path) != expected:
            stale.append(path)
            print(f"{path}: stale or edited; regenerate with: symbp generate "
                  f"{shlex.join(recorded)} -o {path}", file=sys.stderr)
    if not stale:
        print(f"{len(paths)} generated file(s) up to date", file=sys.stderr)
    return 1 if stale else 0


def _train(args: argparse.Namespace) -> int:
    from .datasets import load

    defaults = DEFAULTS[args.dataset]
    epochs = defaults.epochs if args.epochs is None else args.epochs
    learning_rate = defaults.learning_rate if args.learning_rate is None else args.learning_rate
    batch_size = defaults.batch_size if args.batch_size is None else args.batch_size
    init = args.init or defaults.init
    for option, count in (("--epochs", epochs), ("--log-every", args.log_every), ("--batch-size", batch_size),
                          ("--seeds", args.seeds), ("--devices", args.devices)):
        if count is not None and count < 1:
            raise SpecError(f"{option} must be at least 1, got {count}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise SpecError(f"--learning-rate must be a finite number above 0, got {learning_rate}")
    if args.seed < 0:
        raise SpecError(f"--seed must be at least 0, got {args.seed}")
    given = [f"--{name.replace('_', '-')}" for name in ("layers", "activation", "loss", "reduction", "l2",
                                                        "optimizer", "backend", *HYPERPARAMETERS, "batch_norm",
                                                        "layer_norm", "dropout")
             if getattr(args, name) is not None]
    if args.module and given:
        raise SpecError(f"--module trains the network its header names; drop {' '.join(given)}")
    if args.seeds is not None and args.dataset != "xor":
        raise SpecError("--seeds counts how often XOR is solved; use it with --dataset xor")
    for path in (args.save, args.plot):
        if path:
            writable(path)
    if args.plot:
        from .plots import require_matplotlib

        require_matplotlib()
    data = load(args.dataset, args.seed)
    if args.module:
        module = _importing(_trusted_module, args.module)
    else:
        layers = args.layers or defaults.layers
        _check_size(layers)
        module = _importing(module_for, generate(layers, args.activation or defaults.activation,
                                                 args.loss or defaults.loss, args.reduction or defaults.reduction,
                                                 backend=args.backend or "numpy", l2=args.l2 or "",
                                                 **_optimizer(args)))
    if args.devices is not None and not hasattr(module, "jax"):
        raise SpecError("--devices splits batches over JAX's devices: use it with --backend jax")
    if args.devices is not None and args.seeds is not None:
        raise SpecError("--seeds trains XOR on one device; drop --devices")
    if args.dtype == "float64" and hasattr(module, "jax"):  # a JAX module computes in float64 in x64 mode only
        module.jax.config.update("jax_enable_x64", True)
    network = "-".join(map(str, module.LAYERS))
    layers = [*(["batch norm"] if hasattr(module, "BATCH_NORMS") else []),
              *([f"dropout {module.DROPOUT}"] if hasattr(module, "DROPOUT") else [])]
    network += f" ({', '.join(layers)})" if layers else ""
    optimizer = f", {module.OPTIMIZER}" if hasattr(module, "OPTIMIZER") else ""
    setting = f"{epochs} epochs{optimizer}, learning rate {learning_rate}"
    if args.seeds is not None:
        solved = success_rate(module, args.seeds, epochs, learning_rate)
        print(f"{network} on XOR, {setting}: solved from {solved} of {args.seeds} seeds")
        return 0
    batches = "full batch" if batch_size is None else f"batches of {batch_size}"
    batches += "" if args.devices is None else f" split over {args.devices} device{'s' * (args.devices > 1)}"
    if not args.json:
        print(f"training {network} ({', '.join(module.ACTIVATIONS)}; {module.LOSS}, {module.REDUCTION}) on "
              f"{args.dataset}: {data.X_train.shape[1]} training and {data.X_test.shape[1]} test samples, "
              f"{setting}, {batches}, {init} init, seed {args.seed}, {args.dtype}")

    def progress(record: Record) -> None:
        test_loss = "" if record.test_loss is None else f"  test loss {record.test_loss:.6g}"
        print(f"epoch {record.epoch:>6}  loss {record.loss:.6g}{test_loss}  train accuracy "
              f"{record.train_accuracy:.4f}  test accuracy {record.test_accuracy:.4f}", flush=True)

    with warnings.catch_warnings():  # a diverging run ends in one line (FloatingPointError), not warnings
        warnings.simplefilter("ignore", RuntimeWarning)
        result = fit(module, data, epochs, learning_rate, batch_size, args.seed, init, args.log_every,
                     None if args.json else progress, args.dtype, args.devices)
    report = {
        "dataset": args.dataset, "layers": network, "activation": ",".join(module.ACTIVATIONS),
        "loss": module.LOSS, "reduction": module.REDUCTION, "optimizer": getattr(module, "OPTIMIZER", "sgd"),
        "epochs": epochs, "learning_rate": learning_rate,
        "batch_size": batch_size, "init": init, "seed": args.seed, "dtype": args.dtype,
        **({} if args.devices is None else {"devices": args.devices}),
        "seconds": round(result.seconds, 4),
        "final_loss": result.final_loss, "train_accuracy": result.train_accuracy,
        "test_accuracy": result.test_accuracy,
    }
    if result.final.test_loss is not None:
        report["test_loss"] = result.final.test_loss
    if args.dataset == "xor":
        predictions = module.forward(result.params, data.X_train).ravel()
        report["predictions"] = [float(p) for p in predictions]
        report["solved"] = bool(np.all(np.abs(predictions - data.labels_train) < 0.2))
    if args.compare:
        report["mlpclassifier"] = _mlp_classifier(module.LAYERS[1:-1], data, args.seed)
    title = (f"symbp train --dataset {args.dataset}: {network} ({', '.join(module.ACTIVATIONS)})\n"
             f"{setting}, {batches}; test accuracy {result.test_accuracy:.3f}")
    _write_results(module, result, data, args.save, args.plot, title)
    if args.save:
        report["saved"] = args.save
    if args.plot:
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"trained in {result.seconds:.2f} s: loss {result.final_loss:.6g}, train accuracy "
          f"{result.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}")
    if args.dataset == "xor":
        print("predictions for (0,0) (0,1) (1,0) (1,1):", " ".join(f"{p:.4f}" for p in report["predictions"]))
        print("XOR solved: every prediction within 0.2 of its target" if report["solved"]
              else "XOR not solved: some prediction is 0.2 or more from its target")
    if args.compare:
        mlp = report["mlpclassifier"]
        print(f"scikit-learn MLPClassifier{mlp['hidden_layer_sizes']} on the same split: test accuracy "
              f"{mlp['test_accuracy']:.4f} in {mlp['seconds']:.2f} s")
    for key, what in (("saved", "weights"), ("plot", "plot")):
        if key in report:
            print(f"wrote {what} to {report[key]}")
    return 0


MAX_TRAIN_PARAMS = 50_000_000  # 400 MB of float64 weights, and as much again for their gradients


def _check_size(layers: str) -> None:
    """Refuse, before allocating, a network too large to train on a machine like this one."""
    widths = parse_layers(layers)
    count = sum(n * (m + 1) for m, n in itertools.pairwise(widths))
    if count > MAX_TRAIN_PARAMS:
        raise SpecError(f"--layers {layers} has {count:,} parameters; symbp train takes at most "
                        f"{MAX_TRAIN_PARAMS:,} (generate the module and train it your own way)")


EXTRAS = {"numba": "fast", "scipy": "fast", "jax": "jax"}  # a backend's import, and the extra that installs it


def _importing(load, source: str):
    """``load(source)``, a generated module; a backend's missing package is one line naming the extra."""
    try:
        return load(source)
    except ModuleNotFoundError as error:
        top = (error.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        raise SpecError(f"this module's backend needs {top}: pip install 'symbp[{EXTRAS[top]}]'") from None


def _trusted_module(path: str):
    """Import a module only if it is exactly what this symbp generates from its header: nothing
    else is ever run, so a file that only claims to be generated is refused, not executed."""
    if not Path(path).is_file():
        raise SpecError(f"no such module {path!r}")
    recorded, expected = regenerate(path)
    if _body(path) != expected:
        raise SpecError(f"{path} is not what symbp generates from its header (edited, or from another "
                        f"version); regenerate it with: symbp generate {shlex.join(recorded)} -o {path}")
    return load_module(path)


def _mlp_classifier(hidden: tuple[int, ...], data, seed: int) -> dict:
    """scikit-learn's MLPClassifier, defaults but for the hidden layers, on the same split."""
    import time
    import warnings

    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise SpecError("--compare needs scikit-learn: pip install 'symbp[datasets]'") from None
    classifier = MLPClassifier(hidden_layer_sizes=tuple(hidden) or (100,), random_state=seed)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(data.X_train.T, data.labels_train)
    seconds = time.perf_counter() - began
    return {"hidden_layer_sizes": list(classifier.hidden_layer_sizes), "seconds": round(seconds, 4),
            "test_accuracy": float(classifier.score(data.X_test.T, data.labels_test))}


def _write_results(module, result, data, save: str | None, plot: str | None, title: str) -> None:
    """The weights (with the input scaling) and the plot, each into a temporary file first: both are
    renamed into place only once both are written, so a failure leaves neither behind."""
    with ExitStack() as stack:
        if save:
            temp = stack.enter_context(atomic_path(save, suffix=".npz"))  # np.savez would add .npz to a name
            kept = {} if result.state is None else {"state": result.state}  # the optimizer's, to resume from
            module.save_params(result.params, str(temp), input_mean=data.input_mean, input_scale=data.input_scale,
                               layers=np.array(module.LAYERS), **kept)
        if plot:
            from .plots import plot_training

            plot_training(stack.enter_context(atomic_path(plot, suffix=".png")), module, result, data, title)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so temporary files are removed on the way out


def entry() -> None:
    """The ``symbp`` command: Ctrl-C is a short message and exit status 130, never a traceback."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("symbp: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `symbp derive … | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
