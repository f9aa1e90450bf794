"""The craft plugin in a run: per class, concepts ranked by the importance craft.importance gives, their
top crops, and where each concept is on each image used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import run
from nnvis_plugins.concepts import craft, craft_plugin


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, demo_images):
    from conftest import copy_demo

    images = copy_demo(demo_images, tmp_path_factory.mktemp("craft") / "images", classes=2, per_class=3)
    config = ReportConfig(images, Path("unused"), plugins=["craft"],
                          params={"craft": {"concepts": 3, "designs": 8, "min_images": 1, "top": 2,
                                                     "picture_steps": 8}})
    sink = MemorySink()
    run(config, load_registry(), sink)
    return sink


def test_each_class_gets_its_concepts_ranked_with_their_crops_and_maps(outcome):
    call = outcome.outcomes("craft")[None]
    assert call.error is None, call.error
    result = call.result
    atlases = [a for a in result.artifacts if a.kind == "concepts"]
    tables = [a for a in result.artifacts if a.kind == "table"]
    assert atlases and len(atlases) == len(tables)
    images = {item.record.index: item.pixels for item in outcome.items}
    for atlas, table in zip(atlases, tables):
        assert atlas.group == table.rows[0][0] and len(table.rows) == len(atlas.concepts) == 3
        importance = [float(row[3].split(" ± ")[0]) for row in table.rows]
        assert importance == sorted(importance, reverse=True)
        assert [round(c.value, 3) for c in atlas.concepts] == importance
        assert [c.label for c in atlas.concepts] == [row[2] for row in table.rows]
        assert all(c.low <= c.value <= c.high for c in atlas.concepts)  # its 95 % interval over the images
        assert sum(c.share for c in atlas.concepts) == pytest.approx(1.0)  # each crop has one strongest concept
        for concept in atlas.concepts:
            assert concept.picture.shape == (64, 64, 3)  # its direction, drawn at the model's input size
            assert len(concept.crops) == 2 and all(tile.shape == (32, 32, 3) for tile in concept.crops)
            for tile, image_id in zip(concept.crops, concept.image_ids):  # a crop links to the image it is cut from
                whole = images[image_id]
                assert any((whole[top:top + 32, left:left + 32] == tile).all()
                           for top in range(0, 33, 25) for left in range(0, 33, 25))
    used = {image for image, artifacts in result.image_artifacts.items() if artifacts}
    maps = [a for i in used for a in result.image_artifacts[i]]
    assert used and all(a.kind == "categorical" and a.categories.shape == (64, 64) for a in maps)
    assert all(set(np.unique(a.categories)) <= set(a.legend) == {0, 1, 2} for a in maps)


def test_the_map_shows_the_strongest_concept_of_each_cell_over_its_pixels():
    values = np.zeros((2, 2, 3))
    values[0, 0, 2] = 1.0
    values[1, 1, 1] = 0.5
    expected = np.zeros((4, 4), np.int64)
    expected[:2, :2], expected[2:, 2:] = 2, 1
    np.testing.assert_array_equal(craft_plugin.strongest_concepts(values, (4, 4)), expected)


def test_crop_pixels_follow_the_crops_order():
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    expected = craft.crops(tensor, 4, 3)  # positions 0 and 3 on each axis
    got = craft_plugin.crop_pixels(pixels, 4, 3)
    assert len(got) == len(expected) == 4
    for mine, theirs in zip(got, expected):
        np.testing.assert_array_equal(mine, theirs.permute(1, 2, 0).numpy())


def test_a_folder_too_small_for_any_class_is_said_on_the_card_not_a_failure(few_demo_images):
    config = ReportConfig(few_demo_images, Path("unused"), plugins=["craft"], params={"craft": {"min_images": 100}})
    sink = MemorySink()
    run(config, load_registry(), sink)
    call = sink.outcomes("craft")[None]
    assert call.error is None
    [text] = call.result.artifacts
    assert text.kind == "text" and "min_images=100" in text.text
