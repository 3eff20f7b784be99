"""Bad input raises ValueError (ShapeError) with a message that names the shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robustlens.reference import ShapeError, conv, network, pool


def _x(*shape):
    return np.zeros(shape)


def test_shape_error_is_value_error():
    assert issubclass(ShapeError, ValueError)


def test_conv1d_channel_mismatch_message():
    msg = "conv1d: input has 3 channels (x.shape=(2, 3, 10)) but weight expects 4 (w.shape=(5, 4, 3))"
    with pytest.raises(ValueError, match=re.escape(msg)):
        conv.conv1d_forward(_x(2, 3, 10), _x(5, 4, 3))


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(5, 3, 4)),
         r"conv1d: padding='same' needs an odd kernel size.*\(4,\).*x\.shape=\(2, 3, 10\), w\.shape=\(5, 3, 4\)"),
        (lambda: conv.conv2d_forward(_x(1, 2, 6, 6), _x(3, 2, 3, 2)),
         r"conv2d: padding='same' needs an odd kernel size.*\(3, 2\).*w\.shape=\(3, 2, 3, 2\)"),
        (lambda: conv.conv2d_forward(_x(1, 3, 6, 6), _x(4, 2, 3, 3)),
         r"conv2d: input has 3 channels \(x\.shape=\(1, 3, 6, 6\)\) but weight expects 2 \(w\.shape=\(4, 2, 3, 3\)\)"),
        (lambda: conv.conv2d_forward(_x(1, 3, 6, 6), _x(4, 3, 3)),
         r"conv2d: w must be 4-D \(C_out, C_in, kh, kw\), got w\.shape=\(4, 3, 3\)"),
        (lambda: conv.conv1d_forward(_x(3, 10), _x(4, 3, 3)),
         r"conv1d: x must be 3-D \(B, C_in, N\), got x\.shape=\(3, 10\)"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), stride=0, padding=1),
         r"conv1d: stride must be positive, got 0"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), stride=-2, padding=1),
         r"conv1d: stride must be positive, got -2"),
        (lambda: conv.conv2d_forward(_x(1, 1, 5, 5), _x(1, 1, 3, 3), stride=(1, 0), padding=0),
         r"conv2d: stride must be positive, got \(1, 0\)"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), padding=-1),
         r"conv1d: padding must be non-negative, got -1"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), dilation=0),
         r"conv1d: dilation must be positive, got 0"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), stride=2),
         r"conv1d: padding='same' keeps the size only with stride 1.*x\.shape=\(2, 3, 10\)"),
        (lambda: conv.conv1d_forward(_x(2, 3, 3), _x(4, 3, 5), padding=0),
         r"conv1d: padded input length 3 .* shorter than the dilated kernel extent 5 .*x\.shape=\(2, 3, 3\), "
         r"w\.shape=\(4, 3, 5\)"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), np.zeros(3)),
         r"conv1d: bias must have shape \(4,\) to match w\.shape=\(4, 3, 3\), got b\.shape=\(3,\)"),
        (lambda: conv.conv1d_forward(_x(2, 3, 10), _x(4, 3, 3), padding="valid"),
         r"conv1d: padding must be 'same' or non-negative int\(s\)"),
        (lambda: pool.maxpool1d_forward(_x(2, 3, 10), 4, padding="same"),
         r"maxpool1d: padding='same' needs an odd kernel size.*x\.shape=\(2, 3, 10\)"),
        (lambda: pool.maxpool2d_forward(_x(2, 3, 10, 10), 2, stride=-1),
         r"maxpool2d: stride must be positive, got -1"),
        (lambda: pool.maxpool2d_forward(_x(2, 3, 10), 2),
         r"maxpool2d: x must be 4-D \(B, C, H, W\), got x\.shape=\(2, 3, 10\)"),
        (lambda: pool.maxpool1d_forward(_x(1, 1, 6), 2, padding=2),
         r"maxpool1d: .*some windows hold only padding \(x\.shape=\(1, 1, 6\), kernel_size=\(2,\)\)"),
        (lambda: pool.avgpool2d_forward(_x(1, 1, 4, 4), 3, padding=(0, -1)),
         r"avgpool2d: padding must be non-negative, got \(0, -1\)"),
        (lambda: pool.avgpool1d_forward(_x(1, 1, 2), 5),
         r"avgpool1d: padded input length 2 .*x\.shape=\(1, 1, 2\), kernel_size=\(5,\)"),
        (lambda: pool.global_max_pool_forward(_x(4, 5)),
         r"global_max_pool: x must be \(B, C, \*spatial\).*x\.shape=\(4, 5\)"),
        (lambda: network.linear_forward(_x(2, 6), _x(3, 5)),
         r"linear: input has 6 features \(x\.shape=\(2, 6\)\) but weight expects 5 \(w\.shape=\(3, 5\)\)"),
        (lambda: network.sgd_step({"w": _x(2, 3)}, {"w": _x(3, 2)}, 0.1),
         r"sgd_step: parameter 'w' has shape \(2, 3\) but its gradient has shape \(3, 2\)"),
        (lambda: network.sgd_step({"w": _x(2, 3)}, {"v": _x(2, 3)}, 0.1),
         r"sgd_step: params and grads need the same keys"),
        (lambda: network.softmax_cross_entropy(_x(4, 10), np.zeros(3, dtype=int)),
         r"labels\.shape=\(3,\) does not match logits\.shape=\(4, 10\)"),
    ],
)
def test_bad_input_raises_value_error_naming_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(
    "forward, backward, args",
    [
        (conv.conv1d_forward, conv.conv1d_backward, (_x(2, 3, 10), _x(4, 3, 3))),
        (conv.conv2d_forward, conv.conv2d_backward, (_x(2, 3, 6, 6), _x(4, 3, 3, 3))),
        (lambda x: pool.maxpool2d_forward(x, 2), pool.maxpool2d_backward, (_x(1, 2, 4, 4),)),
        (lambda x: pool.avgpool1d_forward(x, 3, padding="same"), pool.avgpool1d_backward, (_x(1, 2, 5),)),
        (pool.global_max_pool_forward, pool.global_max_pool_backward, (_x(1, 2, 4, 4),)),
        (pool.global_avg_pool_forward, pool.global_avg_pool_backward, (_x(1, 2, 4, 4),)),
    ],
)
def test_backward_rejects_wrong_dy_shape(forward, backward, args):
    y, cache = forward(*args)
    bad = np.zeros(y.shape[:-1] + (y.shape[-1] + 1,))
    with pytest.raises(ValueError, match=re.escape(f"dy.shape={bad.shape} but the forward output had shape {y.shape}")):
        backward(bad, cache)


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        network.ReLU().backward(np.zeros(3))
