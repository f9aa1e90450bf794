"""The optimization parameters every feature-visualization plugin shares, and their translation to Settings."""

from __future__ import annotations

from typing import Any

from nnvis_core import Param
from nnvis_core.toolkit.featvis.render import PARAMETERIZATIONS, Settings


def optimization_params(steps: int = 256) -> tuple[Param, ...]:
    return (
        Param("steps", int, steps, "optimization steps", minimum=1, maximum=20000),
        Param("lr", float, 0.05, "Adam learning rate", minimum=1e-6, maximum=10.0),
        Param("size", int, 0, "side of the optimized image in pixels; 0 = the model's input size", minimum=0,
              maximum=1024),
        Param("parameterization", str, "fourier",
              "fourier (1/f-scaled spectrum, Olah et al. 2017) or pixel (one value per pixel)",
              choices=PARAMETERIZATIONS),
        Param("decorrelate", bool, True, "optimize decorrelated colour components instead of RGB"),
        Param("decay_power", float, 1.0, "Fourier: spectrum scaled by 1/frequency**decay_power", minimum=0.0,
              maximum=4.0),
        Param("transforms", bool, True, "random pad, jitter, scale and rotation before every step"),
        Param("total_variation", float, 0.0, "weight of the total-variation penalty", minimum=0.0),
        Param("l1", float, 0.0, "weight of the L1 penalty (distance from grey)", minimum=0.0),
        Param("l2", float, 0.0, "weight of the L2 penalty (distance from grey)", minimum=0.0),
        Param("blur_every", int, 0, "blur the image every k steps (0: never)", minimum=0),
        Param("blur_sigma", float, 0.5, "standard deviation of that blur, in pixels", minimum=0.0, maximum=10.0),
        Param("show_plain", bool, False,
              "also show the plain, unregularized optimization (pixels, RGB, no transforms, no penalties)"),
    )


def settings_from(ctx, params: dict[str, Any], size: int | None = None) -> Settings:
    """Settings for a plugin call. The seed is the run's, not the call's, so that a channel's
    visualization is the same for every image (and can be cached)."""
    return Settings(
        size=size or params["size"] or ctx.model.preprocess.side,
        steps=params["steps"], lr=params["lr"], parameterization=params["parameterization"],
        decorrelate=params["decorrelate"], decay_power=params["decay_power"], transforms=params["transforms"],
        total_variation=params["total_variation"], l1=params["l1"], l2=params["l2"],
        blur_every=params["blur_every"], blur_sigma=params["blur_sigma"], seed=ctx.seed,
    )


def plain_settings(settings: Settings) -> Settings:
    return Settings.plain(size=settings.size, steps=settings.steps, lr=settings.lr, seed=settings.seed)


def describe(settings: Settings) -> str:
    """One line for captions: how the images were made."""
    parts = [f"{settings.steps} steps, lr {settings.lr:g}, {settings.size} px, {settings.parameterization}"]
    if settings.parameterization == "fourier":
        parts.append(f"1/f^{settings.decay_power:g}")
    parts.append("decorrelated colour" if settings.decorrelate else "RGB")
    parts.append("transforms" if settings.transforms else "no transforms")
    for name in ("total_variation", "l1", "l2"):
        if getattr(settings, name):
            parts.append(f"{name} {getattr(settings, name):g}")
    if settings.blur_every:
        parts.append(f"blur {settings.blur_sigma:g} px every {settings.blur_every}")
    return ", ".join(parts)
