"""Batch normalization: derived over the batch, proved against sympy.diff, generated, and checked
against PyTorch's BatchNorm1d (training mode, float64) for gradients and running statistics."""

import numpy as np
import pytest
from conftest import installed, needs, requires_torch
from test_torch_oracle import output_loss as torch_loss
from test_torch_oracle import targets, torch_activation

import symbp
from symbp.train import module_for

BN_NETWORK = {"layers": "2-3-1", "activation": "tanh,sigmoid", "loss": "half_se", "ops": ["batch_norm:1"]}


def test_the_derivation_shows_the_batch_norm_forward_map_and_its_compact_backward_map():
    text = symbp.derive(**BN_NETWORK).latex()
    assert r"\mu^{(1)} &= \frac{1}{m} \sum_{\text{samples}} z^{(1)}" in text
    assert r"\hat{x}^{(1)} &= \frac{- \mu^{(1)} + z^{(1)}}{\sqrt{{\sigma^{2}}^{(1)} + \varepsilon}}" in text
    # The form every course writes: γ/(m√(σ²+ε)) ⊙ (m ∂L/∂u − Σ∂L/∂u − x̂ ⊙ Σ(∂L/∂u ⊙ x̂)).
    assert r"s^{(1,1)} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}}" in text
    assert r"s^{(1,2)} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}} \odot \hat{x}^{(1)}" in text
    assert (r"\delta^{(1)} &= \frac{\gamma^{(1)} \left(m \frac{\partial L}{\partial u^{(1)}} - s^{(1,1)} - "
            r"s^{(1,2)} \hat{x}^{(1)}\right)}{m \sqrt{{\sigma^{2}}^{(1)} + \varepsilon}}") in text
    assert (r"\frac{\partial L}{\partial \gamma^{(1)}} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}} "
            r"\odot \hat{x}^{(1)}") in text
    assert r"\frac{\partial L}{\partial \beta^{(1)}} &= \sum_{\text{samples}} \frac{\partial L}{\partial u^{(1)}}" in text


def test_batch_norm_is_proved_over_a_batch_of_three_samples():
    """Two normalized units, three samples: every sample's output depends on every sample's input."""
    report = symbp.derive("1-2-1", "identity", "half_se", ops=["batch_norm:1"]).verify(samples=3)
    assert report.ok, report.summary()
    assert {check.param for check in report.checks} == {"W1", "b1", "gamma1", "beta1", "W2", "b2"}


def test_a_wrong_batch_norm_backward_map_is_caught_by_the_proof():
    d = symbp.derive("1-2-1", "identity", "half_se", ops=["batch_norm:1"])
    index = next(k for k, e in enumerate(d.backward) if e.lhs.name == "s1_2")  # Σ ∂L/∂u ⊙ x̂, used by δ⁽¹⁾
    wrong = d.backward[index]
    d.backward = (*d.backward[:index], type(wrong)(wrong.lhs, 2 * wrong.rhs), *d.backward[index + 1:])
    report = d.verify(samples=2)
    assert {check.param for check in report.checks if not check.ok} == {"W1"}


def test_layer_norm_derivation_and_proof_over_the_units_of_a_sample():
    d = symbp.derive("1-3-1", "identity", "half_se", ops=["layer_norm:1"])
    text = d.latex()
    assert r"\mu^{(1)} &= \frac{1}{3} \sum_{\text{units}} z^{(1)}" in text
    assert (r"s^{(1,2)} &= \sum_{\text{units}} \frac{\partial L}{\partial u^{(1)}} \odot \gamma^{(1)} "
            r"\odot \hat{x}^{(1)}") in text
    assert (r"\delta^{(1)} &= \frac{1}{3} \frac{3 \frac{\partial L}{\partial u^{(1)}} \gamma^{(1)} - s^{(1,1)} - "
            r"s^{(1,2)} \hat{x}^{(1)}}{\sqrt{{\sigma^{2}}^{(1)} + \varepsilon}}") in text
    report = d.verify()
    assert report.ok, report.summary()
    assert {check.param for check in report.checks} == {"W1", "b1", "gamma1", "beta1", "W2", "b2"}


if installed("torch"):
    import torch

# Random networks that normalize every hidden layer, with every activation among them.
CASES = [
    ("3-4-3-3-2", "tanh,relu,identity,softmax", "cross_entropy", "sum"),
    ("2-5-4-1", "leaky_relu(0.2),softplus,sigmoid", "bce", "mean"),
]


