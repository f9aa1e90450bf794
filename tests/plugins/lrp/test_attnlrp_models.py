"""AttnLRP on whole transformers: timm's ViT and DeiT (prefix tokens, fused and written-out attention),
torchvision's VisionTransformer (nn.MultiheadAttention). Conservation where the rules conserve, the
model left as it was, and one-line refusals naming the layer.

Conservative: the epsilon rule on Linear layers and the patch embedding (as epsilon -> 0, without
biases), the LayerNorm rule (without bias), the identity rule (GELU, the attention scale), sums
(residuals, position embedding, the DeiT heads' average), matrix products (uniform rule). Not
conservative: AttnLRP's softmax rule, which keeps a bias term (test_attnlrp_rules.py checks it is
exactly that term). So the whole-model check runs with the attention weights held (CP-LRP), every
other rule as in AttnLRP, biases, prefix tokens and position embeddings zero, epsilon and stabilizer
1e-12, float64: the pixels' relevance sums to the explained logit to 1e-8 of it.
"""

from __future__ import annotations

import copy

import attnlrp_models as vits
import lrp_models as models
import pytest
import torch
from torch import nn

from nnvis_core.toolkit import AttributionError, guarded_state
from nnvis_plugins.lrp import attnlrp

setup_module, teardown_module = models.one_thread()

CONSERVATION = 1e-8  # relative to the logit, float64, epsilon and stabilizer 1e-12


def small_models() -> dict[str, nn.Module]:
    return {"timm vit": vits.timm_vit(depth=3),
            "timm deit distilled": vits.timm_vit("deit_tiny_distilled_patch16_224", depth=2),
            "timm registers, average pooling": vits.timm_vit(depth=2, reg_tokens=2, global_pool="avg"),
            "torchvision vit": vits.torchvision_vit()}


@pytest.mark.parametrize("name", ["timm vit", "timm deit distilled", "timm registers, average pooling",
                                  "torchvision vit"])
def test_the_relevance_of_the_pixels_sums_to_the_logit_where_every_rule_conserves(name):
    model = vits.without_biases(small_models()[name]).double()
    images = vits.images(2, dtype=torch.float64)
    relevance = attnlrp.attribute(model, images, [3, 7], attention="cp", epsilon=1e-12, stabilizer=1e-12)
    with torch.no_grad():
        logits = model(images)[[0, 1], [3, 7]]
    torch.testing.assert_close(relevance.sum((1, 2, 3)), logits, rtol=CONSERVATION, atol=0)


def test_the_softmax_rule_keeps_part_of_the_logit():
    """With the paper's softmax rule the total differs from the logit (its bias term), on the same model."""
    model = vits.without_biases(vits.timm_vit(depth=3)).double()
    images = vits.images(1, dtype=torch.float64)
    relevance = attnlrp.attribute(model, images, 3, epsilon=1e-12, stabilizer=1e-12)
    with torch.no_grad():
        logit = model(images)[0, 3]
    assert abs(float(relevance.sum() - logit)) > 1e3 * CONSERVATION * abs(float(logit))


def test_timm_attention_fused_or_written_out_gets_the_same_rules():
    fused = vits.timm_vit(depth=2).double()
    written = copy.deepcopy(fused)
    for block in written.blocks:
        block.attn.fused_attn = False  # q * scale, q @ k^T, softmax, @ v: the watch's generic rules
    images = vits.images(1, dtype=torch.float64)
    torch.testing.assert_close(attnlrp.attribute(written, images, 2), attnlrp.attribute(fused, images, 2),
                               rtol=1e-10, atol=1e-13)


def test_each_image_of_a_batch_is_explained_as_on_its_own():
    """In float64: in float32 a denominator near zero (the stabilizer is LXT's 1e-8) turns the batch's other
    summation order into visible differences on a few pixels."""
    model = vits.torchvision_vit().double()
    images = vits.images(2, dtype=torch.float64)
    both = attnlrp.attribute(model, images, [1, 4])
    torch.testing.assert_close(both[1:], attnlrp.attribute(model, images[1:], 4), rtol=1e-9, atol=1e-12)


def snapshot(model: nn.Module) -> dict:
    return {"guard": guarded_state(model), "values": {k: v.clone() for k, v in model.state_dict().items()},
            "forwards": [name for name, module in model.named_modules() if "forward" in vars(module)]}


@pytest.mark.parametrize("attention", ["attnlrp", "cp"])
def test_the_model_is_left_as_it_was(attention):
    for model in (vits.timm_vit(depth=1).train(), vits.torchvision_vit(layers=1).train()):
        before = snapshot(model)
        attnlrp.attribute(model, vits.images(1), 0, attention=attention)
        after = snapshot(model)
        assert before["guard"] == after["guard"] and before["forwards"] == after["forwards"] == []
        assert all(torch.equal(before["values"][key], after["values"][key]) for key in before["values"])


