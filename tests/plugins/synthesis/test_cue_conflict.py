"""`nnvis cue-conflict` (issue 16): names, CSV, determinism and refusals, on tiny images and few steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnvis_cli.main import cli
from nnvis_core.toolkit import CUE_CONFLICT_CSV, parse_cue_conflict_name, read_cue_conflict_csv
from nnvis_plugins.synthesis.cue_conflict_images import class_images, plan_pairs

DEMO_IMAGES = Path(__file__).resolve().parents[3] / "examples" / "demo" / "images"


def shape_folder(root: Path, per_class: dict[str, int]) -> Path:
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            shutil.copy(DEMO_IMAGES / name / f"{name}_{index:02d}.png", root / name / f"{name}_{index:02d}.png")
    return root


def run(*args: str):
    return CliRunner().invoke(cli, ["cue-conflict", *args, "--size", "32", "--steps", "1", "-q"])


def test_the_command_writes_named_images_and_their_csv(tmp_path):
    shapes = shape_folder(tmp_path / "shapes", {"star": 1, "ring": 1})
    textures = shape_folder(tmp_path / "textures", {"ring": 1, "cross": 1})
    outputs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        result = run(str(shapes), str(textures), "-o", str(out), "--per-pair", "2")
        assert result.exit_code == 0, result.output
        outputs.append(out)
    labels = read_cue_conflict_csv(outputs[0] / CUE_CONFLICT_CSV)
    expected = {(s, t) for s in ("star", "ring") for t in ("ring", "cross") if s != t}
    assert set(labels.values()) == expected and len(labels) == 2 * len(expected)
    written = sorted(p.name for p in outputs[0].glob("*.png"))
    assert written == sorted(labels)
    for name, cues in labels.items():
        assert parse_cue_conflict_name(name, ["star", "ring", "cross"]) == cues
        assert Image.open(outputs[0] / name).size == (32, 32)
        assert np.array_equal(np.asarray(Image.open(outputs[0] / name)), np.asarray(Image.open(outputs[1] / name)))


def test_pairs_are_a_seeded_draw_of_different_classes(tmp_path):
    shapes = class_images(shape_folder(tmp_path / "shapes", {"star": 3, "ring": 3, "arrow": 2}))
    plan = plan_pairs(shapes, shapes, per_pair=2, seed=5)
    assert len(plan) == 3 * 2 * 2
    assert all(p.shape != p.texture and p.shape_source.parent.name == p.shape
               and p.texture_source.parent.name == p.texture for p in plan)
    assert plan == plan_pairs(shapes, shapes, per_pair=2, seed=5)
    assert any(plan_pairs(shapes, shapes, per_pair=2, seed=seed) != plan for seed in range(6, 10))
    first = [(p.shape_source, p.texture_source) for p in plan if (p.shape, p.texture) == ("star", "ring")]
    assert len(set(first)) == 2  # no repeat while the classes have images left


@pytest.mark.parametrize("layout, message", [
    ({}, "no class subfolders with images"),
    ({"loose.png": None}, "no class subfolders with images"),
    ({"star": 1}, "give no pair of different classes"),
])
def test_the_command_refuses_folders_it_cannot_pair(tmp_path, layout, message):
    root = tmp_path / "in"
    root.mkdir()
    for name, count in layout.items():
        if count is None:
            shutil.copy(DEMO_IMAGES / "star" / "star_00.png", root / name)
        else:
            shape_folder(root, {name: count})
    result = run(str(root), str(root), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.output and (str(root) in result.output or "star" in result.output)
    assert not (tmp_path / "out").exists()


def test_a_missing_folder_is_named(tmp_path):
    result = run(str(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and f"{tmp_path / 'nowhere'}: no such folder" in result.output
