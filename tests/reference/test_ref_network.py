"""Layer objects, Sequential, the loss, the SGD step and the tiny digits CNN."""

from __future__ import annotations

import numpy as np
import pytest
from ref_helpers import torch_check_or_skip

from robustlens.reference import network
from robustlens.reference.gradcheck import TOL_TORCH, rel_err


def _small_net(rng):
    return network.Sequential(
        network.Conv2d(2, 3, 3, padding="same", rng=rng),
        network.ReLU(),
        network.MaxPool2d(3, stride=1, padding="same"),
        network.Conv2d(3, 4, 2, stride=2, padding=0, rng=rng),
        network.ReLU(),
        network.AvgPool2d(2),
        network.Flatten(),
        network.Linear(4 * 2 * 2, 5, rng=rng),
    )


def test_sequential_matches_torch_end_to_end():
    """A whole network (conv, ReLU, same max pooling, strided conv, avg pooling, linear) and its
    parameter gradients from the softmax cross-entropy loss agree with torch autograd."""
    torch_check_or_skip()
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    net = _small_net(rng)
    x = rng.standard_normal((3, 2, 8, 8))
    labels = np.array([0, 3, 4])
    loss, dlogits = network.softmax_cross_entropy(net.forward(x), labels)
    dx = net.backward(dlogits)

    p = {k: torch.tensor(v, requires_grad=True) for k, v in net.params().items()}
    tx = torch.tensor(x, requires_grad=True)
    h = F.relu(F.conv2d(tx, p["0.weight"], p["0.bias"], padding=1))
    h = F.max_pool2d(h, 3, stride=1, padding=1)
    h = F.relu(F.conv2d(h, p["3.weight"], p["3.bias"], stride=2))
    h = F.avg_pool2d(h, 2).flatten(1)
    logits = F.linear(h, p["7.weight"], p["7.bias"])
    tloss = F.cross_entropy(logits, torch.tensor(labels))
    tloss.backward()

    assert abs(loss - tloss.item()) <= TOL_TORCH * abs(tloss.item())
    assert rel_err(dx, tx.grad.numpy()) <= TOL_TORCH
    grads = net.grads()
    assert set(grads) == set(p) == {"0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"}
    for k in p:
        assert rel_err(grads[k], p[k].grad.numpy()) <= TOL_TORCH, k


def test_sgd_step_updates_in_place_and_lowers_the_loss():
    rng = np.random.default_rng(1)
    net = _small_net(rng)
    x = rng.standard_normal((4, 2, 8, 8))
    labels = np.array([1, 2, 3, 4])
    params = net.params()
    before = {k: v.copy() for k, v in params.items()}
    loss0, d = network.softmax_cross_entropy(net.forward(x), labels)
    net.backward(d)
    grads = {k: v.copy() for k, v in net.grads().items()}
    lr = 0.05
    out = network.sgd_step(params, net.grads(), lr)
    assert out is params
    for k, v in net.params().items():
        assert v is params[k]  # the layer's own arrays were updated
        np.testing.assert_array_equal(v, before[k] - lr * grads[k])
    loss1, _ = network.softmax_cross_entropy(net.forward(x), labels)
    assert loss1 < loss0


def test_sgd_step_accepts_lists():
    w = np.ones((2, 2))
    network.sgd_step([w], [np.full((2, 2), 2.0)], 0.25)
    np.testing.assert_array_equal(w, np.full((2, 2), 0.5))


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4))
    labels = np.array([0, 2, 3])
    _, d = network.softmax_cross_entropy(logits, labels)
    h = 1e-6
    fd = np.zeros_like(logits)
    for i in np.ndindex(*logits.shape):
        up, down = logits.copy(), logits.copy()
        up[i] += h
        down[i] -= h
        fd[i] = (network.softmax_cross_entropy(up, labels)[0] - network.softmax_cross_entropy(down, labels)[0]) / (2 * h)
    assert rel_err(d, fd) <= 1e-6


def test_conv1d_layer_and_global_pools():
    rng = np.random.default_rng(3)
    net = network.Sequential(network.Conv1d(2, 3, 5, rng=rng), network.MaxPool1d(3, stride=1, padding="same"),
                             network.AvgPool1d(2), network.GlobalMaxPool())
    y = net.forward(rng.standard_normal((2, 2, 10)))
    assert y.shape == (2, 3)
    assert net.backward(np.ones_like(y)).shape == (2, 2, 10)
    assert set(net.grads()) == {"0.weight", "0.bias"}
    g = network.GlobalAvgPool()
    assert g.forward(np.ones((2, 3, 4, 4))).shape == (2, 3)


def test_digits_cnn_reaches_90_percent():
    pytest.importorskip("sklearn")
    from robustlens.reference.digits import train_digits_cnn

    result = train_digits_cnn(seed=0)
    print(f"digits CNN: test accuracy {result['test_accuracy']:.4f} in {result['seconds']:.2f} s")
    assert result["test_accuracy"] >= 0.90
    assert result["n_test"] >= 300
