"""Ablation-CAM (Desai & Ramaswamy 2020): a channel's weight is the share of the score lost without it.

w_k = (y - y_k) / y,   y: the target's logit,   y_k: the same with channel k of the layer set to zero
cam = sum_k w_k A_k

No gradient: each channel is removed from the layer's output in turn (at every position,
prefix tokens included) and the rest of the model runs on. One pass of the layers after
the one read per channel, in chunks sized by a memory budget. pytorch-grad-cam follows the paper where the layer's
smallest value is 0 (after a ReLU); elsewhere it sets the channel far below the layer's
minimum instead of to zero. nnvis sets it to zero everywhere, as the paper does.

>>> from nnvis_plugins.cams import ablationcam
>>> cam, _ = ablationcam.layer_attribute(model, images, target=3, layer="layer4")   # (N, 1, h, w)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    MEMORY_MB,
    TARGET,
    Layout,
    Target,
    chunk_size,
    output_and_bytes,
    resolve_layer,
    select_target,
    target_scores,
)
from nnvis_core.toolkit.cams import (
    LAYER,
    UPSAMPLE,
    CamPlugin,
    LayerReading,
    channel_dim,
    memory_param,
    read_layer,
    weighted_sum,
)


@torch.no_grad()
def ablated_scores(model: nn.Module, layer: nn.Module, image: torch.Tensor, layout: Layout, channels: int,
                   target: Target, memory_mb: float = MEMORY_MB) -> torch.Tensor:
    """(channels,) the target's logit on one image (1, C, H, W) with each channel of `layer` zeroed in turn.

    Ablating a channel changes nothing before the layer, so the model runs on the image alone and the
    layer's output is copied there, one copy per channel ablated: only the layers after it run on the
    copies (pytorch-grad-cam runs the whole model on copies of the image). Each chunk carries one copy
    left whole, whose logit must be the model's own; a model that cannot take copies made mid-way (one
    that concatenates them with a tensor from before the layer, or keeps the batch size it was given)
    fails that check or raises, and gets whole copies of the image instead."""
    output, per_image = output_and_bytes(model, image)  # the logit to check copies against, and their memory
    plain = target_scores(output, target)
    step = chunk_size(per_image, memory_mb, channels)
    try:
        return _ablate(model, layer, image, layout, channels, target, step, plain)
    except (RuntimeError, ValueError, IndexError, _CopiesDiffer):
        return _ablate(model, layer, image, layout, channels, target, step)


class _CopiesDiffer(Exception):
    """The copy left whole did not give the model's own logit."""


def _ablate(model, layer, image, layout, channels, target, step, plain=None) -> torch.Tensor:
    """The ablated logits, copies made at the layer when `plain` (the whole image's logit) is given to
    check them against, else copies of the image."""
    ablate: dict[str, torch.Tensor] = {}
    mid_way = plain is not None

    def hook(module, args, output):
        chosen = ablate["channels"]
        copies = len(chosen) + 1 if mid_way else output.shape[0]
        if mid_way and output.shape[0] != 1:
            raise _CopiesDiffer
        output = output.expand(copies, *output.shape[1:]).clone()
        output.movedim(channel_dim(layout) % output.dim(), 1)[torch.arange(len(chosen)), chosen] = 0
        return output

    handle = layer.register_forward_hook(hook)
    try:
        scores = []
        for start in range(0, channels, step):
            ablate["channels"] = torch.arange(start, min(start + step, channels), device=image.device)
            count = len(ablate["channels"])
            given = image if mid_way else image.expand(count, *image.shape[1:])
            found = target_scores(model(given), target)
            if mid_way:
                if found.shape != (count + 1,) or not torch.allclose(found[-1], plain[0], rtol=1e-4, atol=1e-5):
                    raise _CopiesDiffer
                found = found[:-1]
            scores.append(found)
    finally:
        handle.remove()
    return torch.cat(scores)


def channel_weights(model: nn.Module, layer: nn.Module, inputs: torch.Tensor, target: Target,
                    reading: LayerReading, memory_mb: float = MEMORY_MB,
                    rounding: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, C) Ablation-CAM weights: (y - y_k) / y for each channel k (0 where y is 0), computed in `rounding`.

    y - y_k is a small difference of two logits, so the logits' precision bounds the weights': float32
    (what pytorch-grad-cam rounds them to) leaves about 1e-7 of y, which is 1e-3 of a weight of 1e-4.
    Pass float64, with a float64 model, for more."""
    weights = []
    for n in range(inputs.shape[0]):
        one = select_target(target, [n])
        ablated = ablated_scores(model, layer, inputs[n:n + 1].detach(), reading.layout, reading.maps.shape[1], one,
                                 memory_mb).to(rounding)
        score = reading.scores[n].to(rounding)
        weights.append((score - ablated) / score if score != 0 else torch.zeros_like(ablated))
    return torch.stack(weights)


def layer_attribute(model: nn.Module, inputs: torch.Tensor, target: Target, layer="auto", memory_mb: float = MEMORY_MB,
                    rounding: torch.dtype | None = None) -> tuple[torch.Tensor, LayerReading]:
    """(N, 1, h, w) unrectified Ablation-CAM at the layer's resolution, and the layer's reading. The weights
    are computed in `rounding` (default: the model output's own precision)."""
    module = resolve_layer(model, layer)
    reading = read_layer(model, inputs, target, module, gradients=False, method="Ablation-CAM")
    weights = channel_weights(model, module, inputs, target, reading, memory_mb, rounding or reading.scores.dtype)
    return weighted_sum(weights.to(reading.maps.dtype), reading.maps), reading


class AblationCAM(CamPlugin):
    name = "ablationcam"
    title = "Ablation-CAM"
    description = (
        "Desai & Ramaswamy (2020): no gradient. Each channel of a layer is set to zero in turn and the model "
        "runs on; the share of the target's logit lost, (y - y_k) / y, weighs that channel's map. One forward "
        "pass per channel (in chunks sized by memory_mb). Rectified and upsampled to the image."
    )
    label = "Ablation-CAM"
    uses_gradients = False
    params = (TARGET, LAYER, UPSAMPLE, memory_param("ablated copies"), FAITHFULNESS_STEPS)

    def layer_cam(self, model, inputs, target, layer, params):
        return layer_attribute(model, inputs, target, layer, memory_mb=params["memory_mb"])


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(AblationCAM())
