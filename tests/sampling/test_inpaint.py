"""Inpainting: outside pixels bit-identical, inside generated, seams at the mask border."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_cytosyn.sampling import (
    Cancelled,
    InpaintConfig,
    RegionConfig,
    SamplerSettings,
    generate_region,
    inpaint,
)
from napari_cytosyn.sampling.inpainting import feather_alpha, latent_release_times


@pytest.fixture
def scene(grf):
    image = generate_region(grf, SamplerSettings(steps=8, seed=3), 0, 0, 301, 333)
    mask = np.zeros(image.shape[:2], bool)
    mask[80:200, 90:250] = True
    return image, mask


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"sampler": "dpmpp_2m"},
        {"sampler": "ancestral", "inpaint": InpaintConfig(resample_jumps=3, resample_n=2)},
        {"inpaint": InpaintConfig(feather_px=0, release_band_latent=0)},
    ],
)
def test_pixels_outside_the_mask_are_bit_identical(grf, scene, kw):
    image, mask = scene
    out = inpaint(grf, image, mask, SamplerSettings(steps=8, seed=5, **kw))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask])
    assert np.abs(out[mask].astype(int) - image[mask]).mean() > 8


def test_odd_sizes_and_masks_touching_the_border(grf):
    image = generate_region(grf, SamplerSettings(steps=6, seed=1), 0, 0, 97, 61)
    mask = np.zeros((97, 61), bool)
    mask[50:, :20] = True
    mask[0, 60] = True
    out = inpaint(grf, image, mask, SamplerSettings(steps=6, seed=2))
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


@pytest.mark.parametrize("shape", [(520, 528), (517, 531)])
def test_regions_whose_last_decode_tile_is_narrower_than_the_blend(grf, shape):
    # 66 latents = one 64-latent decode tile plus a 2-latent sliver, narrower than twice the
    # cross-fade: the sliver's neighbour must not reach past the canvas.
    h, w = shape
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[100:200, 150:300] = True
    out = inpaint(grf, image, mask, SamplerSettings(steps=3, seed=3))
    assert out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_empty_mask_returns_the_image_and_bad_inputs_are_refused(grf, scene):
    image, mask = scene
    same = inpaint(grf, image, np.zeros_like(mask), SamplerSettings(steps=4))
    assert np.array_equal(same, image) and same is not image
    with pytest.raises(ValueError, match="mask shape"):
        inpaint(grf, image, mask[:-1], SamplerSettings(steps=4))
    with pytest.raises(ValueError, match="boolean"):
        inpaint(grf, image, mask.astype(np.uint8), SamplerSettings(steps=4))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        inpaint(grf, image.astype(np.float32), mask, SamplerSettings(steps=4))


def _border_step_ratio(out: np.ndarray) -> float:
    """Largest mean column step within the left/right mask borders / the mean step inside."""
    steps = np.abs(np.diff(out.astype(float), axis=1)).mean(axis=2)
    profile = np.concatenate([steps[80:200, 84:120], steps[80:200, 255:219:-1]]).mean(0)
    return float(profile.max() / steps[80:200, 150:190].mean())


def test_generated_tissue_continues_across_the_mask_border(grf, scene):
    image, mask = scene
    st = SamplerSettings(steps=10, seed=5)
    ours = _border_step_ratio(inpaint(grf, image, mask, st))
    hard = _border_step_ratio(
        inpaint(
            grf, image, mask, st.replace(inpaint=InpaintConfig(release_band_latent=0, feather_px=0))
        )
    )
    # Measured: hard mask ~9, release band + feather ~1.5 (1.1-1.5 over seeds).
    assert hard > 4.0
    assert ours < 1.7 and ours < 0.25 * hard


def test_resampling_costs_what_it_says(grf, scene):
    image, mask = scene
    st = SamplerSettings(steps=10, seed=5, region=RegionConfig(shift_lattice=False))
    grf.windows = 0
    inpaint(grf, image, mask, st)
    plain = grf.windows
    grf.windows = 0
    inpaint(grf, image, mask, st.replace(inpaint=InpaintConfig(resample_jumps=5, resample_n=2)))
    assert grf.windows == pytest.approx(1.5 * plain)


def test_feather_ramp_lies_inside_the_mask():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    alpha = feather_alpha(mask, 3)
    assert np.all(alpha[~mask] == 0)
    assert alpha[5, 10] == pytest.approx(1 / 3) and alpha[10, 10] == 1.0


def test_release_band_frees_rings_earlier_the_deeper_they_are():
    mask = np.zeros((96, 96), bool)
    mask[24:72, 24:72] = True  # latents 3..8
    rel = latent_release_times(mask, 8, dilate=1, band=2).numpy()
    # dilated latent mask: 2..9; ring 1 on its border, ring 2 inside, the rest always free.
    assert rel[5, 0] == -1.0 and rel[5, 1] == -1.0
    assert rel[5, 2] == pytest.approx(1 / 3) and rel[5, 9] == pytest.approx(1 / 3)
    assert rel[5, 3] == pytest.approx(2 / 3) and rel[5, 5] == 1.0


def test_inpaint_cancels_within_one_batch(grf, scene):
    image, mask = scene
    cancel = threading.Event()
    with pytest.raises(Cancelled):
        inpaint(
            grf,
            image,
            mask,
            SamplerSettings(steps=8, region=RegionConfig(batch_size=1)),
            progress=lambda d, t: cancel.set(),
            cancel=cancel,
        )


def _tiny_scene(tiny_diffusion, net_hook=None):
    model = tiny_diffusion(2, tile_px=32, net_hook=net_hook)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    return model, image, mask


def _layers_run_after(module, cancel):
    """Names of ``module``'s leaf layers that finished once ``cancel`` was set, in order."""
    ran = []

    def record(name):
        if cancel.is_set():
            ran.append(name)

    for name, sub in module.named_modules():
        if not list(sub.children()):
            sub.register_forward_hook(lambda m, a, o, name=name: record(name))
    return ran