def test_a_layer_without_a_rule_is_refused_in_one_line_naming_it():
    model = vits.timm_vit(depth=1, act_layer=nn.Tanh)
    with pytest.raises(AttributionError, match=r"^AttnLRP: no rule for the non-linearity tanh in blocks\.0\.mlp\.act "
                                               r"\(Tanh\)$"):
        attnlrp.attribute(model, vits.images(1), 0)
    model = vits.timm_vit(depth=1, norm_layer=nn.RMSNorm)
    with pytest.raises(AttributionError, match=r"^AttnLRP: no rule for F\.rms_norm, a function AttnLRP has no rule "
                                               r"for in blocks\.0\.norm1 \(RMSNorm\)$"):
        attnlrp.attribute(model, vits.images(1), 0)


def test_layer_scale_hands_relevance_down_as_the_epsilon_rule_says():
    """timm's LayerScale multiplies a branch by a constant per channel: relevance passes unchanged (the
    epsilon rule on z = gamma x). The same ViT with gamma folded into the Linear before it computes the
    same logits, and its map must be the same; the gradient through LayerScale would scale it by gamma."""
    scaled = vits.timm_vit(depth=1, init_values=0.5)
    with torch.no_grad():
        for block in scaled.blocks:
            block.ls1.gamma.uniform_(0.3, 0.7)
            block.ls2.gamma.uniform_(0.3, 0.7)
    folded = copy.deepcopy(scaled)
    with torch.no_grad():
        for block in folded.blocks:
            for linear, scale in ((block.attn.proj, block.ls1), (block.mlp.fc2, block.ls2)):
                linear.weight.mul_(scale.gamma[:, None])
                linear.bias.mul_(scale.gamma)
            block.ls1, block.ls2 = nn.Identity(), nn.Identity()
    scaled, folded, images = scaled.double(), folded.double(), vits.images(1, dtype=torch.float64)
    torch.testing.assert_close(folded(images), scaled(images))
    # Float64 and epsilons near zero: at the defaults (1e-6), epsilon itself weighs differently on z and gamma z.
    maps = [attnlrp.attribute(model, images, 0, epsilon=1e-12, stabilizer=1e-14) for model in (scaled, folded)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-6, atol=1e-9)  # the map's largest: 5e-3


class Gate(nn.Module):
    """A container (a child of its own) whose forward multiplies by a sigmoid of the activation."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inner(x)
        return x * torch.sigmoid(x)


def test_an_unruled_function_in_a_forward_is_refused_naming_the_module():
    model = vits.torchvision_vit(layers=1)
    model.encoder.layers.encoder_layer_0.mlp[1] = Gate()
    with pytest.raises(AttributionError, match=r"^AttnLRP: no rule for the non-linearity sigmoid in "
                                               r"encoder\.layers\.encoder_layer_0\.mlp\.1 \(Gate\)$"):
        attnlrp.attribute(model, vits.images(1), 0)


def test_unknown_settings_are_refused():
    with pytest.raises(AttributionError, match="attention must be one of attnlrp, cp"):
        attnlrp.attribute(vits.torchvision_vit(layers=1), vits.images(1), 0, attention="rollout")


class ChannelNorm(nn.LayerNorm):
    """timm's LayerNorm2d in small: a LayerNorm over the channels of a map, its forward permuting them last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class InPlace(nn.Module):
    """Attention whose logits get a term added in place after the softmax's input was kept (as MViTv2's
    relative positions are added): the backward pass cannot use what a rule kept."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).chunk(3, dim=-1)
        logits = q @ k.transpose(-2, -1)
        weights = logits.softmax(dim=-1)
        logits += 1.0  # in place, after the softmax rule kept its input
        return (weights @ v).mean(1) + logits.mean((1, 2))[:, None]


def test_a_norm_over_channels_and_an_in_place_change_are_refused_in_one_line():
    model = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), ChannelNorm(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    with pytest.raises(AttributionError, match=r"^AttnLRP: no rule for ChannelNorm on an input of shape "
                                               r"\(1, 8, 4, 4\): it normalizes over \(8,\)"):
        attnlrp.attribute(model, torch.randn(1, 3, 16, 16), 0)
    with pytest.raises(AttributionError, match="^AttnLRP: the model changes a tensor in place"):
        attnlrp.attribute(nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), InPlace(), nn.Linear(8, 5)),
                          torch.randn(1, 3, 16, 16), 0)
