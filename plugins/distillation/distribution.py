"""Dataset condensation with distribution matching (Zhao & Bilen, WACV 2023).

The cheapest of the three methods: no training inside the loop and no
second-order gradients. Each outer step draws a fresh random network, embeds
real and synthetic images of every class with it (the features that feed the
last Linear layer), and moves the synthetic images so that each class's mean
embedding matches the real one. Matching means under many random networks is
matching the class distributions in many random feature spaces.
"""

from __future__ import annotations

import torch

from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import Split, random_real
from nnvis_plugins.distillation.synthetic import Distilled, Settings, draw_seed, starting_images


def mean_embedding_distance(real: torch.Tensor, real_labels: torch.Tensor, synthetic: torch.Tensor,
                            labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Sum over classes of the squared distance between the real and the synthetic mean embedding."""
    total = synthetic.new_zeros(())
    for label in classes:
        gap = real[real_labels == label].mean(0) - synthetic[labels == label].mean(0)
        total = total + (gap * gap).sum()
    return total


def distil_distribution(arch: Architecture, data: Split, per_class: int, classes: int, settings: Settings,
                        generator: torch.Generator) -> Distilled:
    device, dtype = arch.device, arch.dtype
    images, labels = starting_images(data, per_class, settings.start, generator)
    images = images.to(device, dtype).requires_grad_()
    labels = labels.to(device)
    optimizer = torch.optim.Adam([images], lr=settings.image_lr)
    fixed_seed = draw_seed(generator) if settings.fixed_init else None
    batch = max(1, settings.real_batch // max(1, len(data.classes)))
    curve = []
    for _ in range(settings.outer_steps):
        params = arch.fresh(fixed_seed if settings.fixed_init else draw_seed(generator))
        real, real_labels = random_real(data, batch, generator)
        with torch.no_grad():
            real_embedding = arch.embed(params, real.to(device, dtype))
        with torch.enable_grad():
            loss = mean_embedding_distance(real_embedding, real_labels.to(device), arch.embed(params, images),
                                           labels, data.classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    # Like gradient matching, the images are evaluated with the fixed step size `lr`.
    step = torch.tensor(settings.lr, device=device, dtype=dtype)
    return Distilled(images.detach(), labels, labels, step.repeat(settings.inner_steps), curve, fixed_seed)
