"""The concept dictionary: the TopK autoencoder on data with a known sparse dictionary, its fit figures by
their definitions, and the plugin's card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import run
from nnvis_plugins.concepts import dictionary, dictionary_plugin


def sparse_data(count: int = 2000, channels: int = 16, atoms: int = 12, k: int = 2, seed: int = 0):
    """Vectors made of k of `atoms` unit directions each, with positive weights (and the directions)."""
    generator = torch.Generator().manual_seed(seed)
    truth = torch.randn(channels, atoms, generator=generator, dtype=torch.float64)
    truth /= truth.norm(dim=0)
    codes = torch.zeros(count, atoms, dtype=torch.float64)
    for row in range(count):
        chosen = torch.randperm(atoms, generator=generator)[:k]
        codes[row, chosen] = 1 + torch.rand(k, generator=generator, dtype=torch.float64)
    return codes @ truth.T, truth


def test_the_dictionary_recovers_a_known_sparse_dictionary():
    vectors, truth = sparse_data()
    model = dictionary.train_dictionary(vectors, atoms=12, k=2, steps=1500, lr=5e-3, seed=0)
    quality = dictionary.fit(model, vectors)
    assert quality.relative_error < 0.05 and quality.active <= 2.0 and quality.dead == 0
    assert torch.allclose(model.decoder.norm(dim=0), torch.ones(12, dtype=torch.float64))
    # every true direction is close to some learned atom
    similarity = (truth.T @ model.decoder.detach()).abs().max(dim=1).values
    assert similarity.min() > 0.9, similarity


def test_the_fit_figures_follow_their_definitions():
    vectors, _ = sparse_data(count=300)
    model = dictionary.train_dictionary(vectors, atoms=8, k=3, steps=50, seed=1)
    with torch.no_grad():
        model.encoder[5] = 0.0
        model.encoder_bias[5] = -1.0  # atom 5 can never fire
        codes = model.encode(vectors)
        residual = ((model.decode(codes) - vectors) ** 2).sum()
    quality = dictionary.fit(model, vectors)
    assert quality.dead >= 1 and not codes[:, 5].any()
    assert quality.active == float((codes > 0).sum(1).double().mean()) and (codes > 0).sum(1).max() <= 3
    assert quality.relative_error == float(residual / ((vectors - vectors.mean(0)) ** 2).sum())


def test_a_cell_crop_is_two_cells_around_the_cell_inside_the_image():
    pixels = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    assert dictionary_plugin.cell_crop(pixels, (8, 8), 3, 4).shape == (16, 16, 3)
    np.testing.assert_array_equal(dictionary_plugin.cell_crop(pixels, (8, 8), 3, 4), pixels[20:36, 28:44])
    np.testing.assert_array_equal(dictionary_plugin.cell_crop(pixels, (8, 8), 0, 7), pixels[0:16, 48:64])


def test_the_card_ranks_atoms_by_use_and_links_their_crops(few_demo_images):
    config = ReportConfig(few_demo_images, Path("unused"), plugins=["concept_dictionary"],
                          params={"concept_dictionary": {"atoms": 16, "k": 2, "steps": 100, "shown": 5, "top": 2,
                                                         "picture_steps": 8}})
    sink = MemorySink()
    run(config, load_registry(), sink)
    call = sink.outcomes("concept_dictionary")[None]
    assert call.error is None, call.error
    atlas, table = call.result.artifacts
    used = [int(row[1]) for row in table.rows]
    assert used == sorted(used, reverse=True) and len(table.rows) <= 5
    assert atlas.group == "" and [c.value for c in atlas.concepts] == used  # the folder's, most used first
    assert [c.label for c in atlas.concepts] == [row[0] for row in table.rows]
    for concept in atlas.concepts:
        assert concept.share == pytest.approx(concept.value / 6)  # of the six images
        assert 1 <= len(concept.crops) <= 2 and len(concept.image_ids) == len(concept.crops)
        assert all(isinstance(i, int) for i in concept.image_ids)
        assert concept.picture.shape == (64, 64, 3) and 0 <= concept.picture.min() <= concept.picture.max() <= 1
    metrics = call.result.metrics
    assert metrics["active_per_position"] <= 2 and 0 <= metrics["relative_error"] < 1
    assert 0 <= metrics["dead_atoms"] <= 16 and 1 <= metrics["atoms_used"] <= 16
