"""`--model timm:NAME` (nnvis_core.models.timm_source): random init, local files, pretrained weights up
to the network boundary (huggingface_hub's cache, a faked download, offline), and one-line errors.

Uses timm's `test_vit` (370k parameters, 160 px) so that each test builds its model in well under a second.
"""

from __future__ import annotations

import sys

import pytest
import torch

from nnvis_core import torchvision_compat as tv

tv.import_torchvision()  # timm imports torchvision: it must come through nnvis's import first
timm = pytest.importorskip("timm")

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from nnvis_core.models import timm_source
from nnvis_core.models.loaded import ModelLoadError, ModelOptions
from nnvis_core.models.sources import load_model
from nnvis_core.run.registry import load_registry

NAME = "test_vit"
HUB_ID = "timm/test_vit.r160_in1k"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, online unless a test says otherwise, whose download fails the test."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)

    def no_network(repo, filename, revision):
        raise AssertionError(f"network access for {repo}/{filename}")

    monkeypatch.setattr(timm_source, "download_from_hub", no_network)
    return cache


def random_state(num_classes: int = 1000, seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(NAME, num_classes=num_classes).state_dict().items()}


def put_in_cache(cache, repo: str, filename: str, state: dict) -> None:
    """Lay out a file as huggingface_hub caches it: refs/main names a snapshot holding the file."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / filename))


def same_weights(module: torch.nn.Module, state: dict) -> bool:
    return all(torch.equal(module.state_dict()[k], v) for k, v in state.items())


def load(registry, spec: str, weights: str | None, **options):
    return load_model(spec, ModelOptions(weights=weights, **options), registry)


def test_the_source_registers_through_its_own_entry_point(registry):
    assert "timm" in registry.model_sources
    assert "pretrained weights may download" in registry.model_sources["timm"].item.description


def test_random_init_reads_preprocessing_and_imagenet_names_from_timm(registry):
    loaded = load(registry, f"timm:{NAME}", "none", seed=1)
    again = load(registry, f"timm:{NAME}", "none", seed=1)
    assert loaded.name == "timm:test_vit" and loaded.weights == "none (random init)" and loaded.source == "timm"
    assert same_weights(again.module, loaded.module.state_dict())  # seeded
    # timm's evaluation transform: resize to floor(160 / 0.95), centre-crop 160, mean and std 0.5
    assert loaded.preprocess.describe() == {"resize": 168, "crop": 160, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert len(loaded.class_names) == 1000 and loaded.class_names[:2] == ["tench", "goldfish"]


def test_a_local_state_dict_or_safetensors_file_with_its_own_classes(registry, tmp_path):
    state = random_state(num_classes=7)
    for path in (tmp_path / "weights.pth", tmp_path / "weights.safetensors"):
        if path.suffix == ".pth":
            torch.save({"state_dict": state}, path)
        else:
            save_file(state, str(path))
        loaded = load(registry, f"timm:{NAME}", str(path))
        assert same_weights(loaded.module, state) and loaded.weights == str(path)
        assert loaded.class_names == [f"class {i}" for i in range(7)]  # not ImageNet's


def test_local_files_that_are_unsafe_missing_or_of_another_model_fail_in_one_line(registry, tmp_path):
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": random_state(), "note": object()}, pickled)
    other = tmp_path / "convnext.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("test_convnext").state_dict(), str(other))
    cases = [(pickled, "pickled Python objects"), (other, "does not match architecture timm:test_vit"),
             (tmp_path / "missing.pth", "weights file not found")]
    for path, expected in cases:
        with pytest.raises(ModelLoadError, match=expected) as error:
            load(registry, f"timm:{NAME}", str(path))
        assert "\n" not in str(error.value)


def test_pretrained_weights_in_the_hub_cache_load_without_network(registry, hub_cache):
    state = random_state(seed=5)
    put_in_cache(hub_cache, HUB_ID, "model.safetensors", state)
    loaded = load(registry, f"timm:{NAME}", None)  # DEFAULT
    assert same_weights(loaded.module, state)
    assert loaded.weights == HUB_ID and loaded.name == "timm:test_vit"
    tagged = load(registry, f"timm:{NAME}", "r160_in1k")  # the tag by name: the same file
    assert same_weights(tagged.module, state) and tagged.name == "timm:test_vit.r160_in1k"


def test_pretrained_weights_not_cached_are_downloaded_from_the_hub(registry, hub_cache, tmp_path, monkeypatch):
    state, calls = random_state(seed=6), []
    downloaded = tmp_path / "downloaded.safetensors"
    save_file(state, str(downloaded))

    def fake_download(repo, filename, revision):
        calls.append((repo, filename, revision))
        return downloaded

    monkeypatch.setattr(timm_source, "download_from_hub", fake_download)
    loaded = load(registry, f"timm:{NAME}", "DEFAULT")
    assert calls == [(HUB_ID, "model.safetensors", None)]
    assert same_weights(loaded.module, state)


@pytest.mark.parametrize("offline", [True, False])
def test_no_cached_copy_and_no_network_is_one_line_naming_the_cache_and_the_alternative(
        registry, hub_cache, monkeypatch, offline):
    if offline:
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # the download must not even be tried
    else:
        def unreachable(repo, filename, revision):
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.")

        monkeypatch.setattr(timm_source, "download_from_hub", unreachable)
    with pytest.raises(ModelLoadError) as error:
        load(registry, f"timm:{NAME}", "DEFAULT")
    message = str(error.value)
    assert "\n" not in message and HUB_ID in message and str(hub_cache) in message and "--weights PATH" in message
    assert ("HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached") in message


@pytest.mark.parametrize("spec, weights, expected", [
    ("timm:deit_tiny_patchh16_224", "none", ("timm has no model 'deit_tiny_patchh16_224'; did you mean "
                                             "deit_tiny_patch16_224")),
    ("timm:vit_tinyy", "none", "did you mean vit_tiny_patch16_"),
    ("timm:", None, "needs a model name, e.g. timm:"),
    (f"timm:{NAME}", "in22k", "is not a pretrained tag of test_vit: use one of DEFAULT, none, r160_in1k, PATH"),
    (f"timm:{NAME}.nope", "none", "Invalid pretrained tag"),
])
def test_unknown_names_and_tags_fail_in_one_line_with_what_exists(registry, spec, weights, expected):
    with pytest.raises(ModelLoadError) as error:
        load(registry, spec, weights)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_without_timm_installed_the_error_says_how_to_install_it(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` meets when it is missing
    with pytest.raises(ModelLoadError) as error:
        load(registry, f"timm:{NAME}", "none")
    assert 'pip install "nnvis[timm]"' in str(error.value) and "\n" not in str(error.value)


def test_nnvis_layers_on_a_timm_model():
    from click.testing import CliRunner

    from nnvis_cli.main import cli

    result = CliRunner().invoke(cli, ["layers", "--model", f"timm:{NAME}", "--weights", "none"])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("blocks.5.norm1 ")]
    assert line.split()[1:5] == ["LayerNorm", "tokens", "1+10x10", "x64"] and "layer=auto" in line


def test_weights_in_an_original_layout_go_through_the_models_checkpoint_filter(registry, tmp_path):
    """An OpenCLIP checkpoint keeps timm's ViT under `visual.trunk.`: timm's filter strips it."""
    state = random_state(seed=7)
    path = tmp_path / "open_clip.safetensors"
    save_file({f"visual.trunk.{k}": v for k, v in state.items()}, str(path))
    loaded = load(registry, f"timm:{NAME}", str(path))
    assert same_weights(loaded.module, state)


def test_a_weights_file_with_arch_timm_loads_as_with_weights_path(registry, tmp_path):
    state = random_state(num_classes=7)
    for path in (tmp_path / "weights.pth", tmp_path / "weights.safetensors"):
        if path.suffix == ".pth":
            torch.save(state, path)
        else:
            save_file(state, str(path))
        by_arch = load(registry, str(path), None, arch=f"timm:{NAME}")
        by_weights = load(registry, f"timm:{NAME}", str(path))
        assert same_weights(by_arch.module, state)
        assert by_arch.name == by_weights.name and by_arch.weights == str(path)
        assert by_arch.class_names == by_weights.class_names
        assert by_arch.preprocess.describe() == by_weights.preprocess.describe()
