"""A hand-written tanh/softmax/cross-entropy network in the tutorial's style, for bench/speed.py.

It is written the way tests/reference.py's ``SimpleNeuralNetwork`` is (np.dot, separate
forward and backward methods, z and a kept as attributes, np.random.randn weights), with
the loss averaged over the samples, so that timing it against the generated
digits_64_128_10 module compares like with like.
"""

import numpy as np


def tanh(x):
    return np.tanh(x)


def tanh_derivative(x):
    return 1 - x**2


def softmax(x):
    e = np.exp(x - np.max(x, axis=0, keepdims=True))
    return e / np.sum(e, axis=0, keepdims=True)


class SoftmaxNeuralNetwork:
    def __init__(self, input_size, hidden_size, output_size, params=None):
        if params is None:
            self.W1 = np.random.randn(hidden_size, input_size)
            self.b1 = np.random.randn(hidden_size, 1)
            self.W2 = np.random.randn(output_size, hidden_size)
            self.b2 = np.random.randn(output_size, 1)
        else:
            self.W1, self.b1, self.W2, self.b2 = (np.array(params[k], dtype=float) for k in ("W1", "b1", "W2", "b2"))

    def forward(self, X):
        self.z1 = np.dot(self.W1, X) + self.b1
        self.a1 = tanh(self.z1)
        self.z2 = np.dot(self.W2, self.a1) + self.b2
        self.a2 = softmax(self.z2)
        return self.a2

    def backward(self, X, y, learning_rate):
        m = X.shape[1]
        delta2 = (self.a2 - y) / m
        delta1 = np.dot(self.W2.T, delta2) * tanh_derivative(self.a1)
        self.W2 -= learning_rate * np.dot(delta2, self.a1.T)
        self.b2 -= learning_rate * np.sum(delta2, axis=1, keepdims=True)
        self.W1 -= learning_rate * np.dot(delta1, X.T)
        self.b1 -= learning_rate * np.sum(delta1, axis=1, keepdims=True)

    def train(self, X, y, epochs, learning_rate):
        for epoch in range(epochs):
            output = self.forward(X)
            self.backward(X, y, learning_rate)
            if epoch % 1000 == 0:
                loss = -np.mean(np.sum(y * np.log(output), axis=0))
                print(f"Epoch {epoch}, Loss: {loss}")

    @property
    def params(self):
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}
