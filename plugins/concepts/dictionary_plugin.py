"""The concept_dictionary plugin: a sparse dictionary of a layer's activations over the whole folder, and
what each atom is (the method is in dictionary.py).

Two passes over the folder, both where the run's engine computes (map_batches): the first samples
`positions` positions of the layer's grid from each image (seeded by the image's index, so every
engine samples the same) and the dictionary is trained on them; the second encodes every position of
every image and keeps, per atom, which images use it and its strongest positions. The report's
concept atlas ranks the atoms by how many images use them, each with its strongest crops (linked to
their images) and a feature visualization of its direction; the card reports the dictionary's
reconstruction error, sparsity and dead atoms.
"""

from __future__ import annotations

import numpy as np
import torch

from nnvis_core import Concept, ConceptAtlas, Param, Plugin, Scope, Table, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.stream import map_batches, only
from nnvis_core.toolkit import as_map, forward_until
from nnvis_plugins.concepts import dictionary
from nnvis_plugins.concepts.choices import one_layer
from nnvis_plugins.concepts.pictures import PICTURE_STEPS, direction_pictures


def layer_maps(ctx, batch, layer: str) -> torch.Tensor:
    """(B, C, h, w) the layer's output for a batch, read as a map (tokens and channels-last too)."""
    inputs = torch.stack([item.tensor for item in batch]).to(ctx.device)
    with torch.no_grad():
        output = forward_until(ctx.module, layer, inputs)
    maps = as_map(ctx.module, output, tuple(inputs.shape[-2:]))
    if maps.dim() != 4:
        raise ValueError(f"layer {layer}: a dictionary of positions needs a map, got {tuple(output.shape)}")
    return maps


