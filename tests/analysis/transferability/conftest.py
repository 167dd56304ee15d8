"""A small study CNN shared by the per-cut and recommender tests."""
import pytest
from functions.config import Config
from functions.models.study_cnn import build


@pytest.fixture(scope="module")
def tiny_model():
    return build(Config(num_channels=8, depth=3), (1, 28, 28), 5, seed=0)
