"""The shipped demo model: accurate, its data generator sound, its bundle usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nnvis_core.demo import CLASS_NAMES, DemoNet, load_demo_model
from nnvis_core.demo.model import WEIGHTS_PATH, normalize
from nnvis_core.demo.shapes import draw_sample, generate_dataset
from nnvis_core.demo.train import evaluate, train_demo_model

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "examples" / "demo"
# Not the training seed (0), its held-out seed (1000) nor the bundle seed (2024).
FRESH_SEED = 4242


@pytest.fixture(scope="module")
def model() -> DemoNet:
    return load_demo_model()


def test_shipped_weights_are_accurate_on_fresh_images(model: DemoNet) -> None:
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size < 5 * 1024 * 1024
    assert not model.training
    assert evaluate(model, 400, FRESH_SEED) >= 0.90


def test_architecture_is_hook_friendly(model: DemoNet) -> None:
    """Only module ReLUs (not inplace) and max-pools, so hooks see every activation."""
    kinds = {type(m) for m in model.features}
    assert kinds == {torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d}
    assert all(not m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU))
    assert isinstance(model.classifier[-1], torch.nn.Linear)
    assert model.classifier[-1].out_features == len(CLASS_NAMES)


def test_generator_is_deterministic() -> None:
    a = generate_dataset(24, seed=11)
    b = generate_dataset(24, seed=11)
    c = generate_dataset(24, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    one = draw_sample(np.random.default_rng(3), class_index=4)
    two = draw_sample(np.random.default_rng(3), class_index=4)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert one[2] == 4


def test_dataset_shapes_and_balance() -> None:
    images, masks, labels = generate_dataset(len(CLASS_NAMES) * 3, seed=5)
    n = len(CLASS_NAMES) * 3
    assert images.shape == (n, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (n, 64, 64) and masks.dtype == bool
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=len(CLASS_NAMES)).tolist() == [3] * len(CLASS_NAMES)


def test_masks_cover_the_drawn_object() -> None:
    images, masks, labels = generate_dataset(96, seed=FRESH_SEED)
    for image, mask, label in zip(images, masks, labels):
        area = mask.mean()
        assert 0.02 <= area <= 0.70, (CLASS_NAMES[label], area)
        pixels = image.astype(np.float64)
        inside = pixels[mask].mean(axis=0)
        outside = pixels[~mask].mean(axis=0)
        assert np.linalg.norm(inside - outside) > 25, CLASS_NAMES[label]


def test_bundle_is_complete_and_classified(model: DemoNet) -> None:
    images_root, masks_root = BUNDLE / "images", BUNDLE / "masks"
    assert sorted(p.name for p in images_root.iterdir()) == sorted(CLASS_NAMES)
    batch, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        files = sorted((images_root / name).glob("*.png"))
        assert len(files) == 5
        for path in files:
            assert path.name.startswith(f"{name}_")
            image = Image.open(path)
            mask = Image.open(masks_root / name / path.name)
            assert image.mode == "RGB" and mask.mode == "L"
            assert mask.size == image.size == (64, 64)
            mask_values = np.asarray(mask)
            assert set(np.unique(mask_values)) <= {0, 255} and mask_values.any()
            batch.append(np.asarray(image))
            labels.append(label)
    with torch.no_grad():
        pred = model(normalize(np.stack(batch))).argmax(1).numpy()
    assert (pred == np.array(labels)).mean() >= 0.90


def test_training_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "net.pt"
    lines: list[str] = []
    accuracy = train_demo_model(
        out, seed=1, epochs=1, train_size=256, log=lines.append, held_out_count=64
    )
    assert 0.0 <= accuracy <= 1.0
    assert any(line.startswith("epoch 1/1") for line in lines)
    net = load_demo_model(out)
    assert isinstance(net, DemoNet)


def test_missing_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="demo model weights"):
        load_demo_model(tmp_path / "nope.pt")
