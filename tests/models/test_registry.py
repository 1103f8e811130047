"""Registry, hub safety rules, device/dtype choice and the float32 fallback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from napari_cytosyn.models import (
    HubOptions,
    ModelAccessError,
    PickleWeightsRefused,
    UnknownModelError,
    available,
    get_info,
    load_model,
)
from napari_cytosyn.models.backend import BackendModel, PrecisionFallbackWarning
from napari_cytosyn.models.device import resolve_device, resolve_dtype
from napari_cytosyn.models.hub import _progress_tqdm, check_safetensors
from napari_cytosyn.models.protocol import FlowInterpolant
from napari_cytosyn.models.registry import parse_name


def test_available_lists_registered_models_with_metadata():
    infos = {i.name: i for i in available()}
    assert next(iter(infos)) == "cytosyn-tiny"
    assert {"cytosyn-tiny", "cytosyn-tiny-40x", "cytosyn", "pixcell-256", "pixcell-1024"} <= set(
        infos
    )
    assert infos["cytosyn-tiny-cells"].backend == "embedded-cells"
    assert infos["cytosyn-tiny-40x"].backend == "embedded"
    cyto = infos["cytosyn"]
    assert (cyto.source, cyto.gated, cyto.tile_px, cyto.mpp, cyto.latent_channels) == (
        "Owkin-Bioptimus/CytoSyn",
        True,
        224,
        0.5,
        4,
    )
    assert "non-commercial" in cyto.licence
    assert "H0-mini" in cyto.conditioning
    assert cyto.defaults["guidance_interval"] == (0.0, 0.75)
    assert infos["pixcell-256"].tile_px == 256 and infos["pixcell-1024"].tile_px == 1024
    assert infos["pixcell-1024"].latent_channels == 16
    assert infos["cytosyn-tiny"].gated is False and infos["cytosyn-tiny"].source is None
    assert (
        infos["cytosyn"].to_dict()["access_url"] == "https://huggingface.co/Owkin-Bioptimus/CytoSyn"
    )


def test_notice_shows_licence_and_how_to_get_access_for_gated_models():
    notice = get_info("cytosyn").notice
    assert "CC-BY-NC-ND 4.0" in notice
    assert "https://huggingface.co/Owkin-Bioptimus/CytoSyn" in notice
    assert "HF_TOKEN" in notice
    assert "Gated" not in get_info("cytosyn-tiny").notice


def test_names_with_explicit_sources_are_parsed():
    info, source = parse_name("cytosyn:/data/CytoSyn")
    assert info.name == "cytosyn" and source == "/data/CytoSyn"
    info, source = parse_name("diffusers:someone/some-ldm")
    assert info.backend == "diffusers" and source == "someone/some-ldm"
    assert parse_name("pixcell-256") == (get_info("pixcell-256"), None)


@pytest.mark.parametrize("name", ["stable-diffusion", "diffusers:", "cytosyn-tiny:/x", ""])
def test_unknown_or_malformed_names_are_refused_with_the_list(name):
    with pytest.raises(UnknownModelError) as err:
        load_model(name)
    if name == "stable-diffusion":
        assert "cytosyn-tiny" in str(err.value) and "diffusers:<hub id or folder>" in str(err.value)


def test_unknown_hub_option_is_named():
    with pytest.raises(TypeError, match="revsion"):
        HubOptions.from_kwargs({"revsion": "main"})


def test_gated_model_offline_without_token_gives_clear_message(tmp_path):
    with pytest.raises(ModelAccessError) as err:
        load_model("cytosyn", device="cpu", cache_dir=str(tmp_path / "empty-cache"))
    text = str(err.value)
    assert "Owkin-Bioptimus/CytoSyn" in text
    assert "offline mode" in text
    assert "gated" in text and "HF_TOKEN" in text
    assert "No Hugging Face token was found" in text
    assert "local copy" in text


def test_local_files_only_is_offline_even_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelAccessError, match="not in the local cache"):
        load_model("pixcell-256", local_files_only=True, cache_dir=str(tmp_path))


def test_pickle_only_component_is_refused(cytosyn_native, tmp_path):
    folder = shutil.copytree(cytosyn_native, tmp_path / "pickled")
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(
        PickleWeightsRefused, match=r"pickled weights \(diffusion_pytorch_model.bin\)"
    ):
        load_model(f"cytosyn:{folder}", device="cpu")
    (folder / "vae" / "diffusion_pytorch_model.bin").rename(folder / "vae" / "model.ckpt")
    with pytest.raises(PickleWeightsRefused, match=r"model\.ckpt"):
        check_safetensors(folder, ["transformer", "vae"])


def test_progress_adapter_reports_bytes():
    seen = []
    bar_cls = _progress_tqdm(lambda done, total: seen.append((done, total)))
    files = bar_cls(total=3, disable=True)
    files.update(1)  # reported: no bytes bar yet
    written = bar_cls(total=1000, unit="B", desc="Reconstructing", disable=True)
    transfer = bar_cls(total=1000, unit="B", desc="Downloading bytes", disable=True)
    written.update(400)
    transfer.update(400)
    files.update(1)  # not reported any more: bytes are
    written.update(600)
    assert seen == [(1, 3), (400, 1000), (1000, 1000)]


def test_importing_models_package_does_not_import_torch():
    code = (
        "import sys, napari_cytosyn.models as m; m.available(); m.get_info('cytosyn'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_device_and_dtype_resolution_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else None
    dev = resolve_device("auto")
    if expected:
        assert dev.type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")


class _VaeStub(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))


class _NanInReducedPrecision(nn.Module):
    """Stands in for a network whose bf16 activations overflow: NaN unless run in float32."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(2.0))

    def forward(self, z, t, cond=None):
        if self.gain.dtype != torch.float32:
            return torch.full_like(z, float("nan"))
        return z * self.gain


