"""Every model source, up to the network boundary, with one-line errors."""

from __future__ import annotations

import pickle
import socket

import pytest
import torch

from nnvis_core.demo import CLASS_NAMES, DemoNet
from nnvis_core.models import LayerNotFound, ModelLoadError, ModelOptions, find_layer, last_conv_layer, load_model
from nnvis_core.models.torchvision_source import cache_path, weights_enum
from nnvis_core.run.registry import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def load(spec, registry, **options):
    return load_model(spec, ModelOptions(**options), registry)


def test_demo_model(registry):
    model = load("demo", registry)
    assert model.class_names == list(CLASS_NAMES)
    assert model.preprocess.crop == 64
    assert not model.module.training
    out = model.module(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, len(CLASS_NAMES))


def test_torchvision_random_init_needs_no_network(registry, no_network):
    model = load("torchvision:resnet18", registry, weights="none")
    assert len(model.class_names) == 1000 and model.class_names[0] == "tench"
    assert (model.preprocess.resize, model.preprocess.crop) == (256, 224)
    assert model.preprocess.side == 224  # the crop is what the model is given, not the resize


def test_torchvision_cache_hit_loads_without_network(registry, torch_home, no_network):
    weights = weights_enum("resnet18").DEFAULT
    from nnvis_core import torchvision_compat as tv

    reference = tv.torchvision_models().resnet18(weights=None)
    path = cache_path(weights.url)
    assert str(path).startswith(str(torch_home))
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load("torchvision:resnet18", registry)
    assert model.weights == str(weights)
    assert torch.equal(model.module.fc.weight, reference.fc.weight)


def test_torchvision_offline_without_cache_is_one_clear_line(registry, torch_home, no_network):
    with pytest.raises(ModelLoadError) as caught:
        load("torchvision:resnet18", registry, weights="IMAGENET1K_V1")
    message = str(caught.value)
    assert "\n" not in message
    assert str(cache_path(weights_enum("resnet18").IMAGENET1K_V1.url)) in message
    assert "--weights PATH" in message


def test_torchvision_local_weights_file(registry, tmp_path, no_network):
    from nnvis_core import torchvision_compat as tv

    reference = tv.torchvision_models().alexnet(weights=None, num_classes=7)
    path = tmp_path / "alexnet7.pt"
    torch.save(reference.state_dict(), path)
    model = load("torchvision:alexnet", registry, weights=str(path))
    assert model.class_names == [f"class {i}" for i in range(7)]
    assert torch.equal(model.module.classifier[-1].weight, reference.classifier[-1].weight)


@pytest.mark.parametrize(
    "spec, weights, message",
    [
        ("torchvision:resnet81", None, "did you mean resnet18"),
        ("torchvision:resnet18", "IMAGENET9K", "not a weights name of resnet18"),
        ("torchvision:", None, "needs a model name"),
        ("nosuch:thing", None, "no model source matches"),
        ("missing_model.pt", None, "no model source matches"),
    ],
)
def test_model_errors(registry, spec, weights, message, no_network):
    with pytest.raises(ModelLoadError, match=message):
        load(spec, registry, weights=weights)


def test_torchscript_file(registry, tmp_path):
    net = DemoNet().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(path))
    model = load(str(path), registry, labels=None)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.module(x), net(x))
    assert model.source == "torchscript"


def test_state_dict_needs_arch_and_matching_architecture(registry, tmp_path):
    net = DemoNet().eval()
    path = tmp_path / "demo_state.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    with pytest.raises(ModelLoadError, match="needs --arch"):
        load(str(path), registry)
    model = load(str(path), registry, arch="demo")
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model.module(x), net(x))
    with pytest.raises(ModelLoadError, match="does not match architecture torchvision:resnet18"):
        load(str(path), registry, arch="torchvision:resnet18")


def test_pickled_module_needs_trust(registry, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(DemoNet(), path)
    with pytest.raises(ModelLoadError, match="--trust-checkpoint"):
        load(str(path), registry)
    model = load(str(path), registry, trust_checkpoint=True, labels=None)
    assert isinstance(model.module, DemoNet)


class _Payload:
    """Unpickling this object writes a file: the proof that code ran."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_runs(registry, tmp_path):
    marker = tmp_path / "pwned"
    _Payload.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Payload()}, path)
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    for candidate in (path, raw):
        with pytest.raises(ModelLoadError, match="not|pickled"):
            load(str(candidate), registry, arch="demo")
    assert not marker.exists()


def test_labels_file_overrides_and_is_checked(registry, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"shape {i}" for i in range(len(CLASS_NAMES))) + "\n")
    assert load("demo", registry, labels=labels).class_names[0] == "shape 0"
    labels.write_text("only\ntwo\n")
    with pytest.raises(ModelLoadError, match="2 class names"):
        load("demo", registry, labels=labels)


def test_layers_by_name_with_near_matches():
    net = DemoNet()
    assert find_layer(net, "features.0") is net.features[0]
    with pytest.raises(LayerNotFound, match="did you mean"):
        find_layer(net, "feature.0")
    assert isinstance(find_layer(net, last_conv_layer(net)), torch.nn.Conv2d)
