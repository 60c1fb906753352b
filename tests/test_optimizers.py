"""Optimizers (--optimizer, torch.optim's updates and defaults): options, derivation, generated modules."""

import json

import numpy as np
import pytest
from conftest import needs

import symbp
from symbp.cli import main
from symbp.network import make_spec
from symbp.train import load_module, module_for

BAD = [
    (["--optimizer", "adagrad"], "unknown optimizer 'adagrad'"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum is not a hyperparameter of --optimizer adam"),
    (["--momentum", "0.9"], "--momentum is not a hyperparameter of --optimizer sgd"),
    (["--optimizer", "rmsprop", "--betas", "0.9,0.99"], "--betas is not a hyperparameter of --optimizer rmsprop"),
    (["--optimizer", "momentum", "--eps", "1e-8"], "--eps is not a hyperparameter of --optimizer momentum"),
    (["--optimizer", "adam", "--betas", "1,0.999"], "bad --betas '1': must be below 1"),
    (["--optimizer", "adam", "--betas", "0.9,-0.1"], "bad --betas '-0.1': must not be negative"),
    (["--optimizer", "adam", "--betas", "0.9"], "bad --betas '0.9'"),
    (["--optimizer", "adam", "--eps", "0"], "bad --eps '0': must be above 0"),
    (["--optimizer", "adam", "--eps=-1e-8"], "bad --eps '-1e-8': must not be negative"),
    (["--optimizer", "rmsprop", "--alpha", "1.5"], "bad --alpha '1.5': must be below 1"),
    (["--optimizer", "nesterov", "--momentum", "0"], "bad --momentum '0': must be above 0 and below 1"),
    (["--weight-decay", "-0.01"], "bad --weight-decay '-0.01': must not be negative"),
    (["--optimizer", "adamw", "--weight-decay", "__import__('os')"], "bad --weight-decay"),
    (["--optimizer", "adam", "--eps", "1e999"], "bad --eps '1e999': must be at most 1e6"),
]


@pytest.mark.parametrize(("options", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_hyperparameters_are_refused_with_one_line(options, message, capsys, tmp_path):
    target = tmp_path / "net.py"
    assert main(["generate", "--layers", "2-1", *options, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"symbp: error: {message}") and err.count("\n") == 1, err
    assert not target.exists()


def test_a_negative_learning_rate_is_refused(capsys):
    assert main(["train", "--optimizer", "adam", "--learning-rate", "-0.1"]) == 2
    assert capsys.readouterr().err.startswith("symbp: error: --learning-rate must be a finite number above 0")


def test_the_api_takes_the_same_options_and_refuses_the_same_values():
    spec = make_spec("2-1", optimizer="adam", betas=(0.8, 0.99), eps=1e-6)
    assert spec.options().endswith("--optimizer adam --betas 0.8,0.99 --eps 1e-06")
    assert (spec.setting("betas"), spec.setting("eps"), spec.setting("weight_decay")) == ("0.8,0.99", "1e-06", "0.0")
    with pytest.raises(ValueError, match="--alpha is not a hyperparameter of --optimizer adam"):
        symbp.derive("2-1", optimizer="adam", alpha="0.9")
    with pytest.raises(ValueError, match="unknown hyperparameter 'lr'"):
        symbp.derive("2-1", optimizer="adam", lr="0.9")


def test_defaults_given_explicitly_are_the_plain_network():
    """Options equal to their defaults drop out of the canonical form, so the module is the same file."""
    assert make_spec("2-1", optimizer="sgd", weight_decay="0").options() == make_spec("2-1").options()
    assert make_spec("2-1", optimizer="adamw", weight_decay="0.010", eps="1e-8").options().endswith(
        "--optimizer adamw")
    assert make_spec("2-1").plain_sgd and not make_spec("2-1", weight_decay="0.1").plain_sgd


def test_the_derivation_prints_each_optimizer_from_its_equations():
    text = symbp.derive("2-2-1", optimizer="nesterov", momentum="0.8").latex()
    assert r"v_{W^{(1)}} &\leftarrow \frac{\partial L}{\partial W^{(1)}} + \mu v_{W^{(1)}}" in text
    assert r"W^{(1)} &\leftarrow W^{(1)} - \alpha \left(\frac{\partial L}{\partial W^{(1)}} + \mu v_{W^{(1)}}\right)" in text
    text = symbp.derive("2-2-1", optimizer="adamw", weight_decay="0.1").latex()
    assert r"t &\leftarrow t + 1" in text
    assert r"W^{(2)} &\leftarrow W^{(2)} - \alpha \lambda_{wd} W^{(2)}" in text
    assert r"m_{W^{(2)}} &\leftarrow \beta_{1} m_{W^{(2)}} + (1 - \beta_{1}) \frac{\partial L}{\partial W^{(2)}}" in text
    assert r"\hat{v}_{b^{(1)}} &= \frac{v_{b^{(1)}}}{1 - \beta_{2}^{t}}" in text
    assert r"b^{(1)} &\leftarrow b^{(1)} - \alpha \frac{\hat{m}_{b^{(1)}}}{\epsilon + \sqrt{\hat{v}_{b^{(1)}}}}" in text
    assert r"b^{(1)} &\leftarrow b^{(1)} - \alpha \lambda_{wd}" not in text  # biases are not decayed
    prose = symbp.derive("2-2-1", optimizer="adamw", weight_decay="0.1").markdown()
    assert "is decoupled" in prose and "This is not the L2 penalty" in prose
    prose = symbp.derive("2-2-1", weight_decay="0.1").markdown()
    assert "`--weight-decay 0.1` trains exactly as\n`--l2 0.1`" in prose


# -- generated modules against torch.optim -------------------------------------------------------

# Each optimizer with hyperparameters other than its defaults, and the torch.optim optimizer it equals.
SETTINGS = {
    "sgd": {"weight_decay": "0.05"},
    "momentum": {"momentum": "0.8", "weight_decay": "0.03"},
    "nesterov": {"momentum": "0.7", "weight_decay": "0.02"},
    "rmsprop": {"alpha": "0.9", "eps": "1e-6", "weight_decay": "0.01"},
    "adam": {"betas": "0.8,0.99", "eps": "1e-7", "weight_decay": "0.02"},
    "adamw": {"betas": "0.85,0.995", "eps": "1e-6", "weight_decay": "0.05"},
}


def torch_optimizer(torch, name, tensors, learning_rate, settings):
    """torch.optim's optimizer for ``name``; weight decay on the weights only, as symbp decays them."""
    decay = float(settings.get("weight_decay", 0))
    groups = [{"params": [t for n, t in tensors.items() if n.startswith("W")], "weight_decay": decay},
              {"params": [t for n, t in tensors.items() if not n.startswith("W")], "weight_decay": 0.0}]
    if name in ("sgd", "momentum", "nesterov"):
        momentum = float(settings.get("momentum", 0))
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, nesterov=name == "nesterov")
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=learning_rate, alpha=float(settings["alpha"]),
                                   eps=float(settings["eps"]))
    betas = tuple(float(b) for b in settings["betas"].split(","))
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind(groups, lr=learning_rate, betas=betas, eps=float(settings["eps"]))


# -- checkpoints and training ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_training_resumed_from_a_checkpoint_equals_uninterrupted_training(backend, tmp_path):
    if backend == "numba":
        needs("numba", "the numba backend needs the fast extra: pip install .[fast]")
    path = tmp_path / f"net_{backend}.py"
    symbp.generate("3-2-1", "tanh,sigmoid", "bce", "mean", output=path, backend=backend,
                   optimizer="adam", betas="0.8,0.99", weight_decay="0.01")
    module = load_module(path, f"resumed_{backend}")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 8))
    Y = rng.integers(0, 2, (1, 8)).astype(float)
    whole = module.init_params(2)
    module.train(whole, X, Y, 30, 0.05, state=module.init_state(whole))
    first = module.init_params(2)
    state = module.init_state(first)
    module.train(first, X, Y, 12, 0.05, state=state)
    checkpoint = tmp_path / "checkpoint.npz"
    module.save_params(first, str(checkpoint), state=state)
    with np.load(checkpoint) as saved:
        assert saved["state_t"][0, 0] == 12 and "state_m_W1" in saved.files
    resumed, resumed_state = module.load_params(str(checkpoint)), module.load_state(str(checkpoint))
    module.train(resumed, X, Y, 18, 0.05, state=resumed_state)
    assert resumed_state["t"][0, 0] == 30
    for name in module.PARAM_NAMES:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-12, atol=1e-15, err_msg=name)
    # without the state, the moments restart at 0: a different run, as the test above must be able to tell
    restarted = module.load_params(str(checkpoint))
    module.train(restarted, X, Y, 18, 0.05)
    assert max(np.abs(restarted[name] - whole[name]).max() for name in module.PARAM_NAMES) > 1e-6


