"""Pixels do not depend on torch's thread count (issue 18, item 12): cytosyn-tiny, 1 vs 2
threads, a synthetic slide chunk and an inpainting, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models import load_model
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.threads import THREADS_ENV, model_threads
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture(scope="module")
def tiny():
    return load_model("cytosyn-tiny", device="cpu")


def render(tmp_path, model, threads: int, name: str) -> np.ndarray:
    torch.set_num_threads(threads)
    slide = SyntheticSlide.create(
        tmp_path / name,
        model,
        128,
        128,
        SamplerSettings(steps=2, autocast="off", seed=5),
        chunk_px=128,
    )
    out = slide.ensure_chunk(0, 0, 0)
    slide.close()
    return out


def test_item12_one_and_two_torch_threads_give_the_same_pixels(tmp_path, tiny):
    before = torch.get_num_threads()
    try:
        one = render(tmp_path, tiny, 1, "one.cytosyn")
        two = render(tmp_path, tiny, 2, "two.cytosyn")
    finally:
        torch.set_num_threads(before)
    assert one.std() > 1.0  # tissue, not a blank chunk
    np.testing.assert_array_equal(one, two)


def test_item12_the_thread_count_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert model_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "3")
    assert model_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        model_threads()
