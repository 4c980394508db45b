import pytest

from .harness import Harness


@pytest.fixture
def harness(request, tmp_path, smtp):
    h = Harness(request, tmp_path, smtp)
    try:
        yield h
    finally:
        h.close()
