"""RISE against its definition on hand-built models, and the plugin through nnvis's test kit."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch
from nnvis_rise import Rise, draw_grids, rise, smooth_masks
from torch import nn

from nnvis_core.testing import check_installed, check_plugin, demo_items

SIZE = 32
REGION = (slice(8, 16), slice(16, 24))  # rows, columns of the square the model looks at


class SquareMean(nn.Module):
    """Two classes; class 0's logit is 12 x the mean of one 8 x 8 square of the input, class 1's is 6.

    The class-0 probability depends on the pixels of that square and on nothing else.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.stack([12 * mean, torch.full_like(mean, 6.0)], dim=1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_map_lies_on_the_pixels_the_score_depends_on():
    image = torch.ones(1, 3, SIZE, SIZE)
    saliency = rise(SquareMean(), image, 0, masks=500, grid=8, generator=seeded())
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[REGION] = True
    # The paper's normalisation gives a pixel the score has nothing to do with the mean score
    # (most pixels, hence the median); the pixels it depends on get more when kept.
    above = (saliency - saliency.median()).clamp(min=0)
    assert above[inside].mean() > 4 * above[~inside].mean()
    strongest = saliency.flatten().topk(int(inside.sum())).indices
    assert inside.flatten()[strongest].float().mean() > 0.75


def test_equals_the_formula_computed_one_mask_at_a_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 5)).eval()
    image, baseline = torch.randn(1, 3, 20, 24), torch.randn(1, 3, 20, 24)
    count, grid, p, target = 12, 3, 0.4, 2

    grids, offsets = draw_grids(count, grid, p, (20, 24), seeded(7))
    masks = smooth_masks(grids, offsets, (20, 24))
    expected = torch.zeros(20, 24, dtype=torch.float64)
    with torch.no_grad():
        for mask in masks:
            masked = baseline + mask * (image - baseline)
            score = torch.softmax(model(masked), dim=1)[0, target]
            expected += score.double() * mask.double()
    expected /= count * p

    saliency = rise(model, image, target, masks=count, grid=grid, probability=p, baseline=baseline,
                    generator=seeded(7))
    torch.testing.assert_close(saliency.double(), expected, rtol=1e-5, atol=1e-7)


def test_masks_are_smooth_random_grids_kept_with_probability_p():
    grids, offsets = draw_grids(2000, 7, 0.3, (64, 64), seeded())
    masks = smooth_masks(grids, offsets, (64, 64))
    assert masks.shape == (2000, 64, 64) and masks.min() >= 0 and masks.max() <= 1
    assert set(grids.unique().tolist()) == {0.0, 1.0}
    assert 0 <= int(offsets.min()) and int(offsets.max()) < 10  # below one cell: ceil(64 / 7)
    assert masks.mean().item() == pytest.approx(0.3, abs=0.02)


def test_the_memory_budget_changes_the_chunks_not_the_map():
    model = SquareMean()
    batches: list[int] = []
    model.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    image = torch.rand(1, 3, SIZE, SIZE)
    one_at_a_time = rise(model, image, 0, masks=40, grid=4, memory_mb=1e-9, generator=seeded(3))
    measured_then_chunks = batches[:]
    batches.clear()
    all_at_once = rise(model, image, 0, masks=40, grid=4, memory_mb=1024, generator=seeded(3))
    # One forward pass of one image measures the model's memory, then come the chunks.
    assert measured_then_chunks == [1] * 41 and batches == [1, 40]
    torch.testing.assert_close(one_at_a_time, all_at_once, rtol=1e-5, atol=1e-7)


def test_follows_the_plugin_contract_and_is_scored_for_faithfulness():
    check = check_plugin(Rise(), params={"masks": 64, "faithfulness_steps": 8}, images=2)
    for image, result in check.results.items():
        heatmap = result.artifacts[0]
        assert heatmap.title == "rise" and heatmap.values.shape == (64, 64) and heatmap.values.min() >= 0
        assert {"deletion_auc", "insertion_auc"} <= set(result.metrics), image


@pytest.mark.parametrize("baseline", ["grey", "blur", "noise"])
def test_each_baseline_gives_a_reproducible_map(tmp_path, baseline):
    ctx, [item] = demo_items(tmp_path, images=1)
    params = {"target": "predicted", "masks": 32, "grid": 5, "probability": 0.5, "baseline": baseline,
              "memory_mb": 16, "faithfulness_steps": 0}
    first = Rise().heatmap(ctx, item, item.predicted, params)
    assert first.shape == (64, 64) and torch.isfinite(first).all()
    torch.testing.assert_close(first, Rise().heatmap(ctx, item, item.predicted, params))


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("nnvis-plugin-rise"), reason="nnvis-plugin-rise is not pip-installed")
def test_is_found_through_its_entry_point():
    assert check_installed("rise").origin.distribution == "nnvis-plugin-rise"
