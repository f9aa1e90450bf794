"""The shape_bias plugin (issue 16): cue labels, the count against a hand-built table, the 16-category mapping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from nnvis_cli.main import cli
from nnvis_core import Chart, Text
from nnvis_core.contract.context import ImageItem
from nnvis_core.images import ImageRecord
from nnvis_core.toolkit import (
    CUE_CONFLICT_CSV,
    CueConflictError,
    cue_conflict_name,
    parse_cue_conflict_name,
    read_cue_conflict_csv,
    write_cue_conflict_csv,
)
from nnvis_plugins.shape_bias.categories import IMAGENET16, category_probabilities
from nnvis_plugins.shape_bias.counting import Trial, count_cues
from nnvis_plugins.shape_bias.plugin import ShapeBias

DEMO_IMAGES = Path(__file__).resolve().parents[3] / "examples" / "demo" / "images"
PAPER_CATEGORIES = {"airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog",
                    "elephant", "keyboard", "knife", "oven", "truck"}


def test_names_round_trip_and_follow_both_conventions():
    classes = ["cat", "ice-cream", "Dog"]
    assert parse_cue_conflict_name(cue_conflict_name("ice-cream", "cat", 12), classes) == ("ice-cream", "cat")
    assert parse_cue_conflict_name("cat1-dog2.png", classes) == ("cat", "Dog")
    assert parse_cue_conflict_name("dog10-ice-cream3.png", classes) == ("Dog", "ice-cream")
    assert parse_cue_conflict_name("cat_00.png", classes) is None
    assert parse_cue_conflict_name("cat-horse_0.png", classes) is None


def test_the_csv_round_trips_and_a_bad_one_names_its_file(tmp_path):
    rows = [("a.png", "cat", "dog"), ("b.png", "dog", "cat")]
    write_cue_conflict_csv(tmp_path / CUE_CONFLICT_CSV, rows)
    assert read_cue_conflict_csv(tmp_path / CUE_CONFLICT_CSV) == {f: (s, t) for f, s, t in rows}
    (tmp_path / "bad.csv").write_text("name,label\na.png,cat\n")
    with pytest.raises(CueConflictError, match="bad.csv: expected the columns file, shape, texture"):
        read_cue_conflict_csv(tmp_path / "bad.csv")


def test_the_count_matches_a_hand_built_decision_table():
    # shape  texture  decision   follows
    table = [("cat", "dog", "cat"),       # shape
             ("cat", "car", "cat"),       # shape
             ("cat", "dog", "cat"),       # shape
             ("cat", "car", "car"),       # texture
             ("cat", "dog", "bird"),      # neither
             ("dog", "cat", "cat"),       # texture
             ("dog", "car", "car"),       # texture
             ("dog", "dog", "dog")]       # same class for both cues: left out
    overall, per_category = count_cues([Trial(f"{i}.png", *row) for i, row in enumerate(table)])
    assert (overall.shape, overall.texture, overall.neither) == (3, 3, 1)
    assert overall.shape_bias == pytest.approx(3 / 6) and overall.cue_share == pytest.approx(6 / 7)
    assert list(per_category) == ["cat", "dog"]
    assert per_category["cat"].shape_bias == pytest.approx(3 / 4)
    assert per_category["dog"].shape_bias == 0.0 and per_category["dog"].images == 2
    assert count_cues([Trial("x.png", "cat", "dog", "bird")])[0].shape_bias is None


def test_the_sixteen_categories_follow_the_published_mapping():
    from nnvis_core.torchvision_compat import torchvision_models

    assert set(IMAGENET16) == PAPER_CATEGORIES
    members = [index for indices in IMAGENET16.values() for index in indices]
    assert len(members) == len(set(members)), "a class in two categories"
    assert all(0 <= index < 1000 for index in members)
    names = torchvision_models().ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # no download: metadata only
    assert names[281] == "tabby" and 281 in IMAGENET16["cat"]
    assert names[404] == "airliner" and IMAGENET16["airplane"] == (404,)
    for category, word in [("bear", "bear"), ("clock", "clock"), ("elephant", "elephant"), ("keyboard", "keyboard")]:
        assert all(word in names[i] for i in IMAGENET16[category]), category
    assert all("bottle" in names[i] or "jug" in names[i] for i in IMAGENET16["bottle"])
    assert names.index("ostrich") not in members and names.index("throne") in IMAGENET16["chair"]
    assert len(IMAGENET16["dog"]) == 109 and len(IMAGENET16["bird"]) == 49  # the published lists' lengths


def test_a_category_is_the_mean_of_its_classes_probabilities():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.randn(3, 1000, generator=generator).softmax(dim=1)
    aggregated = category_probabilities(probabilities)
    for column, members in enumerate(IMAGENET16.values()):
        expected = torch.stack([probabilities[:, i] for i in members]).sum(0) / len(members)
        assert torch.allclose(aggregated[:, column], expected)
    # One strong dog class loses to a weaker airplane: the mean over 109 dog classes is small.
    one = torch.zeros(1, 1000)
    one[0, 207], one[0, 404] = 0.3, 0.2
    assert list(IMAGENET16)[int(category_probabilities(one).argmax())] == "airplane"


def fake_items(tmp_path: Path, decisions: dict[str, int], classes: int) -> list[ImageItem]:
    """Items named `decisions`' keys whose model puts all probability on the given class."""
    items = []
    for index, (name, decided) in enumerate(decisions.items()):
        probabilities = torch.zeros(classes)
        probabilities[decided] = 1.0
        record = ImageRecord(index, tmp_path / name, name, None)
        items.append(ImageItem(record, None, None, None, probabilities))
    return items


