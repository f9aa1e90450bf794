"""Dataset distillation by unrolled inner training (Wang, Zhu, Torralba & Efros 2018).

Each outer step draws a network (a fresh random initialization, or the one
fixed initialization), trains it for `inner_steps` full-batch gradient steps on
the synthetic images with the learned step sizes, keeping the graph, and scores
the trained network on a batch of real images. That score's gradient flows back
through every inner step to the images, the step sizes and, optionally, the
label distributions, which Adam then updates.
"""

from __future__ import annotations

import math

import torch

from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import Split
from nnvis_plugins.distillation.synthetic import (
    Distilled,
    Settings,
    draw_seed,
    real_batch,
    soft_label_logits,
    starting_images,
)
from nnvis_plugins.distillation.training import loss_on, train


def unrolled_loss(arch: Architecture, params: dict[str, torch.Tensor], images: torch.Tensor,
                  targets: torch.Tensor, step_sizes: torch.Tensor, real_images: torch.Tensor,
                  real_labels: torch.Tensor) -> torch.Tensor:
    """Loss on real images of the network trained on (images, targets) from `params`: the outer
    objective, differentiable in the images, targets and step sizes."""
    trained = train(arch.forward, params, images, targets, step_sizes, create_graph=True)
    return loss_on(arch.forward, trained, real_images, real_labels)


def distil_unrolled(arch: Architecture, data: Split, per_class: int, classes: int, settings: Settings,
                    generator: torch.Generator) -> Distilled:
    device, dtype = arch.device, arch.dtype
    images, labels = starting_images(data, per_class, settings.start, generator)
    images = images.to(device, dtype).requires_grad_()
    labels = labels.to(device)
    log_steps = torch.full((settings.inner_steps,), math.log(settings.lr), device=device, dtype=dtype,
                           requires_grad=True)
    learned = [log_steps]
    label_logits = None
    if settings.soft_labels:
        label_logits = soft_label_logits(labels, classes).to(device, dtype).requires_grad_()
        learned.append(label_logits)
    optimizer = torch.optim.Adam([{"params": [images], "lr": settings.image_lr},
                                  {"params": learned, "lr": 0.05}])
    fixed_seed = draw_seed(generator) if settings.fixed_init else None
    curve = []
    for _ in range(settings.outer_steps):
        start = arch.fresh(fixed_seed if settings.fixed_init else draw_seed(generator))
        real_images, real_labels = real_batch(data, settings.real_batch, generator)
        targets = labels if label_logits is None else label_logits.softmax(dim=1)
        loss = unrolled_loss(arch, start, images, targets, log_steps.exp(), real_images.to(device, dtype),
                             real_labels.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    targets = labels if label_logits is None else label_logits.detach().softmax(dim=1)
    return Distilled(images.detach(), labels, targets, log_steps.detach().exp(), curve, fixed_seed)
