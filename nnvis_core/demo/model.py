"""The demo convnet, its input spec and its shipped weights.

A deliberately plain VGG-style net: every ReLU and max-pool is its own module
(never functional, never inplace), so that hook-based methods such as
deconvnet, guided backprop and Grad-CAM see every activation, and there is no
BatchNorm to complicate the backward rules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnvis_core.demo.shapes import CLASS_NAMES

# Per-channel mean/std of the RGB values in [0, 1] of the 20,000 training images
# of generate_dataset(20000, seed=0), computed once and rounded to 4 digits:
#   x = images.reshape(-1, 3) / 255; x.mean(0), x.std(0)
DEMO_SPEC: dict = {
    "input_size": 64,
    "mean": [0.4997, 0.5007, 0.4984],
    "std": [0.2906, 0.2907, 0.2896],
}

WEIGHTS_PATH: Path = Path(__file__).resolve().parent / "weights" / "demo_net.pt"


def _stage(in_ch: int, out_ch: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1), nn.ReLU()]
    return layers + [nn.MaxPool2d(2)]


class DemoNet(nn.Module):
    """64x64 RGB -> len(CLASS_NAMES) logits; 4 conv stages (16-32-64-128).

    The first stage has a single conv to keep full-resolution work cheap on a
    CPU; later stages have two.  Global max pooling over the last 4x4 map
    feeds a linear classifier: "is there a star anywhere" is a max, and it
    escapes the long chance-level plateau that average pooling showed here.
    """

    def __init__(self, num_classes: int = len(CLASS_NAMES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_stage(3, 16, 1),
            *_stage(16, 32, 2),
            *_stage(32, 64, 2),
            *_stage(64, 128, 2),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(128, num_classes),
        )
        # He init: PyTorch's default shrinks the signal through eight plain
        # conv+ReLU layers (no BatchNorm) and training then stalls at chance.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def load_weights(model: nn.Module, weights: str | Path | None, default: Path, what: str,
                 train_command: str) -> nn.Module:
    """`model` with the state_dict at `weights` (`default` when None), in eval mode on the CPU;
    FileNotFoundError naming the command that trains them when the file is missing."""
    path = Path(weights) if weights is not None else default
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found at {path}; "
            f"train them with `{train_command}` (nnvis_core.demo.train.train_demo_model)"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def load_demo_model(weights: str | Path | None = None) -> DemoNet:
    """The trained demo net in eval mode on the CPU (shipped weights by default)."""
    return load_weights(DemoNet(), weights, WEIGHTS_PATH, "demo model", "nnvis demo train")


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxWx3 images -> float N,3,H,W tensor normalized with DEMO_SPEC."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected NxHxWx3 images, got shape {arr.shape}")
    return normalize_pixels(torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2))


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) pixels on any device -> float, normalized with DEMO_SPEC, on that device."""
    mean = torch.tensor(DEMO_SPEC["mean"], device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(DEMO_SPEC["std"], device=pixels.device).view(1, 3, 1, 1)
    return ((pixels.float().div_(255) - mean) / std).contiguous()
