"""Faithfulness metrics: their definitions on a linear toy model, the ROAD imputation on a few pixels,
parity with Quantus 0.6.0 (and pytorch-grad-cam's ROAD) on the demo net and a random resnet18, with the
same maps, baselines, random subsets, segments and noise on both sides, and batched model calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_cases import import_quantus
from torch import nn

from nnvis_core.metrics import faithfulness as fm
from nnvis_core.metrics.catalog import MapInput

RTOL = 1e-4


# --- a linear toy model: every value below is computed by hand -----------------------------------------------------

class Linear(nn.Module):
    """Logit 0 = sum of w * x over the pixels (one channel), logit 1 = 0."""

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.weights = torch.as_tensor(weights, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x[:, 0] * self.weights).flatten(1).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def image(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[None, None]


def test_faithfulness_correlation_is_1_when_the_map_is_each_pixels_share_of_a_linear_logit():
    weights = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [2.0, 0.0, 4.0]])
    x = image([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0], [1.5, 1.0, -2.0]])
    share = weights * x[0, 0].numpy()  # f(x) - f(x_S = 0) = sum_S w_i x_i exactly
    kwargs = dict(subset_size=3, runs=12, seed=1)
    assert fm.faithfulness_correlation(Linear(weights), x, 0, share, **kwargs) == pytest.approx(1.0)
    assert fm.faithfulness_correlation(Linear(weights), x, 0, -share, **kwargs) == pytest.approx(-1.0)
    assert fm.faithfulness_correlation(Linear(weights), x, 0, 5 * share, **kwargs) == pytest.approx(1.0)


def test_faithfulness_correlation_by_hand_on_given_subsets():
    x = image([[1.0, 2.0], [3.0, 4.0]])
    subsets = np.array([[0, 1], [2, 3], [0, 3]])  # logit drops 3, 7, 5
    attribution = np.array([[0.0, 1.0], [0.0, 2.0]])  # relevance sums 1, 2, 2
    got = fm.faithfulness_correlation(Linear(np.ones((2, 2))), x, 0, attribution, subsets=subsets)
    assert got == pytest.approx(np.sqrt(3) / 2)  # cov 2 / sqrt(6/9 * 8)


def test_pixel_flipping_curve_and_area_by_hand():
    x = image([[1.0, 2.0], [3.0, 4.0]])
    fractions, scores = fm.pixel_flipping_curve(Linear(np.ones((2, 2))), x, 0, x[0, 0].numpy(), steps=4,
                                                score="logit")
    np.testing.assert_allclose(fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(scores, [10, 6, 3, 1, 0])  # 4, then 3, then 2, then 1 flipped to 0
    auc = fm.pixel_flipping(Linear(np.ones((2, 2))), x, 0, x[0, 0].numpy(), steps=4, score="logit")
    assert auc == pytest.approx(0.25 * (8 + 4.5 + 2 + 0.5))
    _, two_a_step = fm.pixel_flipping_curve(Linear(np.ones((2, 2))), x, 0, x[0, 0].numpy(), steps=2,
                                            baseline=1.0, score="logit")
    np.testing.assert_allclose(two_a_step, [10, 5, 4])


def test_region_perturbation_by_hand():
    x = image(np.kron([[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2))))  # four 2x2 patches worth 4, 8, 12, 16
    model, relevance = Linear(np.ones((4, 4))), x[0, 0].numpy()
    curve = fm.region_perturbation_curve(model, x, 0, relevance, patch=2, score="logit")
    np.testing.assert_allclose(curve, [40, 24, 12, 4, 0])
    lerf = fm.region_perturbation_curve(model, x, 0, relevance, patch=2, order="lerf", regions=2, score="logit")
    np.testing.assert_allclose(lerf, [40, 36, 28])
    aopc = fm.region_perturbation(model, x, 0, relevance, patch=2, score="logit")
    assert aopc == pytest.approx((0 + 16 + 28 + 36 + 40) / 5)


def test_patch_grid_is_centred_where_the_patch_does_not_divide_the_image():
    grid = fm.patch_grid(5, 4, 3)  # rows: pad 0 before, 1 after; columns: pad 1 before, 1 after
    np.testing.assert_array_equal(grid, [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_noisy_linear_imputation_by_hand():
    pixels = np.arange(9.0).reshape(1, 3, 3) ** 2  # 0 1 4 / 9 16 25 / 36 49 64
    centre = np.zeros((3, 3), bool)
    centre[1, 1] = True
    sides, corners = (1 + 9 + 25 + 49) / 6, (0 + 4 + 36 + 64) / 12
    assert fm.noisy_linear_imputation(pixels, centre, noise=0)[0, 1, 1] == pytest.approx(sides + corners)
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True  # neighbours 1 (1/6), 9 (1/6), 16 (1/12): weights renormalised by 5/12
    assert fm.noisy_linear_imputation(pixels, corner, noise=0)[0, 0, 0] == pytest.approx((10 / 6 + 16 / 12) / (5 / 12))
    pair = np.zeros((3, 3), bool)
    pair[0, 0] = pair[0, 1] = True
    # u = (w(0,1) v + 9/6 + 16/12) / (5/12), v = (u/6 + 4/6 + 16/6 + 9/12 + 25/12) / (8/12): a 2x2 system
    system = np.array([[5 / 12, -1 / 6], [-1 / 6, 8 / 12]])
    expected = np.linalg.solve(system, [9 / 6 + 16 / 12, 4 / 6 + 16 / 6 + 9 / 12 + 25 / 12])
    np.testing.assert_allclose(fm.noisy_linear_imputation(pixels, pair, noise=0)[0, 0, :2], expected)
    untouched = fm.noisy_linear_imputation(pixels, pair, noise=0)
    np.testing.assert_array_equal(untouched[0, 1:], pixels[0, 1:])


def test_noisy_linear_imputation_keeps_a_plane_inside_and_adds_the_drawn_noise():
    rows, cols = np.indices((6, 7))
    plane = np.stack([2.0 * rows - cols + 1, rows + 3.0 * cols])  # (2, 6, 7)
    hole = np.zeros((6, 7), bool)
    hole[2:4, 2:5] = True
    np.testing.assert_allclose(fm.noisy_linear_imputation(plane, hole, noise=0), plane)
    noisy = fm.noisy_linear_imputation(plane, hole, noise=0.5, rng=np.random.default_rng(3))
    draws = np.random.default_rng(3).standard_normal((2, 6))  # channel by channel, pixels in raster order
    np.testing.assert_allclose(noisy[:, hole], plane[:, hole] + 0.5 * draws)


def test_road_removals_take_the_most_or_least_relevant_pixels():
    relevance = np.array([[0.4, 0.9], [0.1, 0.6], [0.3, 0.8]])  # 6 pixels
    morf = fm.road_removals(relevance, [20, 50, 100])  # int(6 p / 100) = 1, 3, 6
    np.testing.assert_array_equal(morf[0], relevance == 0.9)
    np.testing.assert_array_equal(morf[1], relevance >= 0.6)
    assert morf[2].all()
    np.testing.assert_array_equal(fm.road_removals(relevance, [50], "lerf")[0], relevance <= 0.4)


def test_road_counts_the_levels_at_which_the_class_survives():
    weights = np.array([[1.0, 1.0], [1.0, -10.0]])
    x = image([[1.0, 1.0], [1.0, 0.0]])  # logit 3 > 0; imputing the -10 pixel from its neighbours (1) flips it
    # MoRF on this map removes the -10 pixel at 25 %: the prediction falls at 25 % and 50 %
    relevance = np.array([[0.1, 0.2], [0.3, 0.9]])
    assert fm.road(Linear(weights), x, 0, relevance, "morf", percentages=(25, 50), noise=0) == 0.0
    assert fm.road(Linear(weights), x, 0, relevance, "lerf", percentages=(25, 50), noise=0) == 1.0


def test_irof_curve_and_area_by_hand():
    x = image([[1.0, 1.0, 2.0], [3.0, 3.0, 2.0]])
    segments = np.array([[5, 5, 7], [9, 9, 7]])  # values 2, 4, 6; logit 12
    relevance = np.array([[0.0, 1.0, 0.2], [0.4, 0.4, 0.2]])  # means 0.5, 0.2, 0.4: order 5, 9, 7
    model = Linear(np.ones((2, 3)))
    curve = fm.irof_curve(model, x, 0, relevance, fill=0.0, segments=segments, score="logit")
    np.testing.assert_allclose(curve, [1, 10 / 12, 4 / 12, 0])
    area = fm.irof(model, x, 0, relevance, fill=0.0, segments=segments, score="logit")
    assert area == pytest.approx(1 - ((1 + 10 / 12) / 2 + (10 / 12 + 4 / 12) / 2 + (4 / 12) / 2) / 3)
    quantus_area = fm.irof(model, x, 0, relevance, fill=0.0, segments=segments, normalise=False, score="logit")
    assert quantus_area == pytest.approx(3 - ((10 / 12 + 4 / 12) / 2 + (4 / 12) / 2))
    mean_fill = fm.irof_curve(model, x, 0, relevance, segments=segments, score="logit")  # the image's mean: 2
    np.testing.assert_allclose(mean_fill, [1, 14 / 12, 12 / 12, 12 / 12])


# --- the two models, and what Quantus is given -----------------------------------------------------------------------

@pytest.fixture(scope="module", params=["demo", "resnet18"])
def case(request):
    """(model, images (2, 3, 64, 64), targets (2,): the predicted classes, maps (2, 64, 64): gradient x input)."""
    torch.manual_seed(0)
    if request.param == "demo":
        from nnvis_core.demo import load_demo_model
        from nnvis_core.demo.model import normalize
        from nnvis_core.demo.shapes import generate_dataset

        model = load_demo_model()
        pixels, _, _ = generate_dataset(2, seed=11)
        x = normalize(pixels)
    else:
        import architecture_sweep as sweep

        model = sweep.build("resnet18")
        sweep.calibrate(model, 64)
        x = sweep.calibration_images(64)[:2]
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    targets = logits.argmax(1).detach()
    logits.gather(1, targets[:, None]).sum().backward()
    maps = (x.grad * x).sum(1).detach().double().numpy()
    return model, x.detach(), targets, maps


class Gray(nn.Module):
    """The model on one-channel images, repeated over its three channels: what Quantus's ROAD (and, unpatched,
    its IROF) can take, since in 0.6.0 both fail on RGB images with (N, 1, H, W) maps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


