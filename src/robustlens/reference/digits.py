"""A tiny CNN made only of the reference layers, trained with plain SGD on scikit-learn's 8×8 digits.

The data set ships inside scikit-learn (no download); scikit-learn is imported only when training.
"""

from __future__ import annotations

import time

import numpy as np

from robustlens.reference.network import (
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    sgd_step,
    softmax_cross_entropy,
)

__all__ = ["load_digits_split", "digits_cnn", "train_digits_cnn"]


def load_digits_split(seed: int = 0, test_fraction: float = 0.2):
    """``(x_train, y_train, x_test, y_test)``; x is (B, 1, 8, 8) float64 in [0, 1], y is (B,) int."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("train_digits_cnn needs scikit-learn (pip install scikit-learn)") from exc
    data = load_digits()
    x = (data.images / 16.0).astype(np.float64)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def digits_cnn(seed: int = 0, channels: int = 16) -> Sequential:
    """Conv2d(1→c, 3×3, same) → ReLU → MaxPool2d(2) → Flatten → Linear(16c → 10): (B, 1, 8, 8) → (B, 10)."""
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, channels, 3, padding="same", rng=rng),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Linear(channels * 16, 10, rng=rng),
    )


def _accuracy(net: Sequential, x, y, batch: int = 512) -> float:
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((net.forward(x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
    return correct / len(y)


def train_digits_cnn(seed: int = 0, epochs: int = 15, batch_size: int = 32, lr: float = 0.2,
                     channels: int = 16) -> dict:
    """Train :func:`digits_cnn` with minibatch SGD; returns a JSON-able dict.

    Keys: ``test_accuracy``, ``train_accuracy``, ``final_loss`` (mean loss of the last epoch),
    ``epochs``, ``n_train``, ``n_test``, ``seconds`` (training plus evaluation wall time), ``seed``.
    """
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    net = digits_cnn(seed, channels)
    rng = np.random.default_rng(seed + 1)
    loss_sum = 0.0
    for _ in range(epochs):
        order = rng.permutation(len(y_tr))
        loss_sum, n_batches = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss, dlogits = softmax_cross_entropy(net.forward(x_tr[idx]), y_tr[idx])
            net.backward(dlogits)
            sgd_step(net.params(), net.grads(), lr)
            loss_sum += loss
            n_batches += 1
        loss_sum /= max(n_batches, 1)
    result = {
        "test_accuracy": _accuracy(net, x_te, y_te),
        "train_accuracy": _accuracy(net, x_tr, y_tr),
        "final_loss": loss_sum,
        "epochs": epochs,
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        "seed": seed,
    }
    result["seconds"] = time.perf_counter() - start
    return result
