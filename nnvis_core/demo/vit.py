"""The demo vision transformer: torchvision's ViT, small enough to train on a CPU.

It is torchvision's own `VisionTransformer` class with a small config, not a
copy, so everything nnvis does for torchvision ViTs (attention capture, token
layouts, the default layer) applies unchanged, and the transformer plugins
can be tried and tested offline on a model that has learned something.  It
reads the same 64 x 64 inputs as the demo convnet (DEMO_SPEC), so the bundled
images and masks serve both.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nnvis_core.demo.model import load_weights
from nnvis_core.demo.shapes import CLASS_NAMES

# 8 x 8 patches give an 8 x 8 token grid plus the class token (65 tokens):
# 4-pixel patches would make training ~6x slower on a CPU.  Width 64 (4 heads
# of 16) is enough for eight shapes and about 2.5x cheaper per image than 128;
# about 0.15 M parameters, 0.6 MB of float32 weights.
VIT_CONFIG: dict = {
    "image_size": 64,
    "patch_size": 8,
    "num_layers": 4,
    "num_heads": 4,
    "hidden_dim": 64,
    "mlp_dim": 128,
}

VIT_WEIGHTS_PATH: Path = Path(__file__).resolve().parent / "weights" / "demo_vit.pt"


def sincos_grid(height: int, width: int, dim: int) -> torch.Tensor:
    """(height * width, dim) 2-D sine-cosine codes of a patch grid in raster order.

    Half the channels encode the row, half the column, each as sines and
    cosines at geometrically spaced frequencies (as in MAE).
    """
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")

    def code(position: torch.Tensor) -> torch.Tensor:
        angles = position.reshape(-1, 1) * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([code(rows), code(cols)], dim=1)


def build_demo_vit(num_classes: int = len(CLASS_NAMES)) -> nn.Module:
    """An untrained demo ViT (torchvision's VisionTransformer with VIT_CONFIG).

    Its learned position embedding starts as 2-D sine-cosine codes instead of
    torchvision's small noise, so the grid is known from the first step: from
    scratch on these shapes that climbed out of chance level faster per image
    (docs/transformers.md, demo-vit).  torchvision is imported here, not at module
    import, so `nnvis_core.demo` stays cheap for code that only wants the convnet.
    """
    from nnvis_core.torchvision_compat import torchvision_models

    model = torchvision_models().VisionTransformer(num_classes=num_classes, **VIT_CONFIG)
    side = VIT_CONFIG["image_size"] // VIT_CONFIG["patch_size"]
    with torch.no_grad():
        model.encoder.pos_embedding[0, 0].zero_()  # the class token has no place on the grid
        model.encoder.pos_embedding[0, 1:] = sincos_grid(side, side, VIT_CONFIG["hidden_dim"])
    return model


def load_demo_vit(weights: str | Path | None = None) -> nn.Module:
    """The trained demo ViT in eval mode on the CPU (shipped weights by default)."""
    return load_weights(build_demo_vit(), weights, VIT_WEIGHTS_PATH, "demo ViT", "nnvis demo train --arch vit")
