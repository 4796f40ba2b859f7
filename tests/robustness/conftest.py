"""The reliability suite runs against both wirings: one process, and the engine with front-ends."""

import pytest


@pytest.fixture(scope="module", autouse=True)
def _both_wirings(serving_mode: str) -> str:
    return serving_mode
