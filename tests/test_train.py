"""symbp train on data sets: mini-batches, held-out accuracy, progress, --json, --save, --plot."""

import json
import os
import re

import numpy as np
import pytest
from conftest import ROOT, needs, run_main

import symbp
from symbp.datasets import DEFAULTS, Dataset, load
from symbp.train import fit, load_module, module_for

EXTRAS = "pip install .[datasets,plot]"


def run(*args, cwd=ROOT):
    return run_main("train", *args, cwd=cwd)


def default_module(name):
    d = DEFAULTS[name]
    return module_for(symbp.generate(d.layers, d.activation, d.loss, d.reduction))


def test_xor_is_solved_from_every_one_of_20_seeds_with_the_defaults():
    d = DEFAULTS["xor"]
    module, data = default_module("xor"), load("xor")
    for seed in range(20):
        result = fit(module, data, d.epochs, d.learning_rate, d.batch_size, seed, d.init)
        predictions = module.forward(result.params, data.X_train).ravel()
        assert np.all(np.abs(predictions - data.labels_train) < 0.2), (seed, predictions)
        assert result.test_accuracy == 1.0


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_default_settings_reach_95_percent_on_the_held_out_split(dataset):
    needs("sklearn", EXTRAS)
    result = run("--dataset", dataset, "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object, no progress
    report = json.loads(lines[0])
    assert report["test_accuracy"] >= 0.95, report
    assert report["train_accuracy"] >= report["test_accuracy"] - 0.05
    for key in ("dataset", "layers", "activation", "loss", "epochs", "learning_rate", "seconds", "final_loss",
                "train_accuracy", "test_accuracy"):
        assert key in report
    data = load(dataset)
    assert data.X_test.shape[1] == -(-(data.X_train.shape[1] + data.X_test.shape[1]) // 4)  # a quarter, rounded up
    # standardized with the training split's statistics
    np.testing.assert_allclose(data.X_train.mean(axis=1), 0, atol=1e-12)
    assert abs(data.X_test.mean()) < 0.1


def test_xor_json_has_the_four_predictions():
    report = json.loads(run("--json").stdout)
    assert report["dataset"] == "xor" and report["layers"] == "2-4-1" and report["solved"] is True
    assert len(report["predictions"]) == 4 and report["batch_size"] is None
    assert [p > 0.5 for p in report["predictions"]] == [False, True, True, False]


def test_progress_does_not_flood_the_terminal():
    result = run()
    assert result.returncode == 0
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert 5 <= len(epochs) <= 12, result.stdout
    assert all("loss" in line and "test accuracy" in line for line in epochs)


def small_split():
    """Three classes in four inputs with a held-out split, made here (no scikit-learn needed)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 60)
    X = 1.5 * rng.standard_normal((4, 3))[:, labels] + rng.standard_normal((4, 60))
    Y = np.eye(3)[labels].T
    return Dataset("blobs", X[:, :45], Y[:, :45], labels[:45], X[:, 45:], Y[:, 45:], labels[45:],
                   np.zeros((4, 1)), np.ones((4, 1)))


def test_each_record_measures_the_parameters_after_its_epoch():
    """A logged line's loss and accuracies are those of one set of parameters: the ones a run of
    exactly that many epochs ends with (mini-batches draw the same shuffles however runs are cut)."""
    module = module_for(symbp.generate("4-5-3", "tanh,softmax", "cross_entropy", "mean"))
    data = small_split()
    logged = []
    result = fit(module, data, 40, 0.3, batch_size=8, seed=1, init="fan_in", log_every=10, progress=logged.append)
    assert [record.epoch for record in logged] == [0, 10, 20, 30, 40]
    assert logged[-1] == result.history[-1] and [r.epoch for r in result.history] == list(range(41))
    assert logged[0].train_accuracy < logged[-1].train_accuracy  # the accuracies move while the loss falls
    for record in logged:
        params = fit(module, data, record.epoch, 0.3, batch_size=8, seed=1, init="fan_in").params
        assert record.loss == module.loss(params, data.X_train, data.Y_train)
        assert record.test_loss == module.loss(params, data.X_test, data.Y_test)
        assert record.train_accuracy == np.mean(module.forward(params, data.X_train).argmax(axis=0) == data.labels_train)
        assert record.test_accuracy == np.mean(module.forward(params, data.X_test).argmax(axis=0) == data.labels_test)


def test_progress_lines_report_loss_and_accuracy_of_the_same_epoch():
    result = run("--log-every", "50")  # 10,000 epochs, measured every 50
    assert result.returncode == 0, result.stderr
    pattern = r"epoch +(\d+)  loss (\S+)  train accuracy (\S+)  test accuracy (\S+)$"
    lines = [re.match(pattern, line) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert [int(line[1]) for line in lines] == list(range(0, 10_001, 50))
    lines = lines[:13]  # up to epoch 600, while XOR is being learned: an accuracy 50 epochs stale would show
    assert len({line[3] for line in lines}) == 3, [line[3] for line in lines]
    module, data = default_module("xor"), load("xor")
    for line in lines:
        params = fit(module, data, int(line[1]), 1.0).params
        predictions = module.forward(params, data.X_train).ravel()
        assert float(line[2]) == pytest.approx(module.loss(params, data.X_train, data.Y_train), rel=1e-5)
        assert float(line[3]) == float(line[4]) == np.mean((predictions > 0.5) == data.labels_train)


def test_mini_batches_are_steps_over_a_shuffled_order():
    """train(batch_size=…) equals train_step over the batches of the same permutation."""
    module = module_for(symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", "mean"))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 10))
    Y = np.eye(2)[:, rng.integers(0, 2, 10)]
    trained, stepped = module.init_params(2, "fan_in"), module.init_params(2, "fan_in")
    module.train(trained, X, Y, epochs=3, learning_rate=0.3, batch_size=4, rng=7)
    order_rng = np.random.default_rng(7)
    for _ in range(3):
        order = order_rng.permutation(10)
        for start in range(0, 10, 4):  # batches of 4, 4 and 2
            batch = order[start:start + 4]
            module.train_step(stepped, X[:, batch], Y[:, batch], 0.3)
    for name in module.PARAM_NAMES:
        np.testing.assert_allclose(trained[name], stepped[name], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="batch_size"):
        module.train(trained, X, Y, 1, 0.1, batch_size=0)


def test_fan_in_init_scales_weights_and_zeroes_biases():
    module = load_module(ROOT / "generated" / "digits_64_128_10.py", "digits_64_128_10")
    params = module.init_params(0, "fan_in")
    assert 0.8 < params["W1"].std() * np.sqrt(64) < 1.2 and 0.8 < params["W2"].std() * np.sqrt(128) < 1.2
    assert not params["b1"].any() and not params["b2"].any()
    np.testing.assert_array_equal(module.init_params(0)["W1"], module.init_params(0, "normal")["W1"])
    with pytest.raises(ValueError, match="init"):
        module.init_params(0, "xavier")


def test_saved_weights_load_back_into_the_module(tmp_path):
    target = tmp_path / "xor-weights"  # no .npz: the file is still written exactly here
    result = run("--json", "--save", str(target))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(os.listdir(tmp_path)) == ["xor-weights"]
    module = module_for(symbp.generate("2-4-1", "sigmoid", "half_se"))
    params = module.load_params(str(target))
    X = np.array([[0, 0, 1, 1], [0, 1, 0, 1]], dtype=float)
    np.testing.assert_allclose(module.forward(params, X).ravel(), report["predictions"], rtol=1e-12)
    with np.load(target) as saved:
        assert {"input_mean", "input_scale", "layers"} <= set(saved.files)
    wrong = module_for(symbp.generate("2-2-1", "sigmoid", "half_se"))
    with pytest.raises(ValueError, match="shape"):
        wrong.load_params(str(target))


def test_digits_weights_come_with_the_input_scaling(tmp_path):
    needs("sklearn", EXTRAS)
    target = tmp_path / "digits.npz"
    report = json.loads(run("--dataset", "digits", "--epochs", "3", "--json", "--save", str(target)).stdout)
    module = default_module("digits")
    params = module.load_params(str(target))
    from sklearn.datasets import load_digits

    raw = load_digits()
    with np.load(target) as saved:
        X = (raw.data.T - saved["input_mean"]) / saved["input_scale"]
    accuracy = np.mean(module.forward(params, X).argmax(axis=0) == raw.target)
    assert accuracy > 0.8 and report["epochs"] == 3


def test_plot_draws_a_png(tmp_path):
    needs("matplotlib", EXTRAS)
    target = tmp_path / "xor.png"
    result = run("--plot", str(target), "--epochs", "2000")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["xor.png"]


def test_digits_plot_is_written(tmp_path):
    needs("matplotlib", EXTRAS)
    needs("sklearn", EXTRAS)
    target = tmp_path / "digits.png"
    result = run("--dataset", "digits", "--epochs", "3", "--plot", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def titled(figure):
    """The figure's panels by the first word of their titles (colour bars have none)."""
    return {ax.get_title().split()[0]: ax for ax in figure.axes if ax.get_title()}


def test_plot_of_a_held_out_split_has_loss_accuracy_and_confusion():
    needs("matplotlib", EXTRAS)
    import matplotlib.pyplot as plt

    from symbp.plots import training_figure

    data = small_split()
    module = module_for(symbp.generate("4-5-3", "tanh,softmax", "cross_entropy", "mean"))
    result = fit(module, data, 20, 0.3, batch_size=8, seed=1, init="fan_in")
    figure = training_figure(module, result, data, "blobs")
    panels = titled(figure)
    assert sorted(panels) == ["accuracy", "confusion", "loss"] and len(figure.axes) == 3
    loss = panels["loss"]
    assert loss.get_ylabel() == "cross_entropy (mean)" and loss.get_xlabel() == "epoch"
    train, test = loss.get_lines()
    assert (train.get_label(), test.get_label()) == ("train", "test")
    assert list(test.get_ydata()) == [record.test_loss for record in result.history]
    assert list(panels["accuracy"].get_lines()[1].get_ydata()) == [r.test_accuracy for r in result.history]
    confusion = panels["confusion"]
    counts = np.zeros((3, 3), int)
    for label, output in zip(data.labels_test, module.forward(result.params, data.X_test).T):
        counts[label, np.argmax(output)] += 1
    np.testing.assert_array_equal(confusion.get_images()[0].get_array(), counts)
    assert (confusion.get_xlabel(), confusion.get_ylabel()) == ("predicted class", "true class")
    assert len(confusion.texts) == 9
    plt.close(figure)

    summed = module_for(symbp.generate("4-3-3", "sigmoid", "half_se"))
    result = fit(summed, data, 2, 0.1)
    figure = training_figure(summed, result, data, "blobs")
    loss = titled(figure)["loss"]
    assert loss.get_ylabel() == "half_se (sum ÷ samples)"  # the splits differ in size: per sample
    np.testing.assert_allclose(loss.get_lines()[0].get_ydata(), [record.loss / 45 for record in result.history],
                               rtol=1e-14)
    plt.close(figure)


def test_xor_plot_has_the_surface_with_a_legend_for_the_points():
    needs("matplotlib", EXTRAS)
    import matplotlib.pyplot as plt

    from symbp.plots import training_figure

    module, data = default_module("xor"), load("xor")
    result = fit(module, data, 2000, 1.0)
    figure = training_figure(module, result, data, "xor")
    panels = titled(figure)
    assert sorted(panels) == ["decision", "loss"] and len(figure.axes) == 3  # and the colour bar
    assert panels["loss"].get_ylabel() == "half_se (sum)" and len(panels["loss"].get_lines()) == 1
    legend = panels["decision"].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["output 0.5", "target 0", "target 1"]
    plt.close(figure)


def test_compare_fits_mlpclassifier_on_the_same_split():
    needs("sklearn", EXTRAS)
    report = json.loads(run("--dataset", "breast_cancer", "--compare", "--json").stdout)
    assert report["mlpclassifier"]["hidden_layer_sizes"] == [16]
    assert 0.8 < report["mlpclassifier"]["test_accuracy"] <= 1.0


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--dataset", "nope"], "invalid choice"),
    (["--dataset", "breast_cancer", "--seeds", "3"], "--seeds"),
    (["--layers", "3-2-1"], "needs 2 inputs"),
    (["--save", "no/such/folder/w.npz"], "cannot write"),
    (["--init", "xavier"], "invalid choice"),
    (["--learning-rate", "-1"], "--learning-rate"),
])
def test_bad_train_options_are_one_line_and_exit_2(args, needle, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_train_without_logging_computes_no_loss_and_trains_the_same(backend):
    if backend == "numba":
        needs("numba", "the numba backend needs the fast extra: pip install .[fast]")
    module = module_for(symbp.generate("3-4-2", "tanh,softmax", "cross_entropy", "mean", backend=backend))
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((3, 20)), np.eye(2)[rng.integers(0, 2, 20)].T
    quiet, logged = module.init_params(1), module.init_params(1)
    assert module.train(quiet, X, Y, 12, 0.2, log_every=None, batch_size=6, rng=3) == []
    assert len(module.train(logged, X, Y, 12, 0.2, log_every=5, batch_size=6, rng=3)) == 3
    for name in quiet:
        np.testing.assert_array_equal(quiet[name], logged[name])
