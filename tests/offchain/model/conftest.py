import json
from pathlib import Path

import pytest

from offchain.model.spec import ModelSpec, load_spec

SPECS = Path(__file__).resolve().parents[3] / "specs"


@pytest.fixture
def tiny() -> ModelSpec:
    return load_spec(SPECS / "tiny.json")


@pytest.fixture
def tiny_data() -> dict:
    return json.loads((SPECS / "tiny.json").read_text())
