"""Dataset condensation with gradient matching (Zhao, Mopuri & Bilen, ICLR 2021).

Instead of differentiating through a whole training run, each inner step asks
that the weight gradient a network gets from the synthetic images of a class
point the same way as the one it gets from real images of that class, layer by
layer and output unit by output unit; then the network takes one ordinary step
on the synthetic images. Only one second-order pass per class and step, however
long the training run is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nnvis_plugins.distillation.architecture import Architecture
from nnvis_plugins.distillation.data import Split
from nnvis_plugins.distillation.synthetic import Distilled, Settings, draw_seed, starting_images
from nnvis_plugins.distillation.training import loss_on, train


def gradient_distance(real: list[torch.Tensor], synthetic: list[torch.Tensor]) -> torch.Tensor:
    """Sum over output units of 1 - cosine between real and synthetic weight gradients.

    A weight of shape (out, ...) gives one cosine per output unit (its row of
    the gradient); a one-dimensional parameter (a bias) is one vector.
    """
    total = synthetic[0].new_zeros(())
    for r, s in zip(real, synthetic):
        rows_r = r.reshape(r.shape[0], -1) if r.dim() > 1 else r.reshape(1, -1)
        rows_s = s.reshape(s.shape[0], -1) if s.dim() > 1 else s.reshape(1, -1)
        total = total + (1 - F.cosine_similarity(rows_r, rows_s, dim=1, eps=1e-8)).sum()
    return total


def matching_loss(arch: Architecture, params: dict[str, torch.Tensor], data: Split, images: torch.Tensor,
                  labels: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Gradient distance summed over classes, differentiable in the synthetic images."""
    names = list(params)
    weights = [params[n] for n in names]
    total = images.new_zeros(())
    for label in data.classes:
        pool = data.class_images(label)
        chosen = torch.randperm(len(pool), generator=generator)[:batch]
        real_images = pool[chosen].to(images.device, images.dtype)
        real_labels = torch.full((len(real_images),), label, device=images.device)
        real = torch.autograd.grad(loss_on(arch.forward, params, real_images, real_labels), weights)
        mine = labels == label
        synthetic = torch.autograd.grad(loss_on(arch.forward, params, images[mine], labels[mine]), weights,
                                        create_graph=True)
        total = total + gradient_distance([g.detach() for g in real], list(synthetic))
    return total


def distil_matching(arch: Architecture, data: Split, per_class: int, classes: int, settings: Settings,
                    generator: torch.Generator) -> Distilled:
    device, dtype = arch.device, arch.dtype
    images, labels = starting_images(data, per_class, settings.start, generator)
    images = images.to(device, dtype).requires_grad_()
    labels = labels.to(device)
    optimizer = torch.optim.Adam([images], lr=settings.image_lr)
    step = torch.tensor(settings.lr, device=device, dtype=dtype)
    fixed_seed = draw_seed(generator) if settings.fixed_init else None
    batch = max(1, settings.real_batch // max(1, len(data.classes)))
    curve = []
    for _ in range(settings.outer_steps):
        params = {n: p.requires_grad_() for n, p in
                  arch.fresh(fixed_seed if settings.fixed_init else draw_seed(generator)).items()}
        distances = []
        for _ in range(settings.inner_steps):
            with torch.enable_grad():
                loss = matching_loss(arch, params, data, images, labels, batch, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            distances.append(float(loss.detach()))
            params = train(arch.forward, params, images.detach(), labels, [step])
        curve.append(sum(distances) / len(distances))
    return Distilled(images.detach(), labels, labels, step.repeat(settings.inner_steps), curve, fixed_seed)