def batch_samples(ctx, batch, layer: str, positions: int, seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(B x positions, C) float32 activation vectors at positions drawn per image, and the grid (h, w)."""
    maps = layer_maps(ctx, batch, layer)
    h, w = maps.shape[-2:]
    rows = []
    for item, one in zip(batch, maps):
        rng = np.random.default_rng([seed, item.record.index])
        chosen = rng.choice(h * w, size=min(positions, h * w), replace=False)
        rows.append(one.flatten(1)[:, torch.as_tensor(chosen)].T.float().cpu().numpy())
    return np.concatenate(rows), (h, w)


def batch_codes(ctx, batch, layer: str, state: dict, atoms: int, k: int):
    """Per image of a batch: (report index, atoms it uses anywhere (atoms,) bool, each atom's strongest
    code (atoms,) and its grid position (atoms, 2)), and the batch's sums for the fit."""
    model = dictionary.TopKDictionary(state["bias"].shape[0], atoms, k, torch.Generator())
    model.load_state_dict(state)
    maps = layer_maps(ctx, batch, layer)
    h, w = maps.shape[-2:]
    found = []
    for item, one in zip(batch, maps):
        with torch.no_grad():
            codes = model.encode(one.flatten(1).T.double().cpu())  # (h w, atoms)
        best, where = codes.max(dim=0)
        found.append((item.record.index, (codes > 0).any(0).numpy(), best.numpy(),
                      np.stack([(where // w).numpy(), (where % w).numpy()], axis=1)))
    return found, (h, w)


def cell_crop(pixels: np.ndarray, grid: tuple[int, int], row: int, column: int) -> np.ndarray:
    """The part of a displayed image (H, W, 3) around one cell of the layer's grid: two cells wide,
    centred on it, inside the image."""
    height, width = pixels.shape[:2]
    cell_h, cell_w = height / grid[0], width / grid[1]
    centre_y, centre_x = (row + 0.5) * cell_h, (column + 0.5) * cell_w
    top = int(np.clip(round(centre_y - cell_h), 0, max(0, height - round(2 * cell_h))))
    left = int(np.clip(round(centre_x - cell_w), 0, max(0, width - round(2 * cell_w))))
    return pixels[top:top + max(1, round(2 * cell_h)), left:left + max(1, round(2 * cell_w))]


class ConceptDictionary(Plugin):
    name = "concept_dictionary"
    title = "Concept dictionary: a sparse dictionary of a layer over the folder"
    description = (
        "A TopK sparse autoencoder (as in the overcomplete package, Fel et al. 2025) trained on a layer's "
        "activation vectors at positions sampled from every image: each position written as a few of `atoms` "
        "unit directions. Atoms ranked by how many images use them, each with its strongest crops (click "
        "through to the image); the card gives the reconstruction error, the active atoms per position and "
        "the dead atoms."
    )
    scope = Scope.DATASET
    params = (
        Param("layer", str, "auto", "the layer (see nnvis layers; maps, tokens and channels-last); auto: the "
              "layer Grad-CAM reads"),
        Param("atoms", int, 64, "atoms in the dictionary", minimum=2, maximum=65_536),
        Param("k", int, 4, "active atoms per position (TopK)", minimum=1),
        Param("steps", int, 1000, "Adam steps of the training", minimum=1),
        Param("positions", int, 16, "positions sampled from each image for training", minimum=1),
        Param("shown", int, 24, "atoms shown, most used first", minimum=1),
        Param("top", int, 6, "crops shown per atom", minimum=1, maximum=32),
        PICTURE_STEPS,
    )

    def run_dataset(self, ctx, items, params) -> Result:
        layer = one_layer(ctx, params["layer"])
        samples = [part for part, _ in map_batches(ctx, items, batch_samples, layer, params["positions"],
                                                   ctx.seed)]
        if not samples:
            raise ValueError("no readable image to take activations from")
        vectors = torch.from_numpy(np.concatenate(samples))
        atoms, k = params["atoms"], min(params["k"], params["atoms"])
        model = dictionary.train_dictionary(vectors, atoms, k, params["steps"], seed=ctx.seed)
        state = {name: value.detach() for name, value in model.state_dict().items()}
        per_image, grid = [], None
        for found, grid in map_batches(ctx, items, batch_codes, layer, state, atoms, k):
            per_image += found
        quality = dictionary.fit(model, vectors)
        used = np.stack([uses for _, uses, _, _ in per_image])  # (images, atoms)
        counts = used.sum(0)
        order = [int(a) for a in np.argsort(-counts, kind="stable") if counts[a] > 0][:params["shown"]]
        best = np.stack([values for _, _, values, _ in per_image])  # (images, atoms)
        indices = [index for index, _, _, _ in per_image]
        wanted = {a: np.argsort(-best[:, a], kind="stable")[:params["top"]] for a in order}
        pictures = {item.record.index: item.pixels for item in
                    only(items, {indices[i] for rows in wanted.values() for i in rows})}
        drawn = direction_pictures(ctx, layer, model.decoder.detach().T[order].numpy(), params["picture_steps"])
        shown = []
        for a, picture in zip(order, drawn):
            strongest = [i for i in wanted[a] if best[i, a] > 0]
            shown.append(Concept(f"atom {a}", [cell_crop(pictures[indices[i]], grid, *map(int, per_image[i][3][a]))
                                               for i in strongest], [indices[i] for i in strongest],
                                 value=float(counts[a]), share=float(counts[a] / len(per_image)), picture=picture))
        atlas = ConceptAtlas("concept dictionary: atoms by use", "", shown, value_label="images using it",
                             share_label="share of images",
                             caption=f"the most used atoms first, each with its strongest crops (click one for its "
                                     f"image); layer {layer}, {atoms} atoms, {k} active per position")
        rows = [[f"atom {a}", str(int(counts[a])), f"{100 * counts[a] / len(per_image):.0f}%",
                 f"{best[used[:, a], a].mean():.3g}"] for a in order]
        table = Table("concept dictionary: atoms", ["atom", "images using it", "share of images",
                                                    "mean strongest code"], rows,
                      caption=f"reconstruction error {quality.relative_error:.3f} (share of the variance left), "
                              f"{quality.active:.2f} active atoms per position, {quality.dead} dead atoms "
                              f"(never active), on the {len(vectors)} positions trained on")
        metrics = {"relative_error": quality.relative_error, "active_per_position": quality.active,
                   "dead_atoms": float(quality.dead), "atoms_used": float((counts > 0).sum())}
        return Result([atlas, table], metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(ConceptDictionary())
