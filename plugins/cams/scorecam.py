"""Score-CAM (Wang et al. 2020): channel weights from the score of the image seen through each channel.

H_k = s(Up(A_k)),  s(x) = (x - min x) / (max x - min x)     each channel upsampled, then scaled to [0, 1]
w_k = softmax_k( S(X * H_k) )                              the target's logit on the masked image
cam = sum_k w_k A_k

No gradient: a channel counts as much as the image it lets through convinces the model.
Subtracting a baseline image's score, as the paper writes it, shifts every channel's
score alike and so changes no softmax weight. The cost is one forward pass per channel:
the masked images go through in chunks sized by a memory budget, never all at once.

>>> from nnvis_plugins.cams import scorecam
>>> cam, _ = scorecam.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    MEMORY_MB,
    TARGET,
    Target,
    bytes_per_image,
    chunk_size,
    in_chunks,
    select_target,
    target_scores,
)
from nnvis_core.toolkit.cams import LAYER, UPSAMPLE, CamPlugin, LayerReading, memory_param, read_layer, weighted_sum


def channel_masks(maps: torch.Tensor, size: tuple[int, int], eps: float = 0.0,
                  align_corners: bool = False) -> torch.Tensor:
    """(N, K, H, W) masks in [0, 1]: each channel of `maps` (N, K, h, w) upsampled to `size` (bilinear),
    then min-max scaled; a constant channel gives an all-zero mask. `eps` is added to each range (0 in the
    paper; pytorch-grad-cam adds 1e-8 and upsamples with aligned corners, which its parity test reproduces)."""
    up = maps if tuple(maps.shape[-2:]) == tuple(size) else F.interpolate(
        maps, size=size, mode="bilinear", align_corners=align_corners)
    low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    span = high - low + eps
    return torch.where(span > 0, (up - low) / torch.where(span > 0, span, 1), 0)


@torch.no_grad()
def masked_scores(model: nn.Module, image: torch.Tensor, masks, count: int, target: Target,
                  memory_mb: float = MEMORY_MB, per_image: int | None = None) -> torch.Tensor:
    """(count,) the target's logit on image * mask for each of `count` masks of one image (1, C, H, W);
    `masks(start, stop)` gives masks start:stop as (k, 1 or C, H, W), made only when their chunk runs.
    `per_image`: a masked image's memory (bytes_per_image), measured here when not given."""
    step = chunk_size(per_image or bytes_per_image(model, image), memory_mb, count)
    return in_chunks(model, lambda start, stop: image * masks(start, stop), count, step,
                     lambda output, *_: target_scores(output, target)).float()


def channel_weights(model: nn.Module, inputs: torch.Tensor, target: Target, maps: torch.Tensor, eps: float = 0.0,
                    align_corners: bool = False, memory_mb: float = MEMORY_MB, channels: int = 0) -> torch.Tensor:
    """(N, C) Score-CAM weights: the softmax over channels of the target's logit on each masked image.

    channels > 0 scores only that many channels of each image, those whose maps vary most, and gives the
    others weight 0 (Faster Score-CAM, from the authors' repository: a flat channel masks little)."""
    size = tuple(inputs.shape[-2:])
    weights = torch.zeros(maps.shape[:2], dtype=torch.float32, device=maps.device)
    per_image = bytes_per_image(model, inputs[:1].detach())  # the same for every image of the batch
    for n in range(inputs.shape[0]):
        kept = torch.arange(maps.shape[1], device=maps.device)
        if 0 < channels < maps.shape[1]:
            kept = maps[n].flatten(1).var(dim=1).topk(channels).indices.sort().values

        def masks(start: int, stop: int, n: int = n, kept: torch.Tensor = kept) -> torch.Tensor:
            return channel_masks(maps[n:n + 1, kept[start:stop]], size, eps, align_corners)[0][:, None]

        scores = masked_scores(model, inputs[n:n + 1].detach(), masks, len(kept), select_target(target, [n]),
                               memory_mb, per_image)
        weights[n, kept] = torch.softmax(scores, dim=0).to(weights.device)
    return weights


def layer_attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer="auto",
                    memory_mb: float = MEMORY_MB, channels: int = 0) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified Score-CAM at the layer's resolution, and the layer's reading (channels: see
    channel_weights)."""
    reading = read_layer(model, inputs, target, layer, gradients=False, method="Score-CAM")
    weights = channel_weights(model, inputs, target, reading.maps, memory_mb=memory_mb, channels=channels)
    return weighted_sum(weights.to(reading.maps.dtype), reading.maps), reading


class ScoreCAM(CamPlugin):
    name = "scorecam"
    title = "Score-CAM"
    description = (
        "Wang et al. (2020): no gradient. Each channel of a layer, upsampled and scaled to [0, 1], masks the "
        "image; the target's logit on each masked image, softmaxed over channels, weighs the channel's map. "
        "One forward pass per channel (in chunks sized by memory_mb), so it costs hundreds of model calls on "
        "a wide layer. Rectified and upsampled to the image."
    )
    label = "Score-CAM"
    uses_gradients = False
    params = (TARGET, LAYER, UPSAMPLE, memory_param("masked images"),
              Param("channels", int, 0, "score only this many channels, those whose maps vary most, and weigh the "
                    "others 0 (Faster Score-CAM, from the authors' repository); 0: every channel, as the paper",
                    minimum=0, maximum=100_000),
              FAITHFULNESS_STEPS)

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer, memory_mb=params["memory_mb"],
                               channels=params["channels"])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(ScoreCAM())
