"""Localisation metrics: their definitions on hand-made maps, TorchRay's pointing game with a tolerance,
and parity with Quantus 0.6.0 on the demo net and a random resnet18 with the demo generator's masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnvis_core.metrics import localisation
from nnvis_core.metrics.catalog import MapInput
from nnvis_core.metrics.localisation import (
    near_object,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
    top_k_intersection,
)

# A map with one maximum (5) and a mask: the hand-computed cases below use it.
MAP = np.array([[3.0, 2.0, 1.0],
                [0.0, 5.0, 4.0]])
ON_5 = np.array([[True, False, False],
                 [False, True, False]])  # objects {3, 5}
OFF_5 = np.array([[True, True, False],
                  [False, False, False]])  # object {3, 2}


def test_pointing_game_scores_whether_the_maximum_is_on_the_object():
    assert pointing_game(MAP, ON_5) == 1.0
    assert pointing_game(MAP, OFF_5) == 0.0


def test_pointing_game_ties_average_the_maxima_or_take_any_of_them():
    flat = np.array([[1.0, 1.0], [1.0, 0.0]])
    corner = np.array([[True, False], [False, False]])
    assert pointing_game(flat, corner) == pytest.approx(1 / 3)  # one of the three maxima hits
    assert pointing_game(flat, corner, ties="any") == 1.0  # Quantus


def torchray_hit(mask: np.ndarray, point: tuple[int, int], tolerance: int) -> bool:
    """TorchRay's PointingGame.evaluate, restated: a hit when some object pixel lies at a squared
    distance below tolerance² from the point (row, column)."""
    rows, columns = np.indices(mask.shape)
    return bool((mask & ((rows - point[0]) ** 2 + (columns - point[1]) ** 2 < tolerance**2)).any())


def map_peaking_at(shape: tuple[int, int], point: tuple[int, int]) -> np.ndarray:
    rows, columns = np.indices(shape)
    return -np.hypot(rows - point[0], columns - point[1])  # a single maximum at the point


@pytest.fixture(scope="module")
def square_object() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    return mask


def test_pointing_game_tolerance_counts_a_maximum_10_px_away_but_not_20(square_object):
    near, far = (25, 39), (25, 49)  # 10 and 20 px right of the square's last column (29)
    assert pointing_game(map_peaking_at((64, 64), near), square_object, tolerance=15) == 1.0
    assert pointing_game(map_peaking_at((64, 64), far), square_object, tolerance=15) == 0.0
    assert torchray_hit(square_object, near, 15) and not torchray_hit(square_object, far, 15)
    assert pointing_game(map_peaking_at((64, 64), near), square_object) == 0.0  # Quantus: the object itself


def test_pointing_game_tolerance_agrees_with_torchray_everywhere():
    mask = np.zeros((40, 40), bool)
    mask[10:25, 8:12] = True  # an L: its bend makes the region around it non-convex
    mask[21:25, 8:30] = True
    for tolerance in (1, 5, 15):
        region = near_object(mask, tolerance)
        expected = np.array([[torchray_hit(mask, (r, c), tolerance) for c in range(40)] for r in range(40)])
        np.testing.assert_array_equal(region, expected)
    peak = (4, 10)  # 6 px above the L's top: in at 7 px, out at exactly 6 (TorchRay's `<`)
    assert pointing_game(map_peaking_at(mask.shape, peak), mask, tolerance=7) == 1.0
    assert pointing_game(map_peaking_at(mask.shape, peak), mask, tolerance=6) == 0.0


def test_relevance_rank_accuracy_is_the_object_share_of_its_size_in_top_pixels():
    assert relevance_rank_accuracy(MAP, ON_5) == 0.5  # K=2: the top two are 5 (on) and 4 (off)
    assert relevance_rank_accuracy(MAP, OFF_5) == 0.0
    ties = np.array([[1.0, 1.0], [1.0, 0.0]])
    corner = np.array([[True, False], [False, False]])
    assert relevance_rank_accuracy(ties, corner) == pytest.approx(1 / 3)  # K=1 drawn from three tied


def test_relevance_mass_accuracy_counts_positive_relevance_unless_asked_for_quantus():
    signed = np.array([[2.0, -1.0], [1.0, 1.0]])
    top_row = np.array([[True, True], [False, False]])
    assert relevance_mass_accuracy(signed, top_row) == 0.5  # 2 of the positive 4
    assert relevance_mass_accuracy(signed, top_row, positive_only=False) == pytest.approx(1 / 3)  # (2-1)/3
    assert np.isnan(relevance_mass_accuracy(-np.ones((2, 2)), top_row))


def test_top_k_intersection_is_the_share_of_the_top_k_on_the_object():
    assert top_k_intersection(MAP, ON_5, k=2) == 0.5
    assert top_k_intersection(MAP, ON_5, k=1) == 1.0
    assert top_k_intersection(MAP, ON_5, k=2, concept_influence=True) == pytest.approx(0.5 * 6 / 2)
    with pytest.raises(ValueError, match="k must be"):
        top_k_intersection(MAP, ON_5, k=7)


def test_roc_auc_is_the_chance_an_object_pixel_outranks_a_background_one():
    values = np.array([0.9, 0.8, 0.3, 0.1])
    mask = np.array([True, False, True, False])
    assert roc_auc(values, mask) == 0.75  # 0.9 beats both, 0.3 beats 0.1 only: 3 of 4 pairs
    assert roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5  # a tie counts half
    assert np.isnan(roc_auc(values, np.ones(4, bool)))


def test_roc_auc_equals_scikit_learns_on_a_map_with_ties():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    values, mask = rng.integers(0, 5, (16, 16)).astype(float), rng.random((16, 16)) < 0.3
    assert roc_auc(values, mask) == pytest.approx(metrics.roc_auc_score(mask.ravel(), values.ravel()), rel=1e-12)


def test_an_empty_mask_is_refused_and_gives_no_score():
    with pytest.raises(ValueError, match="empty"):
        pointing_game(MAP, np.zeros_like(ON_5))
    model = nn.Sequential()  # no metric here may call it
    given = MapInput(model=model, inputs=torch.zeros(1, 3, 2, 3), target=0, attribution=MAP,
                     explain=lambda *args: pytest.fail("a localisation metric explained again"))
    for metric in localisation.METRICS:
        assert metric.needs_mask and metric.cheap and metric.better == "higher"
        assert metric.compute(given) is None
        given.mask = np.zeros_like(ON_5)
        assert metric.compute(given) is None
        given.mask = None


def test_the_catalog_entries_compute_the_functions():
    mask = np.zeros((40, 40), bool)
    mask[5:20, 5:20] = True
    attribution = map_peaking_at((40, 40), (10, 10))
    given = MapInput(model=nn.Sequential(), inputs=torch.zeros(1, 3, 40, 40), target=0, attribution=attribution,
                     explain=lambda *args: pytest.fail("a localisation metric explained again"), mask=mask)
    values = {metric.name: metric.compute(given) for metric in localisation.METRICS}
    assert values == {"pointing_game": 1.0, "relevance_rank_accuracy": relevance_rank_accuracy(attribution, mask),
                      "relevance_mass_accuracy": None,  # no positive relevance in this map
                      "top_k_intersection": top_k_intersection(attribution, mask, k=1000),
                      "roc_auc": roc_auc(attribution, mask)}
    given.attribution = np.zeros((30, 30))  # 900 pixels: fewer than Quantus's k = 1000
    given.mask = mask[:30, :30]
    assert localisation.METRICS[3].compute(given) is None


# Parity with Quantus. Maps: gradient x input (signed, no ties) and a blocky rectified one (8x8 plateaus,
# half the image 0) whose ties fall across the cut, where Quantus's argsort order decides.

def _quantus():
    from nnvis_core.torchvision_compat import torchvision_models

    torchvision_models()
    return pytest.importorskip("quantus")


def _maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> dict[str, np.ndarray]:
    inputs = x.clone().requires_grad_(True)
    model(inputs).gather(1, targets[:, None]).sum().backward()
    signed = (inputs.grad * x).sum(1, keepdim=True).double()
    coarse = nn.functional.interpolate(nn.functional.avg_pool2d(signed.relu(), 8), scale_factor=8, mode="nearest")
    blocky = coarse * (coarse > coarse.flatten(1).median(1).values.view(-1, 1, 1, 1))
    return {"signed": signed[:, 0].numpy(), "blocky": blocky[:, 0].numpy()}


@pytest.fixture(scope="module", params=["demo", "resnet18"])
def case(request):
    from nnvis_core.demo.shapes import generate_dataset

    torch.manual_seed(0)
    if request.param == "demo":
        from nnvis_core.demo import load_demo_model
        from nnvis_core.demo.model import normalize

        model = load_demo_model()
        images, masks, labels = generate_dataset(3, seed=5)
        x, targets = normalize(images), torch.from_numpy(labels)
    else:
        import architecture_sweep as sweep

        model = sweep.build("resnet18")
        sweep.calibrate(model, 64)
        x = sweep.calibration_images(64)[:2]
        masks = generate_dataset(8, seed=1)[1][:2]  # calibration_images draws these same images
        with torch.no_grad():
            targets = model(x).argmax(1)
    return {"model": model.eval(), "x": x, "targets": targets, "masks": masks, "maps": _maps(model, x, targets)}


# (Quantus class, its keyword arguments, nnvis function, the keywords that make it take Quantus's steps)
PARITY = {
    "pointing_game": ("PointingGame", {}, pointing_game, {"ties": "any"}),
    "relevance_rank_accuracy": ("RelevanceRankAccuracy", {}, relevance_rank_accuracy, {"ties": "argsort"}),
    "relevance_mass_accuracy": ("RelevanceMassAccuracy", {}, relevance_mass_accuracy, {"positive_only": False}),
    "top_k_intersection": ("TopKIntersection", {"k": 300}, top_k_intersection, {"k": 300, "ties": "argsort"}),
    "top_k_concept_influence": ("TopKIntersection", {"k": 300, "concept_influence": True}, top_k_intersection,
                                {"k": 300, "concept_influence": True, "ties": "argsort"}),
    "roc_auc": ("AUC", {}, roc_auc, {}),
}


@pytest.mark.parametrize("quantus_normalise", [False, True], ids=["raw", "quantus-normalise"])
@pytest.mark.parametrize("name", list(PARITY))
def test_parity_with_quantus(case, name, quantus_normalise):
    """Quantus's default normalise (divide by the batch's max |a|) is a positive scale: no localisation
    score moves with it, so nnvis never takes it."""
    quantus = _quantus()
    class_name, quantus_kwargs, function, nnvis_kwargs = PARITY[name]
    metric = getattr(quantus, class_name)(abs=False, normalise=quantus_normalise, disable_warnings=True,
                                          **quantus_kwargs)
    for kind, maps in case["maps"].items():
        theirs = metric(model=case["model"], x_batch=case["x"].numpy(), y_batch=case["targets"].numpy(),
                        a_batch=maps[:, None].copy(), s_batch=case["masks"][:, None].astype(np.float64),
                        device="cpu")
        ours = [function(attribution, mask, **nnvis_kwargs) for attribution, mask in zip(maps, case["masks"])]
        np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), rtol=1e-4, atol=0, err_msg=kind)


def test_nnvis_ties_differ_from_quantus_argsort_only_where_a_tie_straddles_the_cut(case):
    """Where no tie straddles the cut both give the same top K; the blocky maps show the departure is live."""
    departures = 0
    for kind, maps in case["maps"].items():
        for attribution, mask in zip(maps, case["masks"]):
            ours = relevance_rank_accuracy(attribution, mask)
            argsort = relevance_rank_accuracy(attribution, mask, ties="argsort")
            size = int(mask.sum())
            cut = np.sort(attribution.ravel())[::-1][size - 1]
            straddles = (attribution > cut).sum() < size < (attribution >= cut).sum()
            if straddles:
                assert abs(ours - argsort) <= ((attribution == cut) & mask).sum() / size, kind
                departures += ours != argsort
            else:
                assert ours == argsort, kind
    assert departures > 0
