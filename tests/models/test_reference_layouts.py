"""Our model classes against the published checkpoints' structure, key by key and shape by shape.

The manifests in ``shared/reference/`` (copied to ``tests/models/reference/``) list every
state-dict key, shape and dtype of the upstream classes (REPA-E SiT-XL/2, REPA-E's VAE and its
diffusers rename map, PixCell-256/-1024 and the PixCell ControlNet), dumped from the upstream
code on the meta device. Here our classes are built on the meta device from the same
configuration and compared with them, every key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_cytosyn.models.pixcell_layout import build_pixcell_transformer
from napari_cytosyn.models.repae_vae import (
    SD_VAE_F8D4_CONFIG,
    repae_key_to_diffusers,
    repae_to_diffusers,
)
from napari_cytosyn.models.sit import SiTTransformer

REFERENCE = Path(__file__).parent / "reference"
_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def manifest(name: str) -> dict:
    return json.loads((REFERENCE / name).read_text())


def assert_same_layout(state: dict[str, torch.Tensor], keys: dict[str, dict]) -> None:
    """Every key of ``keys`` (and no other) in ``state``, with its shape and dtype."""
    assert sorted(state) == sorted(keys), (
        f"only ours: {sorted(set(state) - set(keys))[:10]}, "
        f"only reference: {sorted(set(keys) - set(state))[:10]}"
    )
    for key, ref in keys.items():
        assert list(state[key].shape) == ref["shape"], key
        assert state[key].dtype == _DTYPES[ref["dtype"]], key


def meta_sit(**kwargs) -> SiTTransformer:
    with torch.device("meta"):
        return SiTTransformer(**kwargs)


def test_sit_xl2_224_has_every_repa_e_key_and_shape_except_the_training_projectors():
    ref = manifest("repae_sit_xl2_224.json")
    keys = ref["state_dict"]["keys"]
    assert ref["state_dict"]["n_keys"] == len(keys) == 301
    inference_keys = {k: v for k, v in keys.items() if not k.startswith("projectors.")}
    model = meta_sit(sample_size=28, num_classes=1000, class_dropout_prob=0.1)
    state = model.state_dict()
    assert_same_layout(state, inference_keys)
    assert list(state) == list(inference_keys)  # even the order of the upstream module tree
    counts = ref["parameter_counts"]
    ours = sum(p.numel() for p in model.parameters())
    assert ours == counts["inference_parameters (total - projectors)"] == 675_042_064
    assert ours + counts["projectors (training-only)"] == 683_173_392
    assert not model.pos_embed.requires_grad


@pytest.mark.parametrize(
    ("kwargs", "key", "shape"),
    [
        (
            {"num_classes": 1000, "class_dropout_prob": 0.0},
            "y_embedder.embedding_table.weight",
            [1000, 1152],
        ),
        (
            {"num_classes": 1, "class_dropout_prob": 0.1},
            "y_embedder.embedding_table.weight",
            [2, 1152],
        ),
        ({"sample_size": 32}, "pos_embed", [1, 256, 1152]),
    ],
)
def test_sit_variants_change_only_the_documented_keys(kwargs, key, shape):
    ref = manifest("repae_sit_xl2_224.json")
    base = {k: v["shape"] for k, v in ref["state_dict"]["keys"].items() if "projectors" not in k}
    state = meta_sit(**kwargs).state_dict()
    assert list(state[key].shape) == shape
    assert {k: list(v.shape) for k, v in state.items() if k != key} == {
        k: v for k, v in base.items() if k != key
    }


def test_sit_pos_embed_is_the_fixed_sincos_table_that_forward_uses_at_other_sizes():
    model = SiTTransformer(sample_size=8, hidden_size=16, depth=1, num_heads=2)
    like = torch.zeros(1, dtype=torch.float32)
    torch.testing.assert_close(model._positions(4, 4, like), model.pos_embed.detach())
    assert model._positions(3, 5, like).shape == (1, 15, 16)


def test_repa_e_vae_rename_rules_reproduce_the_reference_map_for_all_248_keys():
    ref = manifest("repae_vae.json")
    mapping = ref["diffusers_compatibility"]["mapping"]
    assert len(mapping) == ref["repae_state_dict"]["n_keys"] == 248
    assert {k: repae_key_to_diffusers(k, 4) for k in mapping} == mapping


def test_repa_e_vae_state_converts_onto_diffusers_autoencoderkl_shapes():
    from diffusers import AutoencoderKL

    ref = manifest("repae_vae.json")
    repae = {
        k: torch.empty(v["shape"], device="meta")
        for k, v in ref["repae_state_dict"]["keys"].items()
    }
    converted = repae_to_diffusers(repae)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(SD_VAE_F8D4_CONFIG)
    assert_same_layout(vae.state_dict(), ref["diffusers_state_dict"]["keys"])
    assert {k: list(v.shape) for k, v in converted.items()} == {
        k: v["shape"] for k, v in ref["diffusers_state_dict"]["keys"].items()
    }
    assert sum(p.numel() for p in vae.parameters()) == ref["parameter_count"] == 83_653_863


@pytest.mark.parametrize(
    ("name", "n_keys", "tokens"),
    [("pixcell_transformer_256.json", 604, 1), ("pixcell_transformer_1024.json", 605, 16)],
)
def test_pixcell_transformer_has_every_published_key_and_shape(name, n_keys, tokens):
    ref = manifest(name)
    config = ref["config_json"]["values"]
    with torch.device("meta"):
        model = build_pixcell_transformer(
            {**config, **dict.fromkeys(ref["config_json"]["likely_extra_legacy_keys"]["keys"])}
        )
    keys = ref["state_dict"]["keys"]
    assert len(keys) == n_keys
    assert_same_layout(model.state_dict(), keys)
    params = sum(p.numel() for p in model.parameters())
    assert params == ref["parameter_count"] == 608_072_960
    assert model.caption_projection.uncond_embedding.shape == (tokens, 1536)
    # the position table is not in the weights: it must come from the config's scale
    assert model.pos_embed.interpolation_scale == config["interpolation_scale"]
    assert "pos_embed.pos_embed" not in model.state_dict()
    assert model.config.out_channels == 32 and model.config.in_channels == 16


def test_pixcell_controlnet_has_every_published_key_and_shape():
    from napari_cytosyn.models.pixcell_layout import build_pixcell_controlnet

    ref = manifest("pixcell_transformer_256.json")
    variant = ref["controlnet_variant"]["controlnet_state_dict_n27"]
    config = {**ref["config_json"]["values"], "n_controlnet_blocks": 27}
    with torch.device("meta"):
        model = build_pixcell_controlnet(config)
    assert len(variant["keys"]) == variant["n_keys"] == 639
    assert_same_layout(model.state_dict(), variant["keys"])
    assert sum(p.numel() for p in model.parameters()) == variant["parameter_count"] == 622_755_200
    non_persistent = set(variant["non_persistent_buffers"])
    assert non_persistent == {"cond_pos_embed.pos_embed", "pos_embed.pos_embed"}
    assert not non_persistent & set(model.state_dict())
