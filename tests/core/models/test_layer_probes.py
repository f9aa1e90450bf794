"""The forward passes nnvis makes to learn a model's layers: at the model's own input size, and
without changing what the model computes."""

from __future__ import annotations

import torch

import nnvis
from nnvis_core.models.listing import layer_rows

NAMES = [f"c{i}" for i in range(4)]


class MixerBlock(torch.nn.Module):
    """Token mixing over a fixed number of tokens, then channel mixing, each with a residual."""

    def __init__(self, tokens: int, channels: int):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(channels), torch.nn.LayerNorm(channels)
        self.tokens = torch.nn.Linear(tokens, tokens)
        self.channels = torch.nn.Linear(channels, channels)

    def forward(self, x):
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channels(self.norm2(x))


class SmallMixer(torch.nn.Module):
    """An MLP-Mixer built for 64 px inputs (8x8 patches of 8 px): its token mixing takes 64 tokens,
    so it rejects every other input size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.blocks = torch.nn.Sequential(MixerBlock(64, 16), MixerBlock(64, 16))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(dim=1))


class SharedActivation(torch.nn.Module):
    """One ReLU module called twice on outputs of different shapes (CrossViT reuses its pos_drop)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = self.act(self.second(self.act(self.first(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_default_layers_are_found_at_the_model_s_own_input_size():
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    run = nnvis.run(images, SmallMixer(), plugins=["gradcam", "activations"], preprocess={"resize": 64, "crop": 64},
                    class_names=NAMES, device="cpu", progress=False)
    statuses = {name: entry["status"] for image in run.report()["by_model"][0]["images"]
                for name, entry in image["results"].items()}
    assert statuses == {"gradcam": "ok", "activations": "ok"}


def test_listing_the_layers_leaves_a_module_called_twice_computing_what_it_computes():
    model = SharedActivation().eval()
    rows = layer_rows(model, (32, 32))
    assert {row.name: row.output for row in rows}["second"] == "map 8x32x32"
    assert all(row.output != "not run" for row in rows)
