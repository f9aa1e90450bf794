"""Random transformations applied to the image before each step: robustness as a regularizer.

An image that keeps activating a unit after being shifted, scaled and rotated
a little cannot rely on exact pixel patterns, so high-frequency noise no
longer pays (Mordvintsev et al. 2015, "Inceptionism"; Olah et al. 2017,
"transformation robustness"). Each transform is a small callable
``transform(images, generator) -> images``; ``compose`` chains them. All are
differentiable, so the gradient reaches the parameters through them, and all
draw their randomness from the given CPU generator, so a seed fixes the run.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

SCALES = tuple(round(0.9 + 0.02 * step, 2) for step in range(11))  # 0.9, 0.92, ..., 1.1
ANGLES = tuple(float(degrees) for degrees in range(-10, 11))


def _choice(values: Sequence[float], generator: torch.Generator, count: int) -> torch.Tensor:
    picks = torch.randint(len(values), (count,), generator=generator)
    return torch.as_tensor(values, dtype=torch.float32)[picks]


def compose(*transforms: Transform) -> Transform:
    """Apply the transforms left to right."""

    def composed(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in transforms:
            images = transform(images, generator)
        return images

    return composed


def identity(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return images


def pad(width: int, mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad every side by `width` pixels (reflected, or a constant grey), so edges can move inwards."""

    def padded(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if mode == "constant":
            return F.pad(images, (width,) * 4, mode="constant", value=value)
        return repeatable(lambda x: F.pad(x, (width,) * 4, mode=mode), images)  # reflect: scatters too

    return padded


def jitter(distance: int) -> Transform:
    """Crop `distance` pixels away in total, at a random offset: a shift of up to `distance` pixels."""

    def jittered(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if distance <= 0:
            return images
        dy, dx = (int(v) for v in torch.randint(distance + 1, (2,), generator=generator))
        height, width = images.shape[-2:]
        return images[..., dy:height - distance + dy, dx:width - distance + dx]

    return jittered


class _BackwardOnCpu(torch.autograd.Function):
    """Resampling forward where the images are, its backward on the CPU.

    The backward of bilinear resampling scatters each output pixel's gradient onto
    four input pixels; CUDA kernels add those with atomics, in no fixed order, and an
    optimizer that runs hundreds of steps turns the last-bit differences into a
    different picture. The CPU kernels add in a fixed order, so a seed gives the same
    picture on a GPU too, at the cost of moving one small gradient each way a step."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, resample: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        ctx.resample = resample
        ctx.save_for_backward(images)
        return resample(images)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (images,) = ctx.saved_tensors
        with torch.enable_grad():
            on_cpu = images.detach().cpu().requires_grad_(True)
            (grad_images,) = torch.autograd.grad(ctx.resample(on_cpu), on_cpu, grad.cpu())
        return grad_images.to(images.device), None


def repeatable(resample: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
               always: bool = False) -> torch.Tensor:
    """resample(images), with a backward that adds in a fixed order on any device (_BackwardOnCpu).
    `resample` must work on the images wherever they are, moving its own constants to them.
    always: take the CPU path even for CPU images (tests)."""
    if images.device.type == "cpu" and not always:
        return resample(images)
    return _BackwardOnCpu.apply(images, resample)


def _affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(matrices.to(images), list(images.shape), align_corners=False)

    def sample(x: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="reflection", align_corners=False)

    return repeatable(sample, images)


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom each image by a factor drawn from `scales` (same output size, reflected borders)."""

    def scaled(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factors = _choice(scales, generator, images.shape[0])
        matrices = torch.zeros(images.shape[0], 2, 3)
        matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0 / factors
        return _affine(images, matrices)

    return scaled


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate each image about its centre by an angle drawn from `degrees`."""

    def rotated(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angles = _choice(degrees, generator, images.shape[0]) * (math.pi / 180.0)
        cos, sin = torch.cos(angles), torch.sin(angles)
        height, width = images.shape[-2:]
        aspect = height / width  # affine_grid works in [-1, 1] on both axes: keep right angles right
        matrices = torch.zeros(images.shape[0], 2, 3)
        matrices[:, 0, 0], matrices[:, 0, 1] = cos, -sin * aspect
        matrices[:, 1, 0], matrices[:, 1, 1] = sin / aspect, cos
        return _affine(images, matrices)

    return rotated


def resize(size: int | tuple[int, int]) -> Transform:
    """Bilinear resize to a fixed size: the model then always sees the nominal input size."""
    target = (size, size) if isinstance(size, int) else tuple(size)

    def resized(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if tuple(images.shape[-2:]) == target:
            return images
        return repeatable(lambda x: F.interpolate(x, size=target, mode="bilinear", align_corners=False), images)

    return resized


def standard_transforms(size: int | tuple[int, int]) -> Transform:
    """Pad, jitter, zoom by 0.9-1.1, rotate by -10..10 degrees, jitter again, back to `size`.

    Distances are proportional to the image (1/10 of its side for the padding,
    1/16 and 1/32 for the jitters), so the same recipe suits a 64-pixel demo
    input and a 224-pixel ImageNet one.
    """
    side = min((size, size) if isinstance(size, int) else size)
    return compose(
        pad(max(1, side // 10), mode="constant"),
        jitter(max(1, side // 16)),
        random_scale(SCALES),
        random_rotate(ANGLES),
        jitter(max(1, side // 32)),
        resize(size),
    )