class Recorder(nn.Module):
    """The model, keeping every batch it is given (to compare the imputed images of both sides)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.inputs = model, []
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


def call_quantus(metric, model, x, targets, maps, **kwargs):
    return metric(model=model, x_batch=x.numpy(), y_batch=targets.numpy(), a_batch=maps[:, None], device="cpu",
                  **kwargs)


def assert_close(ours, theirs, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(theirs, np.float64), rtol=rtol)


# --- parity ------------------------------------------------------------------------------------------------------

def test_faithfulness_correlation_matches_quantus_on_the_same_subsets(case):
    quantus = import_quantus()
    model, x, targets, maps = case
    runs, size, baseline = 16, 224, -1.5
    for inputs, net, per_channel in ((x, model, True), (x.mean(1, keepdim=True), Gray(model), False)):
        features = inputs[0].numel()
        np.random.seed(5)  # Quantus draws, run by run, one subset per image with np.random.choice
        draws = [[np.random.choice(features, size, replace=False) for _ in targets] for _ in range(runs)]
        np.random.seed(5)
        theirs = call_quantus(quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, perturb_baseline=baseline,
                                                              normalise=False, abs=False, return_aggregate=False,
                                                              disable_warnings=True), net, inputs, targets, maps)
        ours = [fm.faithfulness_correlation(net, inputs[i:i + 1], int(targets[i]), maps[i], baseline,
                                            subsets=np.stack([run[i] for run in draws]), per_channel=per_channel)
                for i in range(len(targets))]
        assert_close(ours, theirs)


def test_pixel_flipping_curve_matches_quantus(case):
    quantus = import_quantus()
    model, x, targets, maps = case
    # whole pixels (one channel), and Quantus's channel values on RGB (256 of the 3 x 4096 a step)
    for inputs, net, per_step, per_channel in ((x.mean(1, keepdim=True), Gray(model), 128, False),
                                               (x, model, 256, True)):
        theirs = call_quantus(quantus.PixelFlipping(features_in_step=per_step, perturb_baseline=-1.0, normalise=False,
                                                    abs=False, disable_warnings=True), net, inputs, targets, maps)
        for i in range(len(targets)):
            fractions, scores = fm.pixel_flipping_curve(net, inputs[i:i + 1], int(targets[i]), maps[i], -1.0,
                                                        per_step=per_step, per_channel=per_channel)
            assert len(scores) - 1 == len(theirs[i])
            assert_close(scores[1:], theirs[i])  # Quantus's curve starts after the first step
            assert fractions[-1] == 1.0


@pytest.mark.parametrize("patch", [8, 12])
def test_region_perturbation_curve_matches_quantus(case, patch):
    quantus = import_quantus()
    model, x, targets, maps = case
    regions = 20
    theirs = call_quantus(quantus.RegionPerturbation(patch_size=patch, regions_evaluation=regions, order="morf",
                                                     perturb_baseline=-1.0, normalise=False, abs=False,
                                                     disable_warnings=True), model, x, targets, maps)
    for i in range(len(targets)):
        curve = fm.region_perturbation_curve(model, x[i:i + 1], int(targets[i]), maps[i], -1.0, patch, regions)
        assert_close(curve[1:], curve[0] - np.asarray(theirs[i]))  # Quantus: f(x) - f(x^k), k = 1..L
        aopc = fm.region_perturbation(model, x[i:i + 1], int(targets[i]), maps[i], -1.0, patch, regions)
        assert aopc == pytest.approx(np.sum(theirs[i]) / (regions + 1), rel=RTOL)


class QuantusNoise:
    """Quantus's ROAD noise: np.random.randn(C, removed) with the removed pixels in the order of its ranking
    (most relevant first), handed to us pixel by pixel in raster order."""

    def __init__(self, relevance: np.ndarray):
        self.ranking = np.argsort(-relevance.ravel())

    def standard_normal(self, shape):
        channels, count = shape
        draws = np.random.randn(channels, count)  # column j: the j-th pixel of the ranking
        return draws[:, np.argsort(self.ranking[:count])]


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_matches_quantus_on_one_channel_images(case, order):
    quantus = import_quantus()
    model, x, targets, maps = case
    gray, percentages = x.mean(1, keepdim=True), [10, 35, 60, 85]
    for i in range(len(targets)):
        recorded = Recorder(Gray(model)).eval()
        np.random.seed(21)  # Quantus's noise: np.random.randn, one draw per percentage
        relevance = maps[i:i + 1] if order == "morf" else -maps[i:i + 1]  # Quantus has MoRF only
        theirs = call_quantus(quantus.ROAD(percentages=percentages, noise=0.01, normalise=False, abs=False,
                                           disable_warnings=True), recorded, gray[i:i + 1], targets[i:i + 1],
                              relevance)
        mine = Recorder(Gray(model)).eval()
        removals = fm.road_removals(maps[i], percentages, order)
        np.random.seed(21)
        ours = fm.road_scores(mine, gray[i:i + 1], int(targets[i]), removals, rng=QuantusNoise(relevance[0]))
        np.testing.assert_array_equal(ours, [theirs[p] for p in percentages])
        their_images = torch.cat(recorded.inputs[-len(percentages):])
        assert_close(torch.cat(mine.inputs[1:]), their_images)  # ours: the image itself first


def test_road_matches_pytorch_grad_cam_on_rgb(case):
    import_quantus()  # the torchvision workaround, before pytorch-grad-cam imports torchvision
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    class TorchNormal:
        """pytorch-grad-cam's noise, one draw a call: (C, removed) values from torch's global generator,
        channel by channel, as ours."""

        def standard_normal(self, shape):
            return torch.randn(shape).double().numpy()

    model, x, targets, maps = case
    for i in range(len(targets)):
        target, relevance = int(targets[i]), maps[i]
        before = torch.softmax(model(x[i:i + 1]).detach(), 1)[0, target].item()
        for percent in (20, 50, 80):  # pytorch-grad-cam's percentile is the share kept
            for order, metric, ranked in (("morf", ROADMostRelevantFirst(100 - percent), relevance),
                                          ("lerf", ROADLeastRelevantFirst(100 - percent), 1 - relevance)):
                torch.manual_seed(3)
                theirs = metric(x[i:i + 1], relevance[None], [ClassifierOutputSoftmaxTarget(target)], model)
                # it removes every pixel at or above the interpolated percentile: int(H W p / 100) of them, or
                # one more where (100 - p)(H W - 1) / 100 is whole and the percentile is a pixel's own value
                removed = ranked >= np.percentile(ranked, 100 - percent)
                ours = fm.road_removals(relevance, [percent], order)[0]
                assert (removed >= ours).all() and removed.sum() - ours.sum() in (0, 1)
                torch.manual_seed(3)
                scores = fm.road_scores(model, x[i:i + 1], target, removed[None], rng=TorchNormal(),
                                        score="probability")
                assert_close(scores - before, theirs)


def test_irof_matches_quantus_with_the_same_segments(case, monkeypatch):
    quantus = import_quantus()
    from quantus.functions.perturb_func import baseline_replacement_by_mask
    from quantus.helpers import utils as quantus_utils
    from skimage.segmentation import slic

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6.0 calls np.trapz, gone in NumPy 2.4

    def whole_pixels(arr, mask, **kwargs):
        """Quantus 0.6.0 passes IROF a (N, 1, H, W) mask for (N, C, H, W) images and fails: broadcast it."""
        return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kwargs)

    def coarse(img: np.ndarray, segmentation_method: str = "slic") -> np.ndarray:
        return slic(img, n_segments=24, start_label=0)

    def hwc(inputs: torch.Tensor) -> np.ndarray:
        return np.moveaxis(inputs.numpy(), 0, -1).astype(np.float64)

    model, x, targets, maps = case
    for inputs, net, perturb in ((x.mean(1, keepdim=True), Gray(model), None), (x, model, whole_pixels)):
        default = quantus_utils.get_superpixel_segments(hwc(inputs[0]), "slic")
        np.testing.assert_array_equal(fm.superpixels(inputs[:1]), default)  # ours segments as Quantus does
        with monkeypatch.context() as patched:  # fewer, coarser segments, the same on both sides: a faster test
            patched.setattr(quantus_utils, "get_superpixel_segments", coarse)
            metric = quantus.IROF(perturb_func=perturb, perturb_baseline=0.0, normalise=False, abs=False,
                                  return_aggregate=False, disable_warnings=True)
            theirs = call_quantus(metric, net, inputs, targets, maps, batch_size=1)  # alone: see the docs
        for i in range(len(targets)):
            ours = fm.irof(net, inputs[i:i + 1], int(targets[i]), maps[i], fill=0.0, segments=coarse(hwc(inputs[i])),
                           normalise=False)
            assert ours == pytest.approx(theirs[i], rel=RTOL)


# --- the catalog entries -------------------------------------------------------------------------------------------

def test_every_metric_scores_a_map_with_few_batched_model_calls(case):
    model, x, targets, maps = case
    calls = []
    handle = model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        given = MapInput(model=model, inputs=x[:1], target=int(targets[0]), attribution=maps[0],
                         explain=lambda *args: maps[0], baseline=torch.full_like(x[:1], -2.0), memory_mb=512)
        for metric in fm.METRICS:
            calls.clear()
            value = metric.compute(given)
            assert value is not None and np.isfinite(value), metric.name
            assert metric.category == "faithfulness" and not metric.cheap
            assert len(calls) <= 3, (metric.name, calls)  # the image, then the altered images in chunks
            assert sum(calls) >= 10, (metric.name, calls)
    finally:
        handle.remove()
    assert [m.name for m in fm.METRICS] == ["faithfulness_correlation", "pixel_flipping", "region_perturbation",
                                            "road_morf", "road_lerf", "irof"]


def test_road_and_faithfulness_correlation_are_seeded():
    model = Linear(np.ones((8, 8)))
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    relevance = np.random.default_rng(0).standard_normal((8, 8))
    once = fm.faithfulness_correlation(model, x, 0, relevance, subset_size=5, runs=10, seed=4)
    assert once == fm.faithfulness_correlation(model, x, 0, relevance, subset_size=5, runs=10, seed=4)
    assert once != fm.faithfulness_correlation(model, x, 0, relevance, subset_size=5, runs=10, seed=5)
    removals = fm.road_removals(relevance, [30, 60])
    first = fm.road_scores(model, x, 0, removals, noise=1.0, seed=2, score="logit")
    np.testing.assert_array_equal(first, fm.road_scores(model, x, 0, removals, noise=1.0, seed=2, score="logit"))
    assert not np.array_equal(first, fm.road_scores(model, x, 0, removals, noise=1.0, seed=3, score="logit"))
