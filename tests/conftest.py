"""Shared test fixtures: the ../shared data folder (tests skip with a reason when it is absent), thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("ROBUSTLENS_TEST_THREADS", "1")))
os.environ.setdefault("ROBUSTLENS_OFFLINE", "1")  # tests never download anything

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the shared data folder beside the repository)")
    return p


@pytest.fixture(scope="session")
def corgi_path() -> Path:
    return shared_path("data", "images", "corgi.jpg")


@pytest.fixture(scope="session")
def default_model():
    from robustlens.models import create_model

    return create_model()
