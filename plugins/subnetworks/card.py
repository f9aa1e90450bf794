"""What the report shows of a hidden-subnetwork search: the accuracy curve, kept weights per layer,
first-layer filters, and saliency maps of the best subnetwork beside the dense network's."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from nnvis_core import Chart, Gallery, Table
from nnvis_plugins.subnetworks.edgepopup import prunable


def accuracy_chart(keeps: list[float], curves: dict[str, list[float]], dense: float, chance: float) -> Chart:
    series = {f"subnetwork ({init})": values for init, values in curves.items()}
    series["dense, learned weights"] = [dense] * len(keeps)
    series["chance"] = [chance] * len(keeps)
    return Chart("held-out accuracy against the share of weights kept", [100 * k for k in keeps], series,
                 x_label="weights kept per layer (%)", y_label="held-out accuracy",
                 caption="each point: a subnetwork of frozen random weights, found by edge-popup at that share; "
                         "the dense network trains every weight of the same initialization with the same recipe")


def kept_table(subnetwork: nn.Module) -> Table:
    rows = []
    for name in prunable(subnetwork):
        weight = subnetwork.get_parameter(name)
        kept = int(weight.ne(0).sum())
        rows.append([name.removesuffix(".weight"), weight.numel(), kept, round(kept / weight.numel(), 4)])
    return Table("weights kept per layer (best subnetwork)", ["layer", "weights", "kept", "share"], rows,
                 caption="edge-popup keeps the same share of every conv and linear layer, the last included")


def filter_pictures(model: nn.Module) -> list[np.ndarray]:
    """The first conv layer's filters as (h, w, 3) pictures, each scaled to [0, 1] on its own (grey at 0
    for a one-channel filter, as its input is gray)."""
    name = prunable(model)[0]
    weights = model.get_parameter(name).detach().float()
    if weights.dim() != 4:
        return []
    pictures = []
    for kernel in weights[:64]:
        picture = kernel.permute(1, 2, 0)
        if picture.shape[-1] == 1:
            picture = picture.expand(-1, -1, 3)
        elif picture.shape[-1] != 3:
            picture = picture.abs().mean(-1, keepdim=True).expand(-1, -1, 3)
        span = float(picture.abs().max()) or 1.0
        pictures.append((picture / (2 * span) + 0.5).clamp(0, 1).numpy())
    return pictures


def filters_gallery(subnetwork: nn.Module, dense: nn.Module) -> list[Gallery]:
    galleries = []
    for title, model, note in (("first-layer filters: the subnetwork's kept random weights", subnetwork,
                                "pruned weights are 0 (grey)"),
                               ("first-layer filters: the dense network's learned weights", dense,
                                "learned from the same initialization")):
        pictures = filter_pictures(model)
        if pictures:
            galleries.append(Gallery(title, pictures, [str(i) for i in range(len(pictures))], columns=8,
                                     tile_size=48, caption=f"grey is 0, white positive, black negative; {note}"))
    return galleries


def saliency(model, images: torch.Tensor) -> torch.Tensor:
    """|d top score / d input|, the largest over channels: (N, H, W). `model` is a module or a callable."""
    x = images.clone().requires_grad_()
    with torch.enable_grad():
        scores = model(x)
        top = scores.gather(1, scores.argmax(1, keepdim=True)).sum()
        grad, = torch.autograd.grad(top, x)
    return grad.abs().amax(dim=1)


def map_comparison(subnetwork: nn.Module, dense: nn.Module, images: torch.Tensor,
                   mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Gallery, Table]:
    """Each held-out image, its saliency under the dense network and under the subnetwork, and the
    Spearman rank correlation of the two maps."""
    dense_maps, sub_maps = saliency(dense, images), saliency(subnetwork, images)
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    pictures, labels, rows = [], [], []
    for number, (image, a, b) in enumerate(zip((images * std_t + mean_t).clamp(0, 1), dense_maps, sub_maps)):
        constant = bool(a.min() == a.max() or b.min() == b.max())  # a dead network's map: rho undefined
        rho = None if constant else float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)
        rows.append([number, "undefined (a map is constant)" if rho is None else round(rho, 3)])
        pictures += [image.permute(1, 2, 0).numpy(), _gray(a), _gray(b)]
        labels += [f"image {number}", "dense", "subnetwork" if rho is None else f"subnetwork (rho {rho:.2f})"]
    gallery = Gallery("saliency: dense network and best subnetwork", pictures, labels, columns=3, tile_size=96,
                      caption="per held-out image: the picture, |gradient| of the top class under the dense "
                              "network, and under the best subnetwork (each map scaled to its own maximum)")
    table = Table("rank correlation of the two saliency maps", ["image", "Spearman rho"], rows,
                  caption="1: the two networks rank the pixels alike; 0: unrelated")
    return gallery, table


def _gray(heat: torch.Tensor) -> np.ndarray:
    scaled = heat / (float(heat.max()) or 1.0)
    return scaled.unsqueeze(-1).expand(-1, -1, 3).numpy()
