"""`--model hf:NAME_OR_DIR`: Hugging Face transformers image classifiers, on small random models saved
to a folder (no network): their class names, their preprocessing, maps equal to the same model's
logits explained in memory, seeded random weights, and one-line errors up to the network boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from nnvis_core import torchvision_compat

torchvision_compat.import_torchvision()  # transformers imports torchvision: after nnvis's workaround
transformers = pytest.importorskip("transformers")

import nnvis  # noqa: E402
from nnvis_cli.main import cli  # noqa: E402
from nnvis_core.models.hf_source import preprocess_from  # noqa: E402

LABELS = ["circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow"]


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    """A 32 px ViT with the demo's class names and a processor that resizes to 32x32."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=len(LABELS),
                                    id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = {"do_resize": True, "size": {"height": 32, "width": 32}, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "do_rescale": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


class Logits(torch.nn.Module):
    """The same model, returning its logits tensor: the independent path the hf: source must match."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


@pytest.mark.parametrize("config, expected", [
    ({"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
      "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 1, 1]}, (256, 224, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0))),
    ({"size": {"shortest_edge": 224}, "crop_pct": 0.875}, (256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
    ({"size": {"height": 384, "width": 384}, "do_normalize": False}, (384, 384, (0.0,) * 3, (1.0,) * 3)),
])
def test_the_image_processor_config_becomes_nnvis_preprocessing(config, expected):
    preprocess, _ = preprocess_from(config)
    assert (preprocess.resize, preprocess.crop, tuple(preprocess.mean), tuple(preprocess.std)) == expected


def test_a_saved_folder_gives_a_report_with_its_labels_and_preprocessing(vit_folder, demo_images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["report", str(demo_images), "--model", f"hf:{vit_folder}", "--plugins",
                                      "saliency,gradcam,attention_rollout", "-o", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    model = report["by_model"][0]["model"]
    assert model["source"] == "transformers" and model["num_classes"] == len(LABELS)
    assert model["preprocess"] == {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert any("reads its 'logits'" in note for note in model["notes"])
    images = report["by_model"][0]["images"]
    assert all(result["status"] == "ok" for image in images for result in image["results"].values())
    assert {image["true_class"]["name"] for image in images} <= set(LABELS)


def test_its_maps_equal_the_same_model_s_logits_explained_in_memory(vit_folder, demo_images):
    image = sorted(demo_images.rglob("*.png"))[0]
    through_source = nnvis.explain(f"hf:{vit_folder}", image, "saliency", device="cpu")
    model = transformers.AutoModelForImageClassification.from_pretrained(vit_folder).eval()
    preprocess = {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    in_memory = nnvis.explain(Logits(model), image, "saliency", preprocess=preprocess, class_names=LABELS,
                              device="cpu")
    assert through_source.target == in_memory.target
    assert torch.allclose(through_source.map, in_memory.map, rtol=1e-5, atol=1e-7)


def test_weights_none_is_a_seeded_random_model_of_the_same_config(vit_folder):
    from nnvis_core.models import ModelOptions
    from nnvis_core.models.hf_source import load_hf

    first = load_hf(str(vit_folder), ModelOptions(weights="none", seed=3)).module.state_dict()
    again = load_hf(str(vit_folder), ModelOptions(weights="none", seed=3)).module.state_dict()
    saved = load_hf(str(vit_folder), ModelOptions()).module.state_dict()
    assert first.keys() == saved.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], saved[key]) for key in first)


def test_a_hub_model_that_cannot_be_fetched_is_one_line(demo_images, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-m", "nnvis_cli.main", "report", str(demo_images), "--model",
                           "hf:nnvis-tests/no-such-model", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf:nnvis-tests/no-such-model: not found locally or on the hub" in lines[0]
    assert str(tmp_path / "hub") in lines[0]


def test_a_folder_of_something_else_is_one_line(demo_images, tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(demo_images), "--model", f"hf:{tmp_path / 'empty'}",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "not a transformers image classifier folder" in result.output
