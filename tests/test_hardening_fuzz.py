"""Fuzzing in CI (a few hundred cases, ~10 s): mutated PNG/JPEG/WebP/TIFF/GIF/BMP bytes, --data specs, list files
and NIPS-17 tables; the only error that may escape is UserError. The long run is scripts/fuzz_inputs.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

ROOT = Path(__file__).resolve().parents[1]


def load_fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", ROOT / "scripts" / "fuzz_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = load_fuzz_module()


def test_mutations_change_the_bytes():
    data = bytes(range(100))
    assert fuzz.mutate(data, [("truncate", 0.5, b"x")]) == data[:50]
    assert fuzz.mutate(data, [("flip", 0.0, b"\x01")])[0] == 1
    assert fuzz.mutate(data, [("insert", 0.1, b"abc")])[10:13] == b"abc"
    assert fuzz.edit_text("list:x", [("insert", 0.0, "\0")]) == "\0list:x"


def test_the_tally_catches_what_escapes():
    tally = fuzz.Tally(raise_escapes=False)

    def boom(_):
        raise KeyError("escaped")

    def user(_):
        from robustlens.errors import UserError

        raise UserError("fine")

    tally.run("t", boom, b"")
    tally.run("t", user, b"")
    assert tally.cases == {"t": 2} and len(tally.escaped) == 1 and tally.escaped[0]["type"] == "KeyError"
    with pytest.raises(AssertionError, match="KeyError escaped"):
        fuzz.Tally(raise_escapes=True).run("t", boom, b"")


def test_fuzz_only_user_errors_escape():
    result = fuzz.run(cases=300, seed=12, raise_escapes=True)
    assert result["cases"] >= 300 and result["escaped"] == 0, result
    assert set(result["by_target"]) >= {"image", "spec", "list file", "nips17 file"}
