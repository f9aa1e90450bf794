"""The ConvNet of the dataset-condensation papers, for small real data sets (`--model convnet`).

Zhao, Mopuri & Bilen (ICLR 2021) and Zhao & Bilen (WACV 2023) distil MNIST and
CIFAR for this network: `depth` blocks of a 3x3 conv of `width` channels,
instance norm, ReLU and 2x2 average pooling, then one Linear classifier. Their
instance norm is a GroupNorm with one group per channel (affine), which also
runs on a batch of one. Depth, width, norm and pooling are parameters; the
input's channels and side come from the images it is made for.

The report feeds every model RGB pictures. A one-channel ConvNet (grayscale
digits) therefore starts by averaging the three channels, which are equal for
a grayscale picture; its learned layers see one channel, as the papers' do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

NORMS = ("instance", "batch", "none")
POOLINGS = ("avg", "max")


@dataclass(frozen=True)
class ConvNetConfig:
    """Everything that fixes the architecture (saved in its checkpoints)."""

    channels: int = 3  # 1 (grayscale) or 3 (RGB)
    side: int = 32  # input height and width in pixels
    classes: int = 10
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    pooling: str = "avg"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"convnet: channels must be 1 or 3, got {self.channels}")
        if self.norm not in NORMS:
            raise ValueError(f"convnet: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"convnet: pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        for name in ("side", "classes", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"convnet: {name} must be at least 1, got {getattr(self, name)}")
        if self.side >> self.depth < 1:
            raise ValueError(f"convnet: {self.depth} poolings leave nothing of a {self.side} px input; "
                             f"use depth {max(1, self.side.bit_length() - 1)} or less")

    def as_dict(self) -> dict:
        return asdict(self)


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instance":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(width)
    return nn.Identity()


class Grayscale(nn.Module):
    """RGB pictures to the one channel a grayscale ConvNet learned on (the mean of the three)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) if x.shape[1] == 3 else x


class ConvNet(nn.Module):
    def __init__(self, config: ConvNetConfig = ConvNetConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [Grayscale()] if config.channels == 1 else []
        channels, side = config.channels, config.side
        for _ in range(config.depth):
            pool = nn.AvgPool2d(2) if config.pooling == "avg" else nn.MaxPool2d(2)
            layers += [nn.Conv2d(channels, config.width, 3, padding=1), _norm(config.norm, config.width),
                       nn.ReLU(), pool]
            channels, side = config.width, side // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(config.width * side * side, config.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build_convnet(config: ConvNetConfig, seed: int = 0) -> ConvNet:
    """A ConvNet with PyTorch's default initialization drawn from `seed` (the same on every machine)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvNet(config).eval()


def parse_options(text: str) -> dict[str, int | str]:
    """'width=64,depth=2,norm=batch' -> {'width': 64, 'depth': 2, 'norm': 'batch'}; ValueError otherwise."""
    known = {field: type(value) for field, value in ConvNetConfig().as_dict().items()}
    options: dict[str, int | str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        key = key.strip()
        if not equals or key not in known:
            raise ValueError(f"convnet: {part!r} is not KEY=VALUE with KEY one of {', '.join(known)}")
        try:
            options[key] = known[key](value.strip())
        except ValueError:
            raise ValueError(f"convnet: {key} must be a whole number, got {value.strip()!r}") from None
    return options
