"""Models whose forward returns more than a tensor (a dict, an object with .logits, a tuple, a named
tuple): nnvis reads their class scores, the maps equal those of the same model returning a tensor,
and an output without scores is refused in one line (exit 2 from the CLI)."""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import nnvis
from nnvis_cli.main import cli
from nnvis_core.models.logits import OutputError, logits_of

SMALL = {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
NAMES = [f"c{i}" for i in range(5)]
Pair = namedtuple("Pair", ["features", "scores"])


class Classifier(torch.nn.Module):
    """A small convnet whose forward returns its scores wrapped as `wrap` says."""

    def __init__(self, wrap: str = "tensor"):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 5)
        self.wrap = wrap

    def forward(self, x):
        features = self.features(x)
        scores = self.head(features.mean(dim=(2, 3)))
        return {
            "tensor": lambda: scores,
            "dict": lambda: {"pooled": features.mean(dim=(2, 3)), "logits": scores},
            "object": lambda: SimpleNamespace(logits=scores, hidden=features),
            "tuple": lambda: (scores, features),
            "named": lambda: Pair(features, scores),
            "aux": lambda: {"main": scores, "aux": scores * 0},
            "text": lambda: "no scores here",
            "tokens": lambda: features.flatten(2).transpose(1, 2),  # an encoder: (N, tokens, C), no head
        }[self.wrap]()


def images() -> list[torch.Tensor]:
    return [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def heatmap(run, image: str, method: str):
    """The first map a method drew on an image."""
    return next(a.values for a in run.result(image, method).artifacts if a.kind == "heatmap")


def test_the_common_shapes_give_their_scores():
    x = torch.randn(2, 5)
    assert logits_of(x) is x
    assert logits_of({"logits": x, "other": 1}) is x
    assert logits_of(SimpleNamespace(logits=x)) is x
    assert logits_of((x, torch.zeros(3))) is x
    assert logits_of(Pair(torch.zeros(3), x), key="scores") is x
    assert logits_of((torch.zeros(3), x), key="1") is x
    assert logits_of({"main": x}, key="main") is x


@pytest.mark.parametrize("output, key, message", [
    ({"a": torch.zeros(1), "b": torch.zeros(1)}, None, "the model returns a dict with keys a, b: choose"),
    ({"a": torch.zeros(1)}, "b", "--model-output 'b': the model's output has no key 'b' (keys: a)"),
    ((torch.zeros(1),), "3", "a tuple of 1 values (positions 0 to 0)"),
    ("text", None, "the model returns a str, with no tensor of class scores"),
    ({"logits": "x"}, None, "output 'logits' of the model is a str, not a tensor"),
])
def test_an_output_without_scores_is_refused_naming_what_it_holds(output, key, message):
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logits_of(output, key)


@pytest.mark.parametrize("wrap", ["dict", "object", "tuple", "named"])
def test_maps_of_a_wrapped_output_equal_those_of_the_plain_model(wrap):
    key = "scores" if wrap == "named" else None
    plain = nnvis.run(images(), Classifier(), plugins=["saliency", "gradcam"], preprocess=SMALL,
                      class_names=NAMES, device="cpu", progress=False)
    model = Classifier(wrap)
    wrapped = nnvis.run(images(), model, plugins=["saliency", "gradcam"], preprocess=SMALL, class_names=NAMES,
                        device="cpu", progress=False, model_output=key)
    for image in plain.images:
        for method in ("saliency", "gradcam"):
            assert heatmap(wrapped, image, method).tolist() == heatmap(plain, image, method).tolist()
    notes = wrapped.report()["by_model"][0]["model"]["notes"]
    assert any(note.startswith("the model's forward returns ") for note in notes), notes
    assert not model._forward_hooks  # the model given goes back as it came
    assert not isinstance(model(torch.rand(1, 3, 32, 32)), torch.Tensor)


def test_the_output_chosen_by_key_is_the_one_explained():
    model = Classifier("aux")
    run = nnvis.run(images(), model, plugins=["saliency"], preprocess=SMALL, class_names=NAMES, device="cpu",
                    progress=False, model_output="main")
    assert abs(heatmap(run, run.images[0], "saliency")).sum() > 0
    with pytest.raises(nnvis.UsageError, match="the model returns a dict with keys main, aux: choose"):
        nnvis.run(images(), Classifier("aux"), plugins=["saliency"], preprocess=SMALL, class_names=NAMES,
                  device="cpu", progress=False)
    explained = nnvis.explain(Classifier("aux"), images()[0], "saliency", preprocess=SMALL, class_names=NAMES,
                              device="cpu", model_output="main")
    assert explained.map.shape == (32, 32)


def test_the_cli_reads_a_pickled_model_returning_a_dict(demo_images, tmp_path):
    path = tmp_path / "dict_model.pt"
    torch.save(Classifier("dict"), path)
    result = CliRunner().invoke(cli, ["report", str(demo_images), "--model", str(path), "--trust-checkpoint",
                                      "--resize", "32", "--crop", "32", "--plugins", "saliency,gradcam",
                                      "-o", str(tmp_path / "out"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "index.html").is_file()


@pytest.mark.parametrize("wrap, extra, message", [
    ("text", [], "the model returns a str, with no tensor of class scores"),
    ("dict", ["--model-output", "nope"], "--model-output 'nope': the model's output has no key 'nope'"),
    ("tokens", [], "the model returns a tensor of shape (1, 1024, 8), not (batch, classes) class scores"),
])
def test_the_cli_refuses_an_output_without_scores_in_one_line(demo_images, tmp_path, wrap, extra, message):
    path = tmp_path / "model.pt"
    torch.save(Classifier(wrap), path)
    result = CliRunner().invoke(cli, ["report", str(demo_images), "--model", str(path), "--trust-checkpoint",
                                      "--resize", "32", "--crop", "32", "--plugins", "saliency", *extra,
                                      "-o", str(tmp_path / "out"), "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