def test_cancel_during_a_network_call_stops_it_before_its_last_layer(tiny_diffusion, monkeypatch):
    monkeypatch.setenv("NAPARI_CYTOSYN_MODEL_WORKERS", "1")  # one call in flight at a time
    cancel = threading.Event()
    # Cancel arrives while the denoiser's network runs (its first batch): the call stops at
    # the next layer instead of finishing the UNet.
    model, image, mask = _tiny_scene(tiny_diffusion, net_hook=lambda z: cancel.set())
    [unet] = [
        c.cell_contents for c in model.net.__closure__ if hasattr(c.cell_contents, "up_blocks")
    ]
    unet_layers = _layers_run_after(unet, cancel)
    global_hooks = dict(torch.nn.modules.module._global_forward_pre_hooks)
    with pytest.raises(Cancelled):
        inpaint(model, image, mask, SamplerSettings(steps=4, seed=1), cancel=cancel)
    assert unet_layers == []  # not one layer ran after Cancel
    # the cancel hook is gone once no call is in flight
    assert dict(torch.nn.modules.module._global_forward_pre_hooks) == global_hooks


def test_cancel_during_the_encode_of_the_real_pixels_stops_it(tiny_diffusion):
    cancel = threading.Event()
    calls = []
    model, image, mask = _tiny_scene(tiny_diffusion, net_hook=calls.append)
    model.vae.encoder.conv_in.register_forward_hook(lambda m, a, o: cancel.set())
    encoder_layers = _layers_run_after(model.vae.encoder, cancel)
    with pytest.raises(Cancelled):
        inpaint(model, image, mask, SamplerSettings(steps=4, seed=1), cancel=cancel)
    assert encoder_layers == ["conv_in"]  # stopped at the layer after the one Cancel came in
    assert calls == []  # the denoiser never ran


def test_a_cancellable_inpaint_not_cancelled_gives_the_same_pixels(tiny_diffusion):
    model, image, mask = _tiny_scene(tiny_diffusion)
    st = SamplerSettings(steps=4, seed=1)
    plain = inpaint(model, image, mask, st)
    cancellable = inpaint(model, image, mask, st, cancel=threading.Event())
    np.testing.assert_array_equal(cancellable, plain)
    assert not np.array_equal(plain[mask], image[mask])