def torch_network(params, activations, normalized, kind="batch_norm", masks=None, p=0.0):
    """The same network in PyTorch, samples in rows as torch's BatchNorm1d and LayerNorm take them;
    with ``masks``, dropout as torch's does it, a ⊙ M/(1 − p), with these masks M."""
    layers = {}
    for index in normalized:
        make = torch.nn.BatchNorm1d if kind == "batch_norm" else torch.nn.LayerNorm
        norm = make(params[f"gamma{index}"].shape[0], dtype=torch.float64)
        with torch.no_grad():
            norm.weight.copy_(torch.tensor(params[f"gamma{index}"][:, 0]))
            norm.bias.copy_(torch.tensor(params[f"beta{index}"][:, 0]))
        layers[index] = norm
    weights = {name: torch.tensor(params[name], requires_grad=True) for name in params if name[0] in "Wb" and name[1:].isdigit()}

    def forward(X):
        a = torch.tensor(X).T
        for index, name in enumerate(activations, start=1):
            z = a @ weights[f"W{index}"].T + weights[f"b{index}"][:, 0]
            if index in layers:
                z = layers[index](z)
            a = torch.softmax(z, dim=1) if name == "softmax" else torch_activation(name)(z)
            if masks is not None and index in masks:
                a = a * torch.tensor(masks[index]).T / (1 - p)
        return a.T

    return forward, weights, layers


def torch_gradients(forward, weights, norms, X, Y, loss, reduction):
    for tensor in (*weights.values(), *(p for n in norms.values() for p in n.parameters())):
        tensor.grad = None
    total = torch_loss(forward(X), Y, loss, reduction)
    total.backward()
    grads = {name: tensor.grad.numpy() for name, tensor in weights.items()}
    for index, norm in norms.items():
        grads[f"gamma{index}"] = norm.weight.grad.numpy()[:, None]
        grads[f"beta{index}"] = norm.bias.grad.numpy()[:, None]
    return total.item(), grads


