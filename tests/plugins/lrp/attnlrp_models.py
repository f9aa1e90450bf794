"""Small vision transformers for the AttnLRP tests (imported by name, like lrp_models): timm's ViT-Ti and
DeiT-Ti (distilled) at 32 px with 8-px patches, a two-layer torchvision VisionTransformer, and the
edits the tests make to them on their own copies (biases and prefix tokens zeroed, weights moved
from torchvision's layout to timm's)."""

from __future__ import annotations

import torch
from architecture_sweep import calibrate
from torch import nn

import nnvis_core  # noqa: F401  (before timm and torchvision: the import workaround for the CUDA build)
from nnvis_core.models.timm_source import import_timm
from nnvis_core.torchvision_compat import torchvision_models

SIZE = 32
TORCHVISION = torchvision_models()
TIMM = import_timm()


def timm_vit(name: str = "vit_tiny_patch16_224", seed: int = 0, **options) -> nn.Module:
    """timm's `name` with random weights at 32 px, 8-px patches (16 patch tokens), 10 classes, calibrated
    as the architecture sweep does (logits of demo images with unit spread)."""
    torch.manual_seed(seed)
    model = TIMM.create_model(name, pretrained=False, num_classes=10, img_size=SIZE, patch_size=8, **options).eval()
    calibrate(model, SIZE)
    return model


def torchvision_vit(seed: int = 0, layers: int = 2) -> nn.Module:
    """torchvision's VisionTransformer (nn.MultiheadAttention), 32 px, 8-px patches, width 64, 4 heads."""
    torch.manual_seed(seed)
    model = TORCHVISION.vision_transformer.VisionTransformer(
        image_size=SIZE, patch_size=8, num_layers=layers, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)
    with torch.no_grad():  # torchvision starts the head at zero and the position embedding small
        nn.init.normal_(model.heads.head.weight, std=0.5)
        model.encoder.pos_embedding.normal_(std=0.5)
    return model.eval()


def without_biases(model: nn.Module) -> nn.Module:
    """Biases, class, distillation and register tokens and position embeddings set to zero: what the rules lose
    (a bias's share, the tokens that do not come from the pixels) is then nothing."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "bias" in leaf or leaf in ("cls_token", "dist_token", "reg_token", "pos_embed", "class_token",
                                                        "pos_embedding"):
                parameter.zero_()
    return model


def as_timm(vit: nn.Module) -> nn.Module:
    """A timm VisionTransformer computing what torchvision's `vit` computes (its weights, timm's layout)."""
    encoder = vit.encoder.layers
    first = encoder[0]
    model = TIMM.models.vision_transformer.VisionTransformer(
        img_size=vit.image_size, patch_size=vit.patch_size, num_classes=vit.num_classes, embed_dim=vit.hidden_dim,
        depth=len(encoder), num_heads=first.num_heads, mlp_ratio=vit.mlp_dim / vit.hidden_dim).eval()
    pairs = [(model.patch_embed.proj, vit.conv_proj), (model.norm, vit.encoder.ln), (model.head, vit.heads.head)]
    for block, layer in zip(model.blocks, encoder):
        attention = layer.self_attention
        pairs += [(block.norm1, layer.ln_1), (block.norm2, layer.ln_2), (block.mlp.fc1, layer.mlp[0]),
                  (block.mlp.fc2, layer.mlp[3]), (block.attn.proj, attention.out_proj)]
        with torch.no_grad():
            block.attn.qkv.weight.copy_(attention.in_proj_weight)
            block.attn.qkv.bias.copy_(attention.in_proj_bias)
    with torch.no_grad():
        for target, source in pairs:
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
        model.cls_token.copy_(vit.class_token)
        model.pos_embed.copy_(vit.encoder.pos_embedding)
    return model


def images(count: int = 2, seed: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalized-looking 32-px RGB inputs (both signs)."""
    torch.manual_seed(seed)
    return torch.randn(count, 3, SIZE, SIZE, dtype=dtype)
