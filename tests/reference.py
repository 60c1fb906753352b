"""The document's hand-written network, typed in from the document and kept apart from symbp.

Only two things are added to the document's class: it takes its initial weights from
the caller (so both implementations can start from the same numbers), and ``train``
returns what it prints instead of printing it.
"""

import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    return x * (1 - x)


class SimpleNeuralNetwork:
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
        self.a1 = sigmoid(self.z1)
        self.z2 = np.dot(self.W2, self.a1) + self.b2
        self.a2 = sigmoid(self.z2)
        return self.a2

    def gradients(self, X, y):
        """The quantities the document's backward() subtracts, before it subtracts them."""
        delta2 = (self.a2 - y) * sigmoid_derivative(self.a2)
        delta1 = np.dot(self.W2.T, delta2) * sigmoid_derivative(self.a1)
        return {
            "W2": np.dot(delta2, self.a1.T),
            "b2": np.sum(delta2, axis=1, keepdims=True),
            "W1": np.dot(delta1, X.T),
            "b1": np.sum(delta1, axis=1, keepdims=True),
        }

    def backward(self, X, y, learning_rate):
        delta2 = (self.a2 - y) * sigmoid_derivative(self.a2)
        delta1 = np.dot(self.W2.T, delta2) * sigmoid_derivative(self.a1)
        self.W2 -= learning_rate * np.dot(delta2, self.a1.T)
        self.b2 -= learning_rate * np.sum(delta2, axis=1, keepdims=True)
        self.W1 -= learning_rate * np.dot(delta1, X.T)
        self.b1 -= learning_rate * np.sum(delta1, axis=1, keepdims=True)

    def train(self, X, y, epochs, learning_rate):
        """Returns (epoch, mean squared error, half summed squared error) at every 1000th epoch."""
        logged = []
        for epoch in range(epochs):
            output = self.forward(X)
            half_se = 0.5 * np.sum((output - y) ** 2)
            self.backward(X, y, learning_rate)
            if epoch % 1000 == 0:
                logged.append((epoch, np.mean((y - output) ** 2), half_se))
        return logged

    @property
    def params(self):
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}