def test_a_checkpoint_without_state_is_refused_by_load_state(tmp_path):
    module = module_for(symbp.generate("2-1", optimizer="momentum"))
    params = module.init_params(0)
    module.save_params(params, str(tmp_path / "p.npz"))
    with pytest.raises(ValueError, match="holds no optimizer state"):
        module.load_state(str(tmp_path / "p.npz"))
    with pytest.raises(ValueError, match=r"state\['v_W1'\] must have shape \(1, 2\)"):
        module.train_step(params, np.ones((2, 1)), np.ones((1, 1)), 0.1, {**module.init_state(params),
                                                                             "v_W1": np.zeros((2, 1))})


def test_symbp_train_uses_the_optimizer_and_saves_its_state(tmp_path, capsys):
    saved = tmp_path / "xor.npz"
    assert main(["train", "--optimizer", "adam", "--learning-rate", "0.05", "--epochs", "300", "--json",
                 "--save", str(saved)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["optimizer"] == "adam" and report["solved"]
    with np.load(saved) as arrays:
        assert arrays["state_t"][0, 0] == 300


def test_weight_decay_is_the_l2_penalty_for_sgd_and_not_for_adamw():
    """--weight-decay λ adds λW to the gradient (torch.optim), which is the penalty's gradient: with SGD
    the two train alike. AdamW decouples it, so it is not Adam with the penalty."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 6)), rng.uniform(0.1, 0.9, (2, 6))

    def trained(**options):
        module = module_for(symbp.generate("3-4-2", "tanh,sigmoid", "bce", **options))
        params = module.init_params(1)
        module.train(params, X, Y, 50, 0.05)
        return params

    penalised, decayed = trained(l2="0.1"), trained(weight_decay="0.1")
    for name in penalised:
        np.testing.assert_allclose(decayed[name], penalised[name], rtol=1e-12, atol=1e-15, err_msg=name)
    adam_penalised, adamw = trained(optimizer="adam", l2="0.1"), trained(optimizer="adamw", weight_decay="0.1")
    adam_decayed = trained(optimizer="adam", weight_decay="0.1")  # torch.optim.Adam: coupled, so the penalty
    for name in adam_penalised:
        np.testing.assert_allclose(adam_decayed[name], adam_penalised[name], rtol=1e-10, atol=1e-13, err_msg=name)
    assert max(np.abs(adamw[name] - adam_penalised[name]).max() for name in adamw) > 1e-3


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop"])
def test_the_standalone_document_with_an_optimizer_compiles(optimizer, tmp_path):
    import subprocess

    from test_document import _pdflatex

    from symbp.document import render_tex

    pdflatex = _pdflatex()
    source = tmp_path / "derivation.tex"
    source.write_text(render_tex(symbp.derive("2-3-2", "tanh,sigmoid", "bce", optimizer=optimizer,
                                              weight_decay="0.1")), encoding="utf-8")
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", source.name], cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=120)
    log = (tmp_path / "derivation.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    assert "Undefined control sequence" not in log and "Overfull \\hbox" not in log
