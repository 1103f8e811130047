"""Shared fixtures for the sampling tests: the GRF model and small settings."""

from __future__ import annotations

import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def grf() -> GRFModel:
    return GRFModel()


@pytest.fixture
def fast() -> SamplerSettings:
    return SamplerSettings(steps=8, seed=7)