def test_non_finite_bf16_step_retries_in_float32_with_a_warning():
    net = _NanInReducedPrecision().to(torch.bfloat16)
    model = BackendModel(
        name="overflowing",
        vae=_VaeStub().to(torch.bfloat16),
        net=net,
        interpolant=FlowInterpolant(),
        target="flow",
        dtype=torch.bfloat16,
    )
    z = torch.ones(1, 4, 2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x0 = model.denoise(z, torch.tensor([0.5]))
    assert any(issubclass(w.category, PrecisionFallbackWarning) for w in caught)
    assert model.dtype == torch.float32 and net.gain.dtype == torch.float32
    assert model.info["precision_fallback"] == "float32"
    # v = 2 z in float32 -> x0 = z - 0.5 * 2 z = 0
    torch.testing.assert_close(x0, torch.zeros_like(z))


def _fake_hub_cache(cache, repo_id, folder, commit):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_offline_load_uses_the_cached_snapshot_and_pins_revisions(cytosyn_native, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(tmp_path / "cache", "Owkin-Bioptimus/CytoSyn", cytosyn_native, commit)
    model = load_model("cytosyn", device="cpu", cache_dir=str(tmp_path / "cache"))
    assert model.info["source"] == "Owkin-Bioptimus/CytoSyn" and model.tile_px == 224
    pinned = load_model("cytosyn", device="cpu", cache_dir=str(tmp_path / "cache"), revision=commit)
    assert pinned.provenance()["revision"] == commit
    assert model.provenance()["commit"] == commit and model.name == "cytosyn"
    with pytest.raises(ModelAccessError, match="revision v2"):
        load_model("cytosyn", device="cpu", cache_dir=str(tmp_path / "cache"), revision="v2")


def test_downloads_ask_for_safe_files_with_the_environment_token(monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        raise huggingface_hub.errors.LocalEntryNotFoundError("stop here")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelAccessError, match="could not be reached"):
        load_model("pixcell-256", device="cpu", revision="abc", cache_dir=str(tmp_path))
    assert seen["repo_id"] == "StonyBrook-CVLab/PixCell-256"
    assert seen["token"] == "hf_test_token" and seen["revision"] == "abc"
    assert seen["local_files_only"] is False and seen["cache_dir"] == str(tmp_path)
    patterns = seen["allow_patterns"]
    assert "*.safetensors" in patterns
    assert not any(p.endswith((".bin", ".ckpt", ".pt", ".pth", ".pkl")) for p in patterns)


def test_default_model_is_the_embedded_one():
    embedded = pytest.importorskip("napari_cytosyn.models.embedded")
    try:
        embedded.embedded_config()
    except FileNotFoundError as err:
        pytest.skip(f"embedded weights not in this checkout yet: {err}")
    model = load_model(device="cpu")
    assert isinstance(model, BackendModel)
    assert (model.tile_px, model.latent_factor, model.latent_channels) == (224, 8, 4)
    z = torch.randn(1, 4, 28, 28)
    x0 = model.denoise(z, torch.tensor([0.5]))
    assert x0.shape == z.shape and torch.isfinite(x0).all()


class _PlainCallableNet:
    """A net that is not an nn.Module but holds one (like the embedded model's UNet wrapper)."""

    def __init__(self):
        self.inner = _NanInReducedPrecision()

    def __call__(self, z, t, cond=None):
        return self.inner(z, t, cond)


def test_fallback_casts_modules_held_by_a_plain_callable_net():
    net = _PlainCallableNet()
    net.inner.to(torch.bfloat16)
    model = BackendModel(
        name="plain",
        vae=_VaeStub(),
        net=net,
        interpolant=FlowInterpolant(),
        target="flow",
        dtype=torch.bfloat16,
    )
    with pytest.warns(PrecisionFallbackWarning):
        x0 = model.denoise(torch.ones(1, 4, 2, 2), torch.tensor([0.25]))
    assert net.inner.gain.dtype == torch.float32
    torch.testing.assert_close(x0, torch.full((1, 4, 2, 2), 0.5))
