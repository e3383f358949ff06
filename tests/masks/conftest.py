"""Fixtures for the mask tests: the tiny SAM (test configuration), trained once and cached.

The tiny CLIP fixtures come from tests/conftest.py.
"""

import pytest


@pytest.fixture(scope="session")
def tiny_sam_path():
    """Checkpoint of the test-size tiny SAM."""
    from auditor.demo.zoo.tiny_sam import TEST_SAM_SPEC, load_or_train_tiny_sam

    return load_or_train_tiny_sam(TEST_SAM_SPEC)


@pytest.fixture(scope="session")
def tiny_sam(tiny_sam_path):
    """The test-size tiny SAM module."""
    from auditor.demo.zoo.tiny_sam import load_tiny_sam

    return load_tiny_sam(tiny_sam_path)
