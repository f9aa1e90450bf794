"""CRAFT against the authors' package (craft-xai 0.0.3, test-only): the same crops, and, on a shared
factorization (the package's own NMF, given to nnvis), the same concept importance to 1e-4 on the
trained demo net; Jansen's estimator by its definition; the importance stable across two designs.

craft-xai imports TensorFlow at the top of its sampler module for one sampler nnvis does not use: a
stand-in module lets the rest import without TensorFlow."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from nnvis_core.demo import load_demo_model
from nnvis_core.demo.model import normalize
from nnvis_core.demo.shapes import CLASS_NAMES, generate_dataset
from nnvis_core.metrics.randomisation import spearman
from nnvis_plugins.concepts import craft

LAYER, CUT = "features.16", 17  # the last conv's ReLU; the demo net's features after it: features[17:]
CLASS = CLASS_NAMES.index("star")


@pytest.fixture(scope="module")
def reference():
    sys.modules.setdefault("tensorflow", types.ModuleType("tensorflow"))
    return pytest.importorskip("craft.craft_torch")


@pytest.fixture(scope="module")
def case():
    model = load_demo_model()
    images, _, labels = generate_dataset(96, seed=4)
    return model, normalize(images[labels == CLASS][:6])


def test_crops_and_importance_equal_the_authors_package(reference, case):
    model, x = case
    package = reference.Craft(input_to_latent=lambda t: model.features[:CUT](t),
                              latent_to_logit=lambda a: model.classifier(model.pool(model.features[CUT](a))),
                              number_of_concepts=5, patch_size=32, batch_size=64, device="cpu")
    with pytest.warns(UserWarning):  # the package copies tensors with torch.tensor
        theirs_crops, _, _ = package.fit(x)
    assert torch.equal(craft.crops(x, 32), theirs_crops)
    ours_acts = craft.crop_activations(model, craft.crops(x, 32), LAYER, 64)
    with torch.no_grad():
        theirs_acts = model.features[:CUT](torch.nn.functional.interpolate(theirs_crops, size=64, mode="bilinear"))
    np.testing.assert_allclose(ours_acts, theirs_acts.mean(dim=(2, 3)).double().numpy(), rtol=1e-6, atol=1e-7)
    with pytest.warns(UserWarning):
        theirs = package.estimate_importance(x, class_id=CLASS, nb_design=32)
    ours = craft.importance(model, LAYER, x, CLASS, package.reducer.components_.astype(np.float64), designs=32)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert theirs.max() > 2 * theirs.min()  # concepts that differ in importance: the comparison can fail


def test_jansens_estimator_recovers_the_indices_of_a_known_function():
    """f(m) = m0 + 2 m1 + m1 m2 on uniform masks: total indices by the closed form (variances of the
    terms each input enters), V = 1/12 + 4/12 + 1/9 - 1/16 + the m1 m2 cross term."""
    designs, r = 4096, 3
    masks = craft.design(r, designs, "sobol")
    f = masks[:, 0] + 2 * masks[:, 1] + masks[:, 1] * masks[:, 2]
    # Var f and each total index, by Monte Carlo on many independent draws (the closed form's check)
    rng = np.random.default_rng(0)
    a, b = rng.random((400_000, r)), rng.random((400_000, r))
    g = lambda m: m[:, 0] + 2 * m[:, 1] + m[:, 1] * m[:, 2]  # noqa: E731
    expected = []
    for i in range(r):
        c = a.copy()
        c[:, i] = b[:, i]
        expected.append(((g(a) - g(c)) ** 2).mean() / (2 * g(a).var()))
    np.testing.assert_allclose(craft.total_indices(f, designs, r), expected, atol=0.02)
    assert craft.total_indices(f, designs, r)[0] < craft.total_indices(f, designs, r)[1]


def test_the_ranking_of_concepts_is_stable_across_designs(case):
    """The issue asks Sobol estimates to be stable across two seeds: the design is deterministic, so the
    two estimates here are two different sequences (Halton's and Sobol's) on the same concepts."""
    model, x = case
    _, w = craft.factorize(craft.crop_activations(model, craft.crops(x, 32), LAYER, 64), concepts=5)
    halton = craft.importance(model, LAYER, x, CLASS, w, designs=32, kind="halton")
    sobol = craft.importance(model, LAYER, x, CLASS, w, designs=32, kind="sobol")
    assert spearman(halton, sobol) >= 0.8, (halton, sobol)