@requires_torch
@pytest.mark.parametrize("layers, activation, loss, reduction", CASES)
def test_batch_norm_gradients_and_running_statistics_equal_torch(layers, activation, loss, reduction):
    depth = layers.count("-")
    hidden = list(range(1, depth))
    module = module_for(symbp.generate(layers, activation, loss, reduction,
                                       ops=[f"batch_norm:{index}" for index in hidden]))
    rng = np.random.default_rng(depth)
    params = module.init_params(depth)
    X = rng.standard_normal((module.LAYERS[0], 6))
    Y = targets(rng, loss, module.LAYERS[-1], 6)
    forward, weights, norms = torch_network(params, module.ACTIVATIONS, hidden)
    expected_loss, expected = torch_gradients(forward, weights, norms, X, Y, loss, reduction)
    assert module.loss(params, X, Y) == pytest.approx(expected_loss, rel=1e-10)
    grads = module.gradients(params, X, Y)
    assert set(grads) == set(expected)
    # b⁽ˡ⁾ before a batch norm has gradient 0 exactly (the mean takes it away): both sides are rounding
    # noise there, so the absolute tolerance is relative to the largest gradient of the network.
    scale = max(np.abs(reference).max() for reference in expected.values())
    for name, reference in expected.items():
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-13 * scale, err_msg=name)
    assert all(np.abs(grads[f"b{index}"]).max() < 1e-13 * scale for index in hidden)
    # Ten steps of gradient descent on both: the same parameters and the same running statistics.
    rate = 0.05
    for norm in norms.values():
        norm.reset_running_stats()  # the forward pass above counted as a step in torch
    optimizer = torch.optim.SGD([*weights.values(), *(p for n in norms.values() for p in n.parameters())], lr=rate)
    for _ in range(10):
        module.train_step(params, X, Y, rate)
        optimizer.zero_grad()
        torch_loss(forward(X), Y, loss, reduction).backward()
        optimizer.step()
    for index, norm in norms.items():
        np.testing.assert_allclose(params[f"running_mean{index}"][:, 0], norm.running_mean.numpy(), rtol=1e-10)
        np.testing.assert_allclose(params[f"running_var{index}"][:, 0], norm.running_var.numpy(), rtol=1e-10)
        np.testing.assert_allclose(params[f"gamma{index}"][:, 0], norm.weight.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(params[f"beta{index}"][:, 0], norm.bias.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, tensor in weights.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    # Inference: the running statistics, as torch's eval mode.
    for norm in norms.values():
        norm.eval()
    with torch.no_grad():
        np.testing.assert_allclose(module.forward(params, X), forward(X).numpy(), rtol=1e-10)
    assert not np.allclose(module.forward(params, X), module.forward(params, X, training=True))


def test_the_in_place_training_loop_equals_train_step_with_batch_norm(tmp_path):
    module = module_for(symbp.generate(**BN_NETWORK))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((2, 8)), rng.uniform(0, 1, (1, 8))
    looped, stepped = module.init_params(1), module.init_params(1)
    module.train(looped, X, Y, epochs=4, learning_rate=0.1)
    for _ in range(4):
        module.train_step(stepped, X, Y, 0.1)
    for name in stepped:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14, err_msg=name)
    # A checkpoint keeps the running estimates, which inference needs.
    module.save_params(looped, tmp_path / "bn.npz")
    loaded = module.load_params(tmp_path / "bn.npz")
    assert set(loaded) == set(looped) and all(np.array_equal(loaded[k], looped[k]) for k in looped)
    assert not np.all(loaded["running_mean1"] == 0)
    # The tutorial-style Network keeps them as attributes too, and infers with them.
    network = module.Network(2, 3, 1, seed=1)
    network.backward(X, Y, 0.1)
    np.testing.assert_allclose(network.running_mean1, stepped_once(module, X, Y)["running_mean1"], rtol=1e-12)
    np.testing.assert_allclose(network.forward(X), module.forward(stepped_once(module, X, Y), X), rtol=1e-12)


def stepped_once(module, X, Y):
    params = module.init_params(1)
    module.train_step(params, X, Y, 0.1)
    return params


@requires_torch
@pytest.mark.parametrize("layers, activation, loss, reduction", CASES)
def test_layer_norm_gradients_equal_torch(layers, activation, loss, reduction):
    depth = layers.count("-")
    hidden = list(range(1, depth))
    module = module_for(symbp.generate(layers, activation, loss, reduction,
                                       ops=[f"layer_norm:{index}" for index in hidden]))
    rng = np.random.default_rng(depth + 1)
    params = module.init_params(depth + 1)
    X = rng.standard_normal((module.LAYERS[0], 5))
    Y = targets(rng, loss, module.LAYERS[-1], 5)
    forward, weights, norms = torch_network(params, module.ACTIVATIONS, hidden, "layer_norm")
    expected_loss, expected = torch_gradients(forward, weights, norms, X, Y, loss, reduction)
    assert module.loss(params, X, Y) == pytest.approx(expected_loss, rel=1e-10)
    grads = module.gradients(params, X, Y)
    assert set(grads) == set(expected)
    for name, reference in expected.items():
        scale = np.abs(reference).max()
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-12 * scale, err_msg=name)
    np.testing.assert_allclose(module.forward(params, X), forward(X).detach().numpy(), rtol=1e-10)
    # The in-place loop (train) takes the same steps as train_step.
    looped, stepped = module.init_params(0), module.init_params(0)
    module.train(looped, X, Y, epochs=3, learning_rate=0.05)
    for _ in range(3):
        module.train_step(stepped, X, Y, 0.05)
    for name in stepped:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_dropout_derivation_and_proof_with_its_mask_as_an_input():
    d = symbp.derive("2-3-1", "tanh,identity", "half_se", dropout="0.25")
    text = d.latex()
    assert r"d^{(1)} &= \frac{a^{(1)} M^{(1)}}{1 - p}" in text
    assert r"\delta^{(1)} &= (W^{(2)})^{T} \delta^{(2)} \odot \frac{M^{(1)}}{1 - p} \odot \tanh'(z^{(1)})" in text
    report = d.verify(samples=2)
    assert report.ok, report.summary()
    assert "--dropout 0.25" in d.spec.options()


