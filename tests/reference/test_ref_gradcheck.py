"""run_checks / format_checks (the CLI's `robustlens layers check`), and that the checks can fail."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robustlens.reference import gradcheck, pool
from robustlens.reference.gradcheck import format_checks, rel_err, run_checks


def test_rel_err():
    assert rel_err(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_err(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(0.5)
    assert rel_err(np.array([1e-300]), np.array([0.0])) > 1  # no silent division by zero
    with pytest.raises(ValueError, match="shapes differ"):
        rel_err(np.zeros(2), np.zeros(3))


def test_run_checks_passes_and_is_json():
    result = run_checks(seed=0)
    json.dumps(result)  # JSON-able
    assert result["passed"] is True
    assert result["seed"] == 0
    layers = {r["layer"] for r in result["checks"]}
    assert layers == {"conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d",
                      "global_max_pool", "global_avg_pool", "linear", "relu", "sgd_step"}
    assert result["max_error_vs_fd"] <= result["tolerance_vs_fd"] == 1e-6
    if result["torch_available"]:
        assert result["max_error_vs_torch"] <= result["tolerance_vs_torch"] == 1e-10
        conv_row = result["checks"][0]
        assert conv_row["layer"] == "conv1d"
        for key in ("forward_rel_err_vs_torch", "dx_rel_err_vs_torch", "dw_rel_err_vs_torch",
                    "db_rel_err_vs_torch", "dx_rel_err_vs_fd", "dw_rel_err_vs_fd", "db_rel_err_vs_fd"):
            assert isinstance(conv_row[key], float), key
    print(format_checks(result))


def test_run_checks_without_torch():
    result = run_checks(seed=3, use_torch=False)
    assert result["passed"] and result["torch_available"] is False and result["max_error_vs_torch"] is None
    assert all(r["forward_rel_err_vs_torch"] is None for r in result["checks"])
    assert "no torch comparison (disabled)" in format_checks(result)


def test_format_checks_table():
    text = format_checks(run_checks(seed=1, use_torch=False))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "shape", "args"]
    for name in ("conv1d", "conv2d", "maxpool2d", "avgpool1d", "global_max_pool", "sgd_step"):
        assert any(line.startswith(name) for line in lines), name
    assert "PASSED" in lines[-1]


def test_checks_catch_a_wrong_weight_gradient(monkeypatch):
    """A 0.1 % error in ∂C/∂W must make run_checks fail (so the checks are not tautologies)."""
    real = gradcheck.LAYERS["conv1d"][1]

    def wrong(dy, cache):
        dx, dw, db = real(dy, cache)
        return dx, dw * 1.001, db

    monkeypatch.setitem(gradcheck.LAYERS, "conv1d", (gradcheck.LAYERS["conv1d"][0], wrong, True))
    result = run_checks(seed=0)
    assert result["passed"] is False
    bad = [r for r in result["checks"] if not r["passed"]]
    assert bad and all(r["layer"] == "conv1d" for r in bad)
    assert result["max_error_vs_fd"] > 1e-4
    assert "FAILED" in format_checks(result)


def test_checks_catch_a_wrong_tie_rule(monkeypatch):
    """Routing ties to the LAST maximum instead of the first must be caught by the torch comparison."""
    pytest.importorskip("torch")
    real_forward = pool.maxpool_forward

    def last_max_forward(x, kernel_size, **kw):
        y, cache = real_forward(x, kernel_size, **kw)
        x = np.asarray(x, dtype=np.float64)
        # recompute the winner as the last maximum among real entries
        from robustlens.reference.sliding import pad_spatial, window_view
        win = window_view(pad_spatial(x, cache.padding, -np.inf), cache.kernel, cache.stride, cache.dilation)
        flat = win.reshape(y.shape + (-1,))
        rev = (flat == y[..., None])[..., ::-1]
        cache.argmax = flat.shape[-1] - 1 - np.argmax(rev, axis=-1)
        return y, cache

    monkeypatch.setitem(gradcheck.LAYERS, "maxpool1d",
                        (lambda x, w, b, kw: last_max_forward(x, nd=1, **kw), gradcheck.LAYERS["maxpool1d"][1], False))
    result = run_checks(seed=0)
    tie_rows = [r for r in result["checks"] if r["layer"] == "maxpool1d" and "ties" in r["shape"]]
    assert tie_rows and not tie_rows[0]["passed"]
    # without ties the rule does not matter, and those rows still pass
    assert all(r["passed"] for r in result["checks"] if r["layer"] == "maxpool1d" and "ties" not in r["shape"])
