"""Shared fixtures: the golden parity folder (``GOLDEN_DIR`` overrides the project's copy)."""

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return Path(os.environ.get("GOLDEN_DIR", ROOT / "tests" / "golden"))


@pytest.fixture(scope="session")
def manifest(golden_dir) -> dict:
    return json.loads((golden_dir / "manifest.json").read_text())