@requires_torch
@pytest.mark.parametrize("layers, activation, loss, reduction", CASES)
def test_dropout_gradients_with_the_same_mask_equal_torch(layers, activation, loss, reduction):
    """torch's dropout multiplies by its own mask/(1 − p); here both sides use the same mask."""
    depth = layers.count("-")
    module = module_for(symbp.generate(layers, activation, loss, reduction, dropout="0.3", batch_norm=True))
    rng = np.random.default_rng(depth + 2)
    params = module.init_params(depth + 2)
    X = rng.standard_normal((module.LAYERS[0], 5))
    Y = targets(rng, loss, module.LAYERS[-1], 5)
    masks = module.draw_masks(rng, 5)
    assert set(masks) == set(range(1, depth)) and 0 < np.mean([m.mean() for m in masks.values()]) < 1
    hidden = list(range(1, depth))
    forward, weights, norms = torch_network(params, module.ACTIVATIONS, hidden, masks=masks, p=0.3)
    expected_loss, expected = torch_gradients(forward, weights, norms, X, Y, loss, reduction)
    assert module.loss(params, X, Y, masks) == pytest.approx(expected_loss, rel=1e-10)
    grads = module.gradients(params, X, Y, masks=masks)
    scale = max(np.abs(reference).max() for reference in expected.values())
    for name, reference in expected.items():
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-13 * scale, err_msg=name)
    # No dropout at inference, nor without masks.
    plain, _, _ = torch_network(params, module.ACTIVATIONS, hidden)
    with torch.no_grad():
        np.testing.assert_allclose(module.forward(params, X, training=True), plain(X).numpy(), rtol=1e-10)
    # train draws fresh masks from its rng at every step: train_step with the same draws gives the same.
    looped, stepped = module.init_params(0), module.init_params(0)
    module.train(looped, X, Y, epochs=3, learning_rate=0.05, rng=7)
    generator = np.random.default_rng(7)
    for _ in range(3):
        module.train_step(stepped, X, Y, 0.05, masks=module.draw_masks(generator, 5))
    for name in stepped:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14, err_msg=name)
    # Mini-batches: a shuffle, then masks for each batch, from the same generator.
    looped, stepped = module.init_params(0), module.init_params(0)
    module.train(looped, X, Y, epochs=2, learning_rate=0.05, batch_size=3, rng=8)
    generator = np.random.default_rng(8)
    for _ in range(2):
        order = generator.permutation(5)
        for batch in (order[:3], order[3:]):
            module.train_step(stepped, X[:, batch], Y[:, batch], 0.05, masks=module.draw_masks(generator, len(batch)))
    for name in stepped:
        np.testing.assert_allclose(looped[name], stepped[name], rtol=1e-12, atol=1e-14, err_msg=name)



def test_hinge_loss_derivation_and_proof():
    d = symbp.derive("1-3", "identity", "hinge")
    text = d.latex()
    assert r"t^{(1)} &= \sum_{\text{units}} y \odot a^{(1)}" in text
    report = d.verify(samples=2)
    assert report.ok, report.summary()


@pytest.mark.parametrize("layers, activation, reduction, extra", [
    ("3-4-3", "relu,identity", "sum", {"batch_norm": True}),
    ("2-5-4-3", "tanh,softplus,identity", "mean", {"layer_norm": True, "dropout": "0.2"}),
])
@requires_torch
def test_hinge_gradients_equal_torch_multi_margin_loss(layers, activation, reduction, extra):
    """torch's MultiMarginLoss divides each sample's Σ_{j ≠ y} max(0, 1 − a_y + aⱼ) by the number of classes C."""
    module = module_for(symbp.generate(layers, activation, "hinge", reduction, **extra))
    depth, classes = layers.count("-"), module.LAYERS[-1]
    rng = np.random.default_rng(depth)
    params = module.init_params(depth)
    X = rng.standard_normal((module.LAYERS[0], 6))
    labels = rng.integers(0, classes, 6)
    Y = np.eye(classes)[:, labels]
    masks = module.draw_masks(rng, 6) if "dropout" in extra else None
    kind = "layer_norm" if "layer_norm" in extra else "batch_norm"
    forward, weights, norms = torch_network(params, module.ACTIVATIONS, list(range(1, depth)), kind, masks, 0.2)
    total = torch.nn.MultiMarginLoss(reduction=reduction)(forward(X).T, torch.tensor(labels)) * classes
    total.backward()
    expected = {name: tensor.grad.numpy() for name, tensor in weights.items()}
    for index, norm in norms.items():
        expected[f"gamma{index}"] = norm.weight.grad.numpy()[:, None]
        expected[f"beta{index}"] = norm.bias.grad.numpy()[:, None]
    with_masks = {"masks": masks} if masks is not None else {}
    assert module.loss(params, X, Y, **with_masks) == pytest.approx(total.item(), rel=1e-10)
    grads = module.gradients(params, X, Y, **with_masks)
    scale = max(np.abs(reference).max() for reference in expected.values())
    assert scale > 0
    for name, reference in expected.items():
        np.testing.assert_allclose(grads[name], reference, rtol=1e-10, atol=1e-13 * scale, err_msg=name)


