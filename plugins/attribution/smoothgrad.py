"""SmoothGrad (Smilkov et al. 2017): a base map averaged over noisy copies of the input.

Noise is Gaussian with sigma = noise_level x (max - min of the input), per input,
as in the paper. Bases: the gradient, guided backprop, or Integrated Gradients
(each noisy copy integrated from the same baseline). Variants: ``mean``
(SmoothGrad), ``squared`` (mean of squares, SmoothGrad-Squared of Hooker et al.
2019) and ``vargrad`` (variance, Adebayo et al. 2018). All copies go through the
model in chunks of `batch_size`.

>>> from nnvis_plugins.attribution import smoothgrad
>>> maps = smoothgrad.attribute(model, images, target=3, samples=50, noise_level=0.15)
"""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core import Param, hookimpl
from nnvis_core.toolkit import (
    FAITHFULNESS_STEPS,
    TARGET,
    AttributionPlugin,
    Explanation,
    Target,
    gradient,
    reduce_param,
    repeat_target,
)
from nnvis_plugins.attribution import integrated_gradients

BASES = ("gradient", "guided_backprop", "integrated_gradients")
VARIANTS = ("mean", "squared", "vargrad")


def draw_noise(inputs: torch.Tensor, samples: int, noise_level: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, samples, C, H, W) Gaussian noise, sigma = noise_level x the value range of each input."""
    x = inputs.detach()
    flat = x.flatten(1)
    sigma = (flat.amax(1) - flat.amin(1)) * noise_level
    noise = torch.randn((x.shape[0], samples, *x.shape[1:]), generator=generator, dtype=x.dtype, device="cpu")
    return noise.to(x.device) * sigma.view(-1, 1, *[1] * (x.dim() - 1))


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Target,
    base: str = "gradient",
    samples: int = 50,
    noise_level: float = 0.15,
    variant: str = "mean",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    steps: int = 20,
    baselines: torch.Tensor | float | None = None,
    method: str = "gausslegendre",
) -> torch.Tensor:
    """(N, C, H, W) SmoothGrad of `target`.

    noise: the (N, samples, C, H, W) noise to add, instead of drawing it (to
    reproduce a run or compare with another implementation); generator: the
    random source when drawing. steps, baselines, method: for base
    integrated_gradients.
    """
    if base not in BASES:
        raise ValueError(f"unknown SmoothGrad base {base!r}; use one of {', '.join(BASES)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown SmoothGrad variant {variant!r}; use one of {', '.join(VARIANTS)}")
    x = inputs.detach()
    n = x.shape[0]
    if noise is None:
        noise = draw_noise(x, samples, noise_level, generator)
    samples = noise.shape[1]
    noisy = (x[:, None] + noise).reshape(n * samples, *x.shape[1:])
    targets = repeat_target(target, samples, n)
    if base == "integrated_gradients":
        if isinstance(baselines, torch.Tensor) and baselines.dim() == x.dim():
            baselines = baselines.expand_as(x).repeat_interleave(samples, dim=0)
        maps = integrated_gradients.attribute(model, noisy, targets, baselines, steps, method, batch_size)
    else:
        rule = "guided" if base == "guided_backprop" else None
        maps = gradient(model, noisy, targets, rule=rule, batch_size=batch_size)
    maps = maps.view(n, samples, *x.shape[1:])
    if variant == "mean":
        return maps.mean(dim=1)
    squares = maps.square().mean(dim=1)
    if variant == "squared":
        return squares
    return squares - maps.mean(dim=1).square()


class SmoothGrad(AttributionPlugin):
    name = "smoothgrad"
    title = "SmoothGrad"
    description = (
        "Smilkov et al. (2017): a base map (gradient, guided backprop or Integrated Gradients) averaged over "
        "noisy copies of the image, which removes much of the gradient's visual noise. sigma is a fraction of "
        "the image's value range; the squared variant averages squared maps."
    )
    label = "smoothed attribution"
    params = (
        TARGET,
        Param("base", str, "gradient", "map to smooth", choices=BASES),
        Param("samples", int, 50, "noisy copies", minimum=1, maximum=10000),
        Param("noise", float, 0.15, "noise sigma as a fraction of the input's value range", minimum=0.0, maximum=10.0),
        Param("variant", str, "mean", "mean (SmoothGrad), squared (SmoothGrad-Squared) or vargrad", choices=VARIANTS),
        Param("steps", int, 20, "base integrated_gradients: points on each path", minimum=2, maximum=1000),
        reduce_param("abs_max"),
        FAITHFULNESS_STEPS,
    )

    def explain(self, ctx, item, inputs, target, params) -> Explanation:
        baselines = None
        if params["base"] == "integrated_gradients":
            baselines = ctx.model.preprocess.normalize(item.pixels * 0).to(inputs)[None]
        maps = attribute(
            ctx.module, inputs, target, params["base"], params["samples"], params["noise"], params["variant"],
            batch_size=ctx.batch_size, steps=params["steps"], baselines=baselines,
        )
        caption = (f"{params['variant']} of {params['samples']} {params['base']} maps, "
                   f"sigma {params['noise']:g} of range")
        return Explanation(maps[0], caption)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(SmoothGrad())
