"""What a notebook user holds goes in as it is (nnvis.images): NumPy arrays (H, W, 3), uint8 or
float; a (1, 3, H, W) tensor or an (N, 3, H, W) batch to explain, which gives (N, H, W) maps; a
channels-last tensor is refused with a line that says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import nnvis


@pytest.fixture(scope="module")
def pictures(demo_images) -> list[np.ndarray]:
    return [np.array(Image.open(path).convert("RGB")) for path in sorted(demo_images.rglob("*.png"))[:3]]


def test_numpy_arrays_uint8_and_float_run_as_their_pictures_do(pictures):
    from_pil = nnvis.explain("demo", Image.fromarray(pictures[0]), "saliency", device="cpu").map
    assert torch.equal(nnvis.explain("demo", pictures[0], "saliency", device="cpu").map, from_pil)
    assert torch.equal(nnvis.explain("demo", pictures[0].astype(np.float32) / 255, "saliency", device="cpu").map,
                       from_pil)
    run = nnvis.run(pictures[:2], "demo", plugins=["saliency"], device="cpu", progress=False,
                    saliency={"faithfulness_steps": 0})
    assert run.images == ["image_0000.png", "image_0001.png"]
    assert np.array_equal(run.result("image_0000.png", "saliency").artifacts[0].values, from_pil.numpy())


def test_a_batch_to_explain_gives_n_maps(pictures):
    batch = torch.stack([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in pictures])
    explained = nnvis.explain("demo", batch, "saliency", device="cpu")
    assert isinstance(explained, nnvis.ExplainedBatch) and explained.map.shape == (3, 64, 64)
    for k, picture in enumerate(pictures):
        assert torch.equal(explained.map[k], nnvis.explain("demo", picture, "saliency", device="cpu").map)
    one = nnvis.explain("demo", batch[:1], "saliency", device="cpu")
    assert one.map.shape == (1, 64, 64) and len(one.target) == 1


def test_a_channels_last_tensor_is_refused_with_a_line_that_says_so(pictures):
    hwc = torch.from_numpy(pictures[0]).float() / 255
    with pytest.raises(nnvis.UsageError, match=r"looks channels-last \(H, W, 3\).*permute\(2, 0, 1\)"):
        nnvis.explain("demo", hwc, "saliency", device="cpu")
    with pytest.raises(nnvis.UsageError, match=r"looks channels-last \(N, H, W, 3\)"):
        nnvis.run(hwc[None].repeat(2, 1, 1, 1), "demo", progress=False)
    with pytest.raises(nnvis.UsageError, match=r"looks channels-first"):
        nnvis.explain("demo", pictures[0].transpose(2, 0, 1), "saliency", device="cpu")