def test_documents_show_each_op_from_index_form_to_matrix_form(tmp_path):
    """Markdown, HTML and a tex document that pdflatex compiles with no error and nothing off the page."""
    import subprocess

    from test_document import _pdflatex

    from symbp.document import render_tex

    d = symbp.derive("2-3-3", "tanh,identity", "hinge", batch_norm=True, dropout="0.5")
    markdown = d.markdown()
    for title in ("Batch normalization in layer 1", "Dropout in layer 1"):
        assert title in markdown and title in d.html()
    assert r"\frac{\partial u^{(1)}_{js}}{\partial z^{(1)}_{jt}}" in markdown  # the derivative SymPy found
    assert r"\left(\frac{\partial L}{\partial u^{(1)}}\right)_{js}" in markdown  # the sum over the batch
    pdflatex = _pdflatex()
    (tmp_path / "ops.tex").write_text(render_tex(d), encoding="utf-8")
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "ops.tex"], cwd=tmp_path,
                            capture_output=True, text=True, check=False, timeout=120)
    log = (tmp_path / "ops.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    assert "Undefined control sequence" not in log and "Overfull \\hbox" not in log


@requires_torch
def test_gamma_and_beta_train_with_an_optimizer_as_torch_optim_does():
    """Adam over W, b, γ, β: 5 steps of the in-place train (and of train_step) equal torch.optim.Adam's."""
    module = module_for(symbp.generate("3-4-2", "tanh,sigmoid", "half_se", batch_norm=True, optimizer="adam"))
    rng = np.random.default_rng(5)
    params = module.init_params(5)
    X, Y = rng.standard_normal((3, 7)), rng.uniform(0, 1, (2, 7))
    forward, weights, norms = torch_network(params, module.ACTIVATIONS, [1])
    tensors = [*weights.values(), *norms[1].parameters()]
    optimizer = torch.optim.Adam(tensors, lr=0.01)
    stepped = {name: value.copy() for name, value in params.items()}
    state = module.init_state(stepped)
    module.train(params, X, Y, epochs=5, learning_rate=0.01)
    for _ in range(5):
        module.train_step(stepped, X, Y, 0.01, state)
        optimizer.zero_grad()
        torch_loss(forward(X), Y, "half_se", "sum").backward()
        optimizer.step()
    np.testing.assert_allclose(params["gamma1"][:, 0], norms[1].weight.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(params["beta1"][:, 0], norms[1].bias.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params["running_var1"][:, 0], norms[1].running_var.numpy(), rtol=1e-10)
    # μ⁽¹⁾ holds b1, which drifts by rounding noise (below)
    np.testing.assert_allclose(params["running_mean1"][:, 0], norms[1].running_mean.numpy(), rtol=1e-10, atol=1e-8)
    # b1's gradient is 0 exactly (batch norm takes the mean away): on both sides it is rounding noise,
    # which Adam divides by its own size, so b1 drifts by noise; it changes nothing downstream.
    for name, tensor in weights.items():
        noise = 1e-8 if name == "b1" else 1e-12
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-10, atol=noise, err_msg=name)
    for name in params:
        noise = 1e-8 if name in ("b1", "running_mean1") else 1e-14  # μ⁽¹⁾ holds b1
        np.testing.assert_allclose(stepped[name], params[name], rtol=1e-12, atol=noise, err_msg=name)


def numba_and_numpy(tmp_path, name, network):
    """The network's numba module (compiled on first use) and its NumPy module."""
    import importlib.util

    needs("numba", "the numba backend needs the fast extra: pip install .[fast]")
    path = tmp_path / f"{name}.py"
    symbp.generate(**network, backend="numba", output=path)
    spec = importlib.util.spec_from_file_location(name, path)
    compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiled)
    return compiled, module_for(symbp.generate(**network))


def noise(name, optimizer):
    """The bias before batch norm has gradient 0 exactly, so both backends hold rounding noise
    there, which Adam divides by its own size: b1 (and μ⁽¹⁾, which holds it) drift by noise."""
    return 1e-8 if optimizer and (name in ("b1", "running_mean1") or name.endswith("_b1")) else 1e-14


