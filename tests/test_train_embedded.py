"""scripts/train_embedded.py on a tiny config: the v2 stages run, write loadable weights, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_embedded.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Crops of the shipped 40x sample: two 0.5 um/px images and the 0.25 um/px original."""
    from skimage.io import imsave

    from napari_cytosyn._napari._sample_data import sample_image
    from napari_cytosyn.chunk_grid import downsample_area

    d = tmp_path_factory.mktemp("training")
    rgb40 = sample_image().rgb[:384, :384]
    imsave(d / "tiatoolbox_target_0.25mpp.png", rgb40, check_contrast=False)
    imsave(d / "a_0.5mpp.png", downsample_area(rgb40, 2), check_contrast=False)
    imsave(d / "b_0.5mpp.png", downsample_area(sample_image().rgb[-384:, -384:], 2))
    return d


def run(*args: str) -> str:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_conditional_stage_and_distillation_write_a_loadable_model_and_resume(data, tmp_path):
    from napari_cytosyn.models.embedded import WEIGHTS_DIR, load_embedded

    out, runs = tmp_path / "out", tmp_path / "runs"
    common = [
        "--conditional", "--data", str(data), "--vae-from", str(WEIGHTS_DIR / "vae"),
        "--scaling-from", str(WEIGHTS_DIR), "--out", str(out), "--runs", str(runs), "--tiny",
        "--tile-px", "64", "--crops-per-variant", "1", "--jitters", "1", "--views", "2",
        "--unet-batch", "2",
        "--cond-minutes", "1", "--distill-minutes", "1", "--threads", "1", "--seed", "3",
    ]  # fmt: skip
    log = run(*common, "--unet-steps", "2")
    assert "checkpoint cond step 2 (final)" in log and "checkpoint distill step 2" in log
    cfg = json.loads((out / "cytosyn_tiny.json").read_text())
    shipped = json.loads((WEIGHTS_DIR / "cytosyn_tiny.json").read_text())
    assert cfg["latent_shift"] == shipped["latent_shift"]  # the frozen latent space
    assert cfg["latent_scale"] == shipped["latent_scale"]
    assert cfg["training"]["cond_steps"] == 2 and cfg["training"]["distill_steps"] == 2
    assert len(cfg["descriptor"]["mean"]) == 8
    # resumable: the checkpoint continues the distillation stage to the new step count
    log = run(*common, "--unet-steps", "3", "--resume")
    assert "resumed distill at step 2" in log and "checkpoint distill step 3 (final)" in log
    # the folder loads like the shipped one (with the shipped VAE next to it) and is conditional
    (out / "vae").symlink_to(WEIGHTS_DIR / "vae", target_is_directory=True)
    m = load_embedded(device="cpu", path=out)
    assert m.info["conditional"] and m.tile_px == 64
    cond = m.embed(torch.zeros(1, 3, 64, 64))
    x0 = m.denoise(torch.zeros(1, 4, 8, 8), torch.tensor([0.5]), cond=cond)
    assert torch.isfinite(x0).all()


def test_decoder_stages_keep_the_encoder_and_write_both_decoders(data, tmp_path):
    from safetensors.torch import load_file

    from napari_cytosyn.models.embedded import WEIGHTS_DIR

    out = tmp_path / "out"
    log = run(
        "--decoders", "20x,40x", "--data", str(data), "--vae-from", str(WEIGHTS_DIR / "vae"),
        "--out", str(out), "--runs", str(tmp_path), "--vae-steps", "2", "--vae-batch", "1",
        "--decoder-crop", "32", "--gan-frac", "0.5", "--threads", "1",
    )  # fmt: skip
    assert "dec1x done: 2 steps" in log and "dec2x done: 2 steps" in log
    new = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    old = load_file(WEIGHTS_DIR / "vae" / "diffusion_pytorch_model.safetensors")
    enc = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(new[k], old[k]) for k in enc)  # encoder frozen
    assert any(not torch.equal(new[k], old[k]) for k in old if k.startswith("decoder."))
    assert (out / "vae_x2" / "x2_decoder.safetensors").is_file()
    assert (out / "vae_pregan").is_dir()  # the state before the adversarial phase is kept
    info = json.loads((out / "decoders.json").read_text())
    assert np.isfinite(info["dec40x"]["holdout_psnr"])


