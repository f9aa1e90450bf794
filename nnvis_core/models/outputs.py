"""The one place that knows what a layer's output looks like: a map, tokens, or channels-last.

Convnets give (B, C, H, W) feature maps. Vision transformers give (B, N, C)
token sequences: a few prefix tokens (a class token, DeiT's distillation
token, register tokens) and then one token per image patch, in raster order
over a patch grid that follows from the input size. Swin (and the inside of
ConvNeXt blocks) give (B, H, W, C) channels-last maps. A plugin that reads a
layer turns its output into (B, C, h, w) with :meth:`Layout.to_map`, whatever
the model, and names the layout in its caption with :meth:`Layout.describe`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

MAP, TOKENS, CHANNELS_LAST = "map", "tokens", "channels_last"
MAX_PREFIX = 16  # class + distillation + register tokens: ViTs with registers use 4 to 8


class LayoutError(ValueError):
    """A layer output whose layout cannot be worked out (one line for the user)."""


@dataclass(frozen=True)
class Layout:
    kind: str  # MAP, TOKENS or CHANNELS_LAST
    prefix: int = 0  # tokens before the patch tokens
    grid: tuple[int, int] | None = None  # (h, w) of the patch tokens, for TOKENS

    def to_map(self, values: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) spatial maps of a layer output of this layout (prefix tokens dropped)."""
        if self.kind == MAP:
            return values
        if self.kind == CHANNELS_LAST:
            return values.permute(0, 3, 1, 2)
        assert self.grid is not None
        h, w = self.grid
        patches = values[:, self.prefix:]
        return patches.reshape(values.shape[0], h, w, values.shape[-1]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        if self.kind == MAP:
            return "feature maps"
        if self.kind == CHANNELS_LAST:
            return "channels-last feature maps"
        assert self.grid is not None
        prefix = f"{self.prefix} prefix token{'s' * (self.prefix != 1)} dropped, " if self.prefix else ""
        return f"tokens ({prefix}{self.grid[0]}x{self.grid[1]} patches)"


def patch_size(model: nn.Module) -> int | None:
    """The stride of the model's patch embedding: its first Conv2d when its kernel equals its
    stride (ViT's conv_proj, timm's patch_embed.proj), else the stride a timm embedding states (a
    hybrid's `patch_embed`, a convnet before the tokens; TNT's `pixel_embed`), else the patch of a
    linear patch embedding (NaFlexViT's `embeds`: flattened patches through a Linear layer), else None."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            if module.kernel_size == module.stride and module.stride[0] == module.stride[1] > 1:
                return int(module.stride[0])
            break
    for name in ("patch_embed", "pixel_embed"):
        stride = _embedding_stride(getattr(model, name, None))
        if stride is not None:
            return stride
    return _linear_patch(getattr(model, "embeds", None))


def _linear_patch(embed: object) -> int | None:
    """The side of the square patches a linear patch embedding cuts (timm's NaFlexEmbeds with is_linear)."""
    patch = getattr(embed, "patch_size", None)
    if getattr(embed, "is_linear", False) is True and isinstance(patch, tuple) and len(patch) == 2:
        if patch[0] == patch[1] and isinstance(patch[0], int) and patch[0] > 1:
            return patch[0]
    return None


def _embedding_stride(embed: object) -> int | None:
    """img_size / grid_size of a timm patch embedding (HybridEmbed: ResNet stem, then a 1x1 projection),
    when the grid tiles the image exactly (PiT's overlapping ConvEmbedding does not)."""
    image, grid = getattr(embed, "img_size", None), getattr(embed, "grid_size", None)
    if grid is None:  # XCiT's ConvPatchEmbed: strided convs, with its patch size and patch count
        grid = _grid_of_patches(image, getattr(embed, "patch_size", None), getattr(embed, "num_patches", None))
    if not (isinstance(image, tuple) and isinstance(grid, tuple) and len(image) == len(grid) == 2):
        return None
    if not all(isinstance(v, int) and v > 0 for v in (*image, *grid)):
        return None
    stride = image[0] // grid[0]
    exact = stride > 1 and image == (grid[0] * stride, grid[1] * stride)
    return stride if exact else None


def _grid_of_patches(image: object, patch: object, count: object) -> tuple[int, int] | None:
    """The patch grid of an embedding that states its image size, patch size and patch count, when the
    three agree (the count is the image tiled by the patch exactly); else None."""
    if isinstance(patch, int):
        patch = (patch, patch)
    if not (isinstance(image, tuple) and isinstance(patch, tuple) and len(image) == len(patch) == 2
            and isinstance(count, int) and all(isinstance(v, int) and v > 0 for v in (*image, *patch))):
        return None
    grid = (image[0] // patch[0], image[1] // patch[1])
    return grid if grid[0] * grid[1] == count else None


def token_layout(model: nn.Module, input_hw: tuple[int, int], tokens: int, stated: bool = True) -> Layout:
    """The layout of a (B, tokens, C) sequence: prefix count and patch grid for this input size.

    The grid is the input divided by the patch size (or by a multiple of it, for
    models that merge tokens); whatever precedes the patches is prefix. Raises
    LayoutError when no grid fits. Without a patch embedding, the grid of a reduction the model states
    (:func:`_stated_layout`), unless `stated` is False.
    """
    patch = patch_size(model)
    height, width = input_hw
    if patch is None and stated:
        return _stated_layout(model, input_hw, tokens)
    if patch is None:
        raise LayoutError("tokens, but the model has no patch embedding (a Conv2d with kernel = stride) "
                          "to tell their grid")
    stride = patch
    while 2 * stride <= min(height, width):  # a grid of 2x2 or more: one token laid on 1x1 is no map
        h, w = height // stride, width // stride
        prefix = tokens - h * w
        if 0 <= prefix <= MAX_PREFIX:
            return Layout(TOKENS, prefix, (h, w))
        if prefix > MAX_PREFIX:
            break
        stride *= 2
    raise LayoutError(f"{tokens} tokens fit no patch grid of a {height}x{width} input with {patch}-pixel patches")


def _stated_layout(model: nn.Module, input_hw: tuple[int, int], tokens: int) -> Layout:
    """Tokens of a model with no patch embedding (LeViT: a conv stem flattened into tokens), laid on the
    grid of one of the reductions its timm `feature_info` states (rounded down or up), when the count
    fits exactly, with no prefix or the prefix the model states (VOLO's class token). Guessing a prefix
    here would lay channels-first tokens (EfficientViM's (B, C, N)) on a grid by coincidence. Not for
    models that reorder their tokens (Hiera's Unroll puts mask units first): a stated reduction says
    how many tokens there are, not that they are in raster order."""
    reductions = stated_reductions(model)
    if not reductions:
        raise LayoutError("tokens, but the model has no patch embedding (a Conv2d with kernel = stride) "
                          "and states no feature reductions to tell their grid")
    if any(type(module).__name__ == "Unroll" for module in model.modules()):
        raise LayoutError(f"tokens, but {type(model).__name__} reorders them (it unrolls mask units), so "
                          "they lie on no raster grid")
    height, width = input_hw
    prefixes = {0, _stated_prefix(model)}
    for reduction in reductions:
        for h, w in ((height // reduction, width // reduction), (-(-height // reduction), -(-width // reduction))):
            if h >= 2 and w >= 2 and tokens - h * w in prefixes:
                return Layout(TOKENS, tokens - h * w, (h, w))
    stated = ", ".join(map(str, reductions))
    raise LayoutError(f"{tokens} tokens fit the grid of none of the reductions {type(model).__name__} states "
                      f"({stated}) at {height}x{width} px")


def _stated_prefix(model: nn.Module) -> int:
    """The tokens before the patches a model states: timm's num_prefix_tokens, else 1 for a class token."""
    stated = getattr(model, "num_prefix_tokens", None)
    if isinstance(stated, int) and 0 <= stated <= MAX_PREFIX:
        return stated
    return 1 if isinstance(getattr(model, "cls_token", None), torch.Tensor) else 0


def stated_reductions(model: nn.Module) -> list[int]:
    """The reductions (input side / feature side) a timm model states in its `feature_info`, sorted."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, (list, tuple)):
        return []
    reductions = {entry.get("reduction") for entry in info if isinstance(entry, dict)}
    return sorted(r for r in reductions if isinstance(r, int) and r > 1)


def grid_like(height: int, width: int, a: int, b: int) -> bool:
    """Whether (a, b) can be the spatial size of a map downsampled from (height, width)."""
    if a < 1 or b < 1 or a > height or b > width:
        return False
    return math.isclose(height / a, width / b, rel_tol=0.15) or (a == 1 and b == 1)


def output_layout(model: nn.Module, output: torch.Tensor, input_hw: tuple[int, int]) -> Layout:
    """The layout of one layer's output for an input of size `input_hw` (H, W).

    4-D outputs are channels-first unless only the channels-last reading gives
    a spatial size consistent with the input (Swin's (B, 7, 7, 768) at 224 px);
    3-D outputs are tokens (see token_layout). Anything else raises LayoutError.
    """
    height, width = input_hw
    if output.dim() == 4:
        _, c1, c2, c3 = output.shape
        if not grid_like(height, width, c2, c3) and grid_like(height, width, c1, c2):
            return Layout(CHANNELS_LAST)
        return Layout(MAP)
    if output.dim() == 3:
        return token_layout(model, input_hw, int(output.shape[1]))
    raise LayoutError(f"a layer output of shape {tuple(output.shape)} has no spatial layout (want a map or tokens)")
