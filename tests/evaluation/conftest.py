import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every test here trains or scores models (tests/conftest.py: ``one_torch_thread``)."""