def test_generated_latent_decoders_keep_the_encoder_and_resume(data, tmp_path):
    from safetensors.torch import load_file

    from napari_cytosyn.models.embedded import WEIGHTS_DIR

    out, runs = tmp_path / "out", tmp_path / "runs"
    common = [
        "--gen-decoders", "20x,40x", "--gen-model", str(WEIGHTS_DIR), "--data", str(data),
        "--out", str(out), "--runs", str(runs), "--tile-px", "64", "--gen-pairs", "8",
        "--default-steps", "2", "--vae-batch", "1", "--decoder-crop", "32", "--threads", "1",
        "--teacher-weight", "1.0", "--teacher-sigma", "2", "--stain-weight", "5",
        "--hf-weight", "0.5", "--real-frac", "1.0",
    ]  # fmt: skip
    log = run(*common, "--vae-steps", "2")
    assert "8 generated-latent pairs (1x)" in log and "8 generated-latent pairs (2x)" in log
    assert "gdec1x done: 2 steps" in log and "gdec2x done: 2 steps" in log
    zs, xs = torch.load(runs / "gen_pairs_1x.pt")
    assert zs.shape == (8, 4, 8, 8) and xs.shape == (8, 3, 64, 64) and xs.dtype == torch.uint8
    z2, x2 = torch.load(runs / "gen_pairs_2x.pt")
    assert z2.shape == (8, 4, 8, 8) and x2.shape == (8, 3, 128, 128)
    new = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    old = load_file(WEIGHTS_DIR / "vae" / "diffusion_pytorch_model.safetensors")
    enc = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert enc and all(torch.equal(new[k], old[k]) for k in enc)  # encoder bit-identical
    assert any(not torch.equal(new[k], old[k]) for k in old if k.startswith("decoder."))
    x2new = load_file(out / "vae_x2" / "x2_decoder.safetensors")
    x2old = load_file(WEIGHTS_DIR / "vae_x2" / "x2_decoder.safetensors")
    assert x2new.keys() == x2old.keys()
    saved = load_file(out / "saves" / "vae_x2_00002" / "x2_decoder.safetensors")
    assert all(torch.equal(saved[k], x2new[k]) for k in x2new)  # every save kept, by step
    assert (out / "saves" / "vae_00002" / "config.json").is_file()
    info = json.loads((out / "gen_decoders.json").read_text())
    assert info["dec20x"]["steps"] == 2 and np.isfinite(info["dec40x"]["sharpness_ratio"])
    # resumable from the checkpoints; the cached pairs are reused
    log = run(*common, "--vae-steps", "3", "--resume")
    assert "8 cached generated-latent pairs (1x)" in log
    assert "resumed gdec1x at step 2" in log and "gdec1x done: 3 steps" in log
    assert "resumed gdec2x at step 2" in log and "gdec2x done: 3 steps" in log


def test_colour_match_shifts_only_the_decoders_output_bias(data, tmp_path):
    from safetensors.torch import load_file

    from napari_cytosyn.models.embedded import WEIGHTS_DIR, load_embedded

    out = tmp_path / "out"
    log = run(
        "--colour-match", "20x,40x", "--gen-model", str(WEIGHTS_DIR), "--data", str(data),
        "--out", str(out), "--runs", str(tmp_path / "runs"), "--tile-px", "64",
        "--colour-tiles", "4", "--default-steps", "2", "--threads", "1",
    )  # fmt: skip
    assert "colour match 20x: 4 tiles" in log and "colour match 40x: 4 tiles" in log
    offsets = json.loads((out / "cytosyn_tiny.json").read_text())["training"]["colour_offset"]
    shipped = json.loads((WEIGHTS_DIR / "cytosyn_tiny.json").read_text())["training"]
    before = shipped.get("colour_offset", {})  # the record sums the offsets of every run
    for scale, f in (
        ("20x", "vae/diffusion_pytorch_model.safetensors"),
        ("40x", "vae_x2/x2_decoder.safetensors"),
    ):
        new, old = load_file(out / f), load_file(WEIGHTS_DIR / f)
        assert new.keys() == old.keys()
        changed = [k for k in old if not torch.equal(new[k], old[k])]
        assert changed == ["decoder.conv_out.bias"]
        shift = (new[changed[0]].float() - old[changed[0]].float()).numpy()
        assert np.abs(shift).max() > 0
        this_run = np.subtract(offsets[scale], before.get(scale, [0.0, 0.0, 0.0]))
        np.testing.assert_allclose(shift, this_run, atol=2e-3)  # float16 bias
    for f in ("unet/diffusion_pytorch_model.safetensors", "vae/decoder_norm_stats.safetensors"):
        assert (out / f).read_bytes() == (WEIGHTS_DIR / f).read_bytes()
    m = load_embedded(device="cpu", path=out, scale="40x")  # loads, frozen statistics still fit
    assert m.frozen_norm_model is not None


def test_hf_energy_term_is_zero_for_equal_energy_and_grows_with_blur_or_grain(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from train_embedded import gaussian_blur, hf_energy_l1

    torch.manual_seed(0)
    x = (torch.rand(2, 3, 64, 64) * 0.6 - 0.5).clamp(-1, 1)
    assert float(hf_energy_l1(x, x)) == 0.0
    assert float(hf_energy_l1(x, x.flip(-1))) < 1e-4  # energy, not positions
    blurred, grainy = gaussian_blur(x, 1.0), (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    assert float(hf_energy_l1(blurred, x)) > 0.5 and float(hf_energy_l1(grainy, x)) > 0.1
