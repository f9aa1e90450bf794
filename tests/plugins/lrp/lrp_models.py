"""Small models and fixtures for the LRP tests (imported by name: a conftest.py here would shadow
tests/conftest.py for the suites that import it): a plain chain, a ResNet block with a concatenation, and the
building blocks LRP refuses. Float64 where the tests check conservation to the stabilizer's size."""

from __future__ import annotations

import torch
from torch import nn

from nnvis_core.torchvision_compat import torchvision_models


def one_thread():
    """(setup_module, teardown_module) that run a test module on one thread. These tests run many small
    convolutions (32-px images, 8-px toys), for which a second OpenMP thread costs more than it saves: on
    a busy 2-core machine, three times the CPU time."""
    saved = []

    def setup_module() -> None:
        saved.append(torch.get_num_threads())
        torch.set_num_threads(1)

    def teardown_module() -> None:
        torch.set_num_threads(saved.pop())

    return setup_module, teardown_module


def he_initialized(model: nn.Module) -> nn.Module:
    """Weights that keep the signal's size through the layers (PyTorch's default shrinks it), so that
    the rules' stabilizer (1e-6) stays far below every denominator."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def zero_centred_batch_norm(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm with random scale and variance but zero mean and shift: merged, it adds no bias."""
    norm = nn.BatchNorm2d(channels)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.running_var.uniform_(0.5, 2.0)
    return norm


class Branches(nn.Module):
    """Two conv branches on the same input, concatenated along the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1, bias=False), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(channels, 4, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


def chain() -> nn.Sequential:
    """conv, ReLU, max pool, conv, BatchNorm, ReLU, average pool, Linear, without biases: every cut
    between two of them is a layer's input."""
    torch.manual_seed(1)
    return he_initialized(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=False), zero_centred_batch_norm(8), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(32, 5, bias=False),
    )).double().eval()


def residual() -> nn.Sequential:
    """A stem, torchvision's BasicBlock (with a downsampling shortcut), two concatenated branches, a head."""
    torch.manual_seed(2)
    block = torchvision_models().resnet.BasicBlock(
        6, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(6, 8, 1, stride=2, bias=False), zero_centred_batch_norm(8)))
    block.bn1, block.bn2 = zero_centred_batch_norm(8), zero_centred_batch_norm(8)
    return he_initialized(nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), block, Branches(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5, bias=False),
    )).double().eval()


def image() -> torch.Tensor:
    """One 8x8 RGB image, float64, normalized-looking (both signs)."""
    torch.manual_seed(3)
    return torch.randn(1, 3, 8, 8, dtype=torch.float64)
