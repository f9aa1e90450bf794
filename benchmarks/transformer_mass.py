"""How much of each transformer map's positive mass lies on the object, on demo-vit and the 40 demo images.

    python benchmarks/transformer_mass.py                # the table in docs/transformers.md
    python benchmarks/transformer_mass.py --attention cp # AttnLRP with the attention weights held (CP-LRP)

For every bundled image (examples/demo/images, masks in examples/demo/masks) the map of each method
for the predicted class, at the input's 64 x 64, is scored like a report's mask share
(nnvis_core.toolkit.mask_share: the share of the map's positive mass inside the mask); the table
gives the mean over the images, with the mask's own share of the image (a uniform map's score) and a
centred Gaussian (sigma a quarter of the side: "look at the middle") as baselines. AttnLRP's map is
its relevance summed over the colour channels, as the plugin's default reduce=sum draws it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nnvis_core.demo import DEMO_SPEC
from nnvis_core.demo.vit import load_demo_vit
from nnvis_core.toolkit import mask_share, normalizer
from nnvis_plugins.lrp import attnlrp
from nnvis_plugins.transformer import relevance, rollout

BUNDLE = Path(__file__).resolve().parent.parent / "examples" / "demo"


def demo_images() -> tuple[torch.Tensor, list[np.ndarray]]:
    """The bundled images, normalized for the demo models, and their boolean masks."""
    paths = sorted((BUNDLE / "images").glob("*/*.png"))
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    masks = [np.asarray(Image.open(BUNDLE / "masks" / path.relative_to(BUNDLE / "images"))) > 127 for path in paths]
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
    return normalizer(DEMO_SPEC["mean"], DEMO_SPEC["std"])(images), masks


def centred_gaussian(side: int) -> np.ndarray:
    xx, yy = np.meshgrid(np.arange(side) - (side - 1) / 2, np.arange(side) - (side - 1) / 2)
    return np.exp(-(xx ** 2 + yy ** 2) / (2 * (side / 4) ** 2))


def maps(model: torch.nn.Module, images: torch.Tensor, attention: str) -> dict[str, np.ndarray]:
    """(N, H, W) maps of each method for the predicted classes."""
    with torch.no_grad():
        target = model(images).argmax(dim=1).tolist()
    return {
        "AttnLRP": attnlrp.attribute(model, images, target, attention=attention).sum(dim=1).numpy(),
        "Transformer Attribution (Chefer)": relevance.attribute(model, images, target)[:, 0].numpy(),
        "attention rollout": rollout.attribute(model, images)[:, 0].numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", default="attnlrp", choices=["attnlrp", "cp"])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_demo_vit()
    images, masks = demo_images()
    scores = {name: [mask_share(heat, mask)["mask_share"] for heat, mask in zip(heats, masks)]
              for name, heats in maps(model, images, args.attention).items()}
    scores["centred Gaussian"] = [mask_share(centred_gaussian(mask.shape[0]), mask)["mask_share"] for mask in masks]
    scores["uniform map (the mask's area)"] = [float(mask.mean()) for mask in masks]
    print(f"{len(masks)} images, demo-vit, predicted class; AttnLRP attention={args.attention}\n")
    print("| method | mass on the object |\n|---|---|")
    for name, values in sorted(scores.items(), key=lambda item: -np.mean(item[1])):
        print(f"| {name} | {np.mean(values):.2f} |")


if __name__ == "__main__":
    main()
