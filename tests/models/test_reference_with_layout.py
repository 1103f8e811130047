"""A nucleus layout and a reference together: PixCell's mask ControlNet receives
``cond={"mask", "uni"}`` per window (tiny ControlNet of the published layout, stand-in UNI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_cytosyn.models import load_model
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.models.pixcell_layout import build_pixcell_controlnet
from napari_cytosyn.sampling.conditioning import FieldCondition, JointCondition, image_field
from napari_cytosyn.testkit.layouts import Layout
from napari_cytosyn.testkit.synthesis import LayoutCondition, synthesize

from .conftest import build_pixcell, pixcell_config


def uni(rgb):  # (B, 3, H, W) -> (B, 24): a stand-in UNI2-h that sees colour
    return rgb.mean(dim=(2, 3)).repeat(1, 8)


@pytest.fixture(scope="module")
def controlnet(tmp_path_factory):
    """PixCell-256-Cell-ControlNet layout (transformer/, controlnet/, vae/), random weights."""
    folder = build_pixcell(tmp_path_factory.mktemp("CN"), tokens=1, sample_size=16)
    config = {**pixcell_config(1, 16, 24), "n_controlnet_blocks": 1, "num_layers": 2}
    net = build_pixcell_controlnet(config)
    with torch.no_grad():  # the published init zeroes the residual blocks: make them act
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    out = Path(folder) / "controlnet"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"_class_name": "PixCellControlNet", **config}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / "model.safetensors")
    index = json.loads((folder / "model_index.json").read_text())
    index |= {
        "_class_name": "PixCellControlNetPipeline",
        "controlnet": ["pixcell_controlnet", "PixCellControlNet"],
        "transformer": ["pixcell_controlnet_transformer", "PixCellTransformer2DModelControlNet"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return load_model(f"pixcell-256-cell-controlnet:{folder}", device="cpu", embedder=uni)


def _layout(size: int = 256) -> Layout:
    lab = np.zeros((size, size), np.int32)
    lab[20:36, 30:46] = 1
    lab[80:100, 60:76] = 2
    return Layout(lab, np.ones((size, size), bool))


def _two_tissues(size: int = 256) -> np.ndarray:
    """Pink left half, purple right half (wider than the model's 128 px tile)."""
    img = np.empty((size, size, 3), np.uint8)
    img[:, : size // 2] = (215, 120, 170)  # pink left
    img[:, size // 2 :] = (110, 60, 150)  # purple right
    return img


def test_each_window_gets_the_layout_crop_and_the_reference_at_its_place(controlnet):
    ref = _two_tissues()
    field = image_field(controlnet, ref)
    layout = _layout()
    cond = JointCondition(
        mask=LayoutCondition(layout.labels > 0, controlnet.latent_factor),
        uni=FieldCondition(field, controlnet.latent_factor),
    )
    got = cond.for_windows([(0, 0, 4, 4), (0, 28, 4, 4)])  # latents: left edge, right edge
    assert set(got) == {"mask", "uni"}
    f = controlnet.latent_factor
    np.testing.assert_array_equal(got["mask"][0, 0].numpy(), layout.labels[: 4 * f, : 4 * f] > 0)
    expected_left = uni(torch.from_numpy(np.full((1, 3, 8, 8), 215 / 127.5 - 1, np.float32)))
    assert got["uni"].shape == (2, 1, 24)  # one UNI token per window
    # left window: pink reference cells; right window: purple ones (different embeddings)
    assert not torch.allclose(got["uni"][0], got["uni"][1])
    assert got["uni"][0, 0, 0] > got["uni"][1, 0, 0]  # more red on the left
    assert abs(float(got["uni"][0, 0, 0]) - float(expected_left[0, 0])) < 0.2


def test_synthesis_with_a_reference_follows_it_and_is_deterministic(controlnet):
    layout = _layout()
    ref = _two_tissues()
    kw = {"seed": 2, "steps": 2, "guidance": 1.0}
    plain = synthesize(layout, controlnet, **kw)
    a = synthesize(layout, controlnet, reference=ref, **kw)
    b = synthesize(layout, controlnet, reference=ref, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, plain)
    other = synthesize(layout, controlnet, reference=ref[:, ::-1].copy(), **kw)
    assert not np.array_equal(a, other)  # the reference's place matters
    small = synthesize(layout, controlnet, reference=ref[:128, :160].copy(), **kw)
    assert not np.array_equal(small, a)  # another size: its mean embedding everywhere


def test_a_model_without_a_reference_encoder_refuses_a_reference():
    with pytest.raises(ValueError, match="reference"):
        image_field(GRFModel(), _two_tissues(64))