def assert_numba_trains_as_numpy(compiled, reference, X, Y, optimizer=False):
    """Full batch (log_every epochs per kernel call) and mini-batches with a short last batch:
    the logged losses, the parameters, the running estimates (and the optimizer's state) equal
    the NumPy backend's to 1e-12; both take their shuffles and dropout masks from the same rng."""
    for options in ({"log_every": 5, "rng": 2}, {"batch_size": 4, "rng": 3}):
        expected, got = reference.init_params(1), compiled.init_params(1)
        kept = {"state": reference.init_state(expected)} if optimizer else {}
        state = {"state": compiled.init_state(got)} if optimizer else {}
        assert reference.train(expected, X, Y, 12, 0.1, **options, **kept) == pytest.approx(
            compiled.train(got, X, Y, 12, 0.1, **options, **state), rel=1e-12)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=noise(name, optimizer),
                                       err_msg=name)
        for name in kept.get("state", {}):
            np.testing.assert_allclose(state["state"][name], kept["state"][name], rtol=1e-12,
                                       atol=noise(name, optimizer), err_msg=name)
        assert not np.all(got["running_mean1"] == 0)  # the kernel moved the running estimates


def test_layer_norm_in_the_numba_kernel_equals_numpy(tmp_path):
    """numba loops over the same program: full batch and mini-batches equal the NumPy backend to 1e-12."""
    network = {"layers": "3-4-2", "activation": "tanh,sigmoid", "loss": "half_se", "layer_norm": True}
    compiled, reference = numba_and_numpy(tmp_path, "layer_norm_numba", network)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 9)), rng.uniform(0, 1, (2, 9))
    for options in ({"log_every": 5}, {"batch_size": 4, "rng": 3}):
        expected, got = reference.init_params(1), compiled.init_params(1)
        assert reference.train(expected, X, Y, 12, 0.1, **options) == pytest.approx(
            compiled.train(got, X, Y, 12, 0.1, **options), rel=1e-12)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_batch_norm_in_the_numba_kernel_equals_numpy_with_its_running_statistics(tmp_path):
    """Batch norm alone, with Adam: several epochs per kernel call, the running estimates moved in it."""
    network = {"layers": "3-4-2", "activation": "tanh,sigmoid", "loss": "half_se", "batch_norm": True,
               "optimizer": "adam"}
    compiled, reference = numba_and_numpy(tmp_path, "batch_norm_numba", network)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 10)), rng.uniform(0, 1, (2, 10))
    assert_numba_trains_as_numpy(compiled, reference, X, Y, optimizer=True)
    # A batch of one sample has no variance: refused before any step (10 = 3 + 3 + 3 + 1).
    params = compiled.init_params(1)
    start = {name: value.copy() for name, value in params.items()}
    with pytest.raises(ValueError, match="2 or more samples per batch"):
        compiled.train(params, X, Y, 2, 0.1, batch_size=3)
    assert all(np.array_equal(params[name], start[name]) for name in start)
    with pytest.raises(ValueError, match="2 or more samples per batch"):
        reference.train(reference.init_params(1), X, Y, 2, 0.1, batch_size=3)


def test_batch_norm_and_dropout_in_the_numba_kernel_equal_numpy(tmp_path):
    """Layer 1 batch-normalized and dropped out, layer 2 dropped out only: the masks are drawn
    from train's rng as the NumPy train draws them, one kernel call per step."""
    network = {"layers": "3-4-3-2", "activation": "tanh,relu,sigmoid", "loss": "half_se", "dropout": "0.25",
               "ops": ["batch_norm:1", "dropout:1", "dropout:2"]}
    compiled, reference = numba_and_numpy(tmp_path, "batch_norm_dropout_numba", network)
    assert compiled.MASK_UNITS == {1: 4, 2: 3} and compiled.BATCH_NORMS == reference.BATCH_NORMS
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3, 10)), rng.uniform(0, 1, (2, 10))
    assert_numba_trains_as_numpy(compiled, reference, X, Y)
    # Other draws give other weights: the masks matter, so agreeing above is not by chance.
    first, second = compiled.init_params(1), compiled.init_params(1)
    compiled.train(first, X, Y, 3, 0.1, rng=2)
    compiled.train(second, X, Y, 3, 0.1, rng=5)
    assert not np.allclose(first["W1"], second["W1"])
