"""Plain gradient-descent training of parameter dicts, optionally kept in the autograd graph.

`train` is the inner loop of Wang et al. (2018): theta_{i+1} = theta_i - lr_i * grad loss(x, y; theta_i).
With `create_graph=True` the returned weights are differentiable functions of the
images, labels and step sizes, which is what the unrolled method optimizes;
without it the same loop evaluates a training set.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def loss_on(forward: Forward, params: dict[str, torch.Tensor], images: torch.Tensor,
            targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the architecture with `params`; targets are class indices or label distributions."""
    return F.cross_entropy(forward(params, images), targets)


def train(forward: Forward, params: dict[str, torch.Tensor], images: torch.Tensor, targets: torch.Tensor,
          step_sizes: Sequence[torch.Tensor] | torch.Tensor, create_graph: bool = False) -> dict[str, torch.Tensor]:
    """Full-batch gradient descent, one step per step size; returns the final weights."""
    names = list(params)
    current = {name: params[name] if params[name].requires_grad else params[name].detach().requires_grad_()
               for name in names}
    with torch.enable_grad():  # callers may evaluate under no_grad; the inner steps still need gradients
        for step_size in step_sizes:
            loss = loss_on(forward, current, images, targets)
            grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph)
            if create_graph:
                current = {n: current[n] - step_size * g for n, g in zip(names, grads)}
            else:
                current = {n: (current[n] - step_size * g).detach().requires_grad_() for n, g in zip(names, grads)}
    return current


def train_adam(forward: Forward, params: dict[str, torch.Tensor], images: torch.Tensor, targets: torch.Tensor,
               steps: int, lr: float, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Adam on minibatches drawn with `seed`: the long training of an evaluation (Zhao et al. train
    on the condensed set for hundreds of epochs), where a few plain steps leave a deep net at chance."""
    current = {name: p.detach().clone().requires_grad_() for name, p in params.items()}
    optimizer = torch.optim.Adam(list(current.values()), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            chosen = torch.randperm(len(images), generator=generator)[:batch].to(images.device)
            loss = loss_on(forward, current, images[chosen], targets[chosen])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return current


@torch.no_grad()
def accuracy(forward: Forward, params: dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             batch: int = 64) -> float:
    """Share of `images` whose most probable class is `labels`."""
    correct = 0
    for start in range(0, len(images), batch):
        logits = forward({n: p.detach() for n, p in params.items()}, images[start:start + batch])
        correct += int((logits.argmax(dim=1) == labels[start:start + batch]).sum())
    return correct / max(1, len(images))
