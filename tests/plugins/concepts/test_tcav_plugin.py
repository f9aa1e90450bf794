"""The tcav plugin: what it needs (--concepts), what it computes against cav.py's definitions, and the
table it draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nnvis_cli.main import cli
from nnvis_core.demo.shapes import CLASS_NAMES, generate_dataset
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import run
from nnvis_core.testing import demo_items
from nnvis_plugins.concepts import cav, tcav


@pytest.fixture(scope="module")
def concepts(tmp_path_factory) -> Path:
    """Two concepts: the demo's circles (8 images) and uniform noise (8 images)."""
    root = tmp_path_factory.mktemp("concepts")
    images, _, labels = generate_dataset(48, seed=99)
    (root / "circles").mkdir()
    for i, picture in enumerate(images[labels == CLASS_NAMES.index("circle")][:8]):
        Image.fromarray(picture).save(root / "circles" / f"{i}.png")
    (root / "noise").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "noise" / f"{i}.png")
    (root / "empty").mkdir()  # a folder without images is not a concept
    return root


def test_without_concepts_the_plugin_is_a_usage_error_or_left_out(few_demo_images, tmp_path, concepts):
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "a"), "--plugins", "tcav"])
    assert result.exit_code == 2 and tcav.NO_CONCEPTS in result.output
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "b"), "--plugins", "tcav",
                                      "--concepts", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere: no such folder" in result.output
    assert tcav.why_not(concepts) is None and list(tcav.concept_folders(concepts)) == ["circles", "noise"]
    result = CliRunner().invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "c"), "--plugins", "tcav",
                                      "--concepts", str(concepts), "--set", f"tcav.random={tmp_path / 'none'}"])
    assert result.exit_code == 2 and "tcav.random:" in result.output and "no such folder" in result.output


def test_the_signs_the_workers_return_are_the_definitions(concepts, tmp_path):
    """batch_signs takes one backward pass of the summed predicted-class logits for a whole batch: each
    image's row must equal its own layer gradient (cav.layer_gradients) along each CAV."""
    ctx, items = demo_items(tmp_path, images=9)
    layer = "features.11"
    pictures = {name: tcav.load_images(ctx, files)[0] for name, files in tcav.concept_folders(concepts).items()}
    randoms = [torch.stack([item.tensor for item in items[i::3]]) for i in range(3)]
    cavs = tcav.TCAV._cavs(ctx, layer, pictures, randoms)
    assert cavs.vectors.shape[0] == 2 * 2 + 2  # two concepts and random set 0, each against sets 1 and 2
    predicted, [signs] = tcav.batch_signs(ctx, items, [layer], [cavs.vectors])
    for n, item in enumerate(items):
        gradient = cav.layer_gradients(ctx.module, item.tensor[None], layer, predicted[n])
        expected = (cav.sensitivities(gradient, cavs.vectors.T) > 0).numpy()[0]
        np.testing.assert_array_equal(signs[n], expected)
    assert predicted == [item.predicted for item in items]


def test_the_table_gives_each_class_concept_and_layer_its_score_and_test(concepts, few_demo_images):
    config = ReportConfig(few_demo_images, Path("unused"), plugins=["tcav"], concepts=concepts,
                          params={"tcav": {"random_sets": 3, "set_size": 4, "min_images": 1,
                                           "layers": "features.11,features.16"}})
    sink = MemorySink()
    run(config, load_registry(), sink)
    outcome = sink.outcomes("tcav")[None]
    assert outcome.error is None, outcome.error
    table, *atlases = outcome.result.artifacts
    classes = {row[0] for row in table.rows}
    assert [a.group for a in atlases] == list(dict.fromkeys(row[0] for row in table.rows))
    for atlas in atlases:  # per class: each concept at each layer, its score beside the random CAVs'
        assert atlas.kind == "concepts" and len(atlas.concepts) == 4  # 2 concepts x 2 layers
        rows = {(row[1], row[2]): row for row in table.rows if row[0] == atlas.group}
        for concept in atlas.concepts:
            row = rows[tuple(concept.label.split(" @ "))]
            assert f"{concept.value:.3f} ± {concept.high - concept.value:.3f}" == row[3]
            assert f"{concept.chance[0]:.3f} ± {concept.chance[1]:.3f}" == row[4]
            assert concept.significant == row[6].startswith("yes") and len(concept.crops) == tcav.EXAMPLES
        distance = [abs(c.value - c.chance[0]) for c in atlas.concepts]
        assert distance == sorted(distance, reverse=True)
    assert {(row[1], row[2]) for row in table.rows} == {(c, layer) for c in ("circles", "noise")
                                                         for layer in ("features.11", "features.16")}
    assert len(table.rows) == len(classes) * 4 and f"p < 0.05 / {len(classes) * 4}" in table.columns[6]
    scores = {key: value for key, value in outcome.result.metrics.items() if key.startswith("tcav:")}
    assert len(scores) == len(table.rows) and all(0 <= v <= 1 for v in scores.values())
    again = MemorySink()
    run(config, load_registry(), again)
    assert again.outcomes("tcav")[None].result.metrics == outcome.result.metrics  # seeded draws


def test_a_changed_concept_image_is_a_new_run(concepts, tmp_path):
    """The run's cache fingerprint covers the concept images: a changed, added or removed file, a new run."""
    import shutil

    from nnvis_core.run.cache import folder_digest

    copy = tmp_path / "concepts"
    shutil.copytree(concepts, copy)
    first = folder_digest(copy)
    assert folder_digest(copy) == first and folder_digest(None) == "none"
    picture = next((copy / "noise").glob("*.png"))
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(picture)
    changed = folder_digest(copy)
    (copy / "noise" / "extra.png").write_bytes(picture.read_bytes())
    assert len({first, changed, folder_digest(copy)}) == 3