def test_the_plugin_measures_the_models_own_classes(tmp_path):
    classes = ["circle", "square", "star"]
    decisions = {"circle-square_0.png": 0, "circle-star_0.png": 2, "square-star_0.png": 0, "star-circle_0.png": 2,
                 "star-star_0.png": 2}
    result = ShapeBias().run_dataset(SimpleNamespace(class_names=classes), fake_items(tmp_path, decisions, 3),
                                     {"decisions": "auto"})
    assert result.metrics["shape_bias"] == pytest.approx(2 / 3)  # shape, texture, neither, shape
    assert result.metrics["images"] == 4 and result.metrics["cue_share"] == pytest.approx(3 / 4)
    chart = next(a for a in result.artifacts if isinstance(a, Chart))
    assert list(chart.x_ticks) == ["circle", "star"]  # square's one decision followed neither cue
    assert chart.series["shape decisions"] == [0.5, 1.0]
    assert set(result.image_artifacts) == {0, 1, 2, 3}
    assert "follows the texture" in result.image_artifacts[1][0].text


def test_an_imagenet_model_decides_among_the_sixteen_categories(tmp_path):
    # Persian cat, tabby, trailer truck
    decisions = {"cat1-dog2.png": 283, "dog3-cat1.png": 281, "car1-truck2.png": 867}
    result = ShapeBias().run_dataset(SimpleNamespace(class_names=[str(i) for i in range(1000)]),
                                     fake_items(tmp_path, decisions, 1000), {"decisions": "auto"})
    assert result.metrics["shape_bias"] == pytest.approx(1 / 3)
    assert "16 categories" in result.artifacts[0].caption


def test_the_csv_wins_over_the_names(tmp_path):
    write_cue_conflict_csv(tmp_path / CUE_CONFLICT_CSV, [("a.png", "star", "circle"), ("b.png", "circle", "star")])
    result = ShapeBias().run_dataset(SimpleNamespace(class_names=["circle", "star"]),
                                     fake_items(tmp_path, {"a.png": 0, "b.png": 0}, 2), {"decisions": "classes"})
    assert result.metrics["shape_bias"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("names, reason", [
    (["circle_00.png", "star_00.png"], "no file name follows a cue-conflict convention"),
    (["horse1-zebra2.png"], "the file names name classes the model does not have: horse, zebra"),
])
def test_the_plugin_refuses_folders_it_cannot_measure(tmp_path, names, reason):
    result = ShapeBias().run_dataset(SimpleNamespace(class_names=["circle", "star"]),
                                     fake_items(tmp_path, dict.fromkeys(names, 0), 2), {"decisions": "auto"})
    assert isinstance(result.artifacts[0], Text) and result.artifacts[0].title == "refused"
    assert reason in result.artifacts[0].text


def test_imagenet16_decisions_need_an_imagenet_model():
    ctx = SimpleNamespace(class_names=["circle", "star"])
    refusal = ShapeBias().applies_with(ctx, {"decisions": "imagenet16"})
    assert "needs a 1000-class ImageNet model; this one has 2" in refusal
    assert ShapeBias().applies_with(ctx, {"decisions": "auto"}) is None


def test_the_report_measures_the_demo_model_on_renamed_demo_images(tmp_path):
    folder = tmp_path / "conflicts"
    folder.mkdir()
    pairs = [("circle", "ring"), ("star", "cross"), ("ring", "square"), ("arrow", "circle")]
    for shape, texture in pairs:  # the real shape, and a texture label the picture does not have
        shutil.copy(DEMO_IMAGES / shape / f"{shape}_00.png", folder / cue_conflict_name(shape, texture, 0))
    out = tmp_path / "report"
    run = CliRunner().invoke(cli, ["report", str(folder), "--plugins", "shape_bias", "-o", str(out), "-q"])
    assert run.exit_code == 0, run.output
    view = json.loads((out / "report.json").read_text())["by_model"][0]
    predicted = {image["path"]: image["predictions"][0]["name"] for image in view["images"]}
    shape = sum(predicted[cue_conflict_name(s, t, 0)] == s for s, t in pairs)
    texture = sum(predicted[cue_conflict_name(s, t, 0)] == t for s, t in pairs)
    assert shape >= 3  # the demo net knows its own shapes
    assert view["dataset"]["shape_bias"]["metrics"]["shape_bias"] == pytest.approx(shape / (shape + texture))
