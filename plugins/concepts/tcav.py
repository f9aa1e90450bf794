"""The tcav plugin: which of the user's concepts drive each class, at which layer, and whether that
is more than chance (Kim et al., ICML 2018; the method is in cav.py).

Concepts come from --concepts DIR, one subfolder of images per concept. Random images come from the
run's own folder (or a folder named by `random`): R + 1 random sets of `set_size` images each. Each
concept gets one CAV against each of the random sets 1..R; random set 0 plays a concept too, and its R
CAVs give the scores chance alone gives. A class's images are those the model predicts it for; their
layer gradients are computed where the run's engine computes (map_batches), and only the signs of
their products with the CAVs come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnvis_core import Concept, ConceptAtlas, Param, Plugin, Scope, Table, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_core.contract.stream import map_batches, only
from nnvis_core.images import IMAGE_EXTENSIONS, ImageReadError, load_rgb
from nnvis_core.toolkit import default_layer, resolve_layer
from nnvis_plugins.concepts import cav
from nnvis_plugins.concepts.choices import CLASSES, class_indices, layer_names

NO_CONCEPTS = "needs concept images: --concepts DIR (one subfolder of images per concept)"
MIN_IMAGES = 2  # a concept or a random set with fewer cannot train a classifier
EXAMPLES = 4  # a concept's images shown in the atlas


def concept_folders(root: Path) -> dict[str, list[Path]]:
    """{concept name: its image files}, for every subfolder of `root` holding at least one image."""
    found = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            found[folder.name] = files
    return found


def why_not(root: Path | None) -> str | None:
    """Why the concepts folder cannot be used (one line), or None."""
    if root is None:
        return NO_CONCEPTS
    if not Path(root).is_dir():
        return f"--concepts {root}: no such folder"
    found = concept_folders(root)
    if not found:
        return f"--concepts {root}: no subfolder with images (one subfolder of images per concept)"
    small = [name for name, files in found.items() if len(files) < MIN_IMAGES]
    if small:
        return f"--concepts {root}: {', '.join(small)}: fewer than {MIN_IMAGES} images"
    return None


def load_images(ctx, files: list[Path]) -> tuple[torch.Tensor, list[np.ndarray]]:
    """(N, 3, H, W) the files as the model sees them (its preprocessing), on the run's device, and the
    first EXAMPLES of them as display pixels, for the atlas (each file is decoded once)."""
    shown, tensors = [], []
    for path in files:
        try:
            pixels = ctx.model.preprocess.display(load_rgb(path))
        except ImageReadError as error:
            raise ValueError(f"{path}: {error.reason}") from None
        if len(shown) < EXAMPLES:
            shown.append(pixels)
        tensors.append(ctx.model.preprocess.normalize(pixels))
    return torch.stack(tensors).to(ctx.device), shown


@dataclass
class CavSet:
    """Every CAV of one layer, as rows: concept c against random set r at row c * R + r - 1 (r = 1..R),
    then random set 0 against random set r at row C * R + r - 1."""

    layer: str
    vectors: torch.Tensor  # (C * R + R, D)
    accuracies: np.ndarray  # (C * R + R,)


def batch_signs(ctx, batch, layers: list[str], vectors: list[torch.Tensor]) -> tuple[list[int], list[np.ndarray]]:
    """One batch's predicted classes and, per layer, whether each image's predicted-class logit grows
    along each CAV ((B, CAVs) bools): the gradient stays on the worker, only its signs come back."""
    inputs = torch.stack([item.tensor for item in batch]).to(ctx.device).requires_grad_(True)
    predicted = [item.predicted for item in batch]
    modules = [resolve_layer(ctx.module, layer) for layer in layers]
    held: list[torch.Tensor | None] = [None] * len(modules)

    def keeper(slot: int):
        return lambda module, args, output: held.__setitem__(slot, output)

    handles = [module.register_forward_hook(keeper(slot)) for slot, module in enumerate(modules)]
    try:
        logits = ctx.module(inputs)
    finally:
        for handle in handles:
            handle.remove()
    chosen = logits[torch.arange(len(batch)), torch.tensor(predicted, device=logits.device)].sum()
    gradients = torch.autograd.grad(chosen, held)
    signs = [(g.flatten(1).double().cpu() @ v.T > 0).numpy() for g, v in zip(gradients, vectors)]
    return predicted, signs


class TCAV(Plugin):
    name = "tcav"
    title = "TCAV: the concepts that drive each class"
    description = (
        "Kim et al. (ICML 2018): for each concept folder of --concepts, a concept activation vector (CAV) per "
        "layer, the normal of a linear classifier separating the layer's activations of the concept's images "
        "from random images; a class's TCAV score is the share of its images whose logit grows along the CAV. "
        "CAVs against several random sets, compared with random-against-random CAVs by a t-test "
        "(Bonferroni-corrected), say whether the concept matters more than chance."
    )
    scope = Scope.DATASET
    params = (
        Param("layers", str, "auto", "comma-separated layers (see nnvis layers); auto: the layer Grad-CAM reads"),
        CLASSES,
        Param("random", str, "folder", "where random images come from: folder (drawn from the run's images) or "
              "a folder of images"),
        Param("random_sets", int, 10, "R: random sets each concept is trained against (the t-test's sample "
              "size); R + 1 sets are drawn", minimum=2, maximum=200),
        Param("set_size", int, 20, "images per random set (drawn with replacement when the pool is smaller)",
              minimum=MIN_IMAGES, maximum=10_000),
        Param("min_images", int, 5, "classes with fewer predicted images are left out (predicted)", minimum=1),
        Param("alpha", float, 0.05, "significance level, divided by the number of tests (Bonferroni)",
              minimum=1e-12, maximum=0.5),
    )

    def check_params(self, params, plugins) -> None:
        if params["random"] != "folder" and not Path(params["random"]).is_dir():
            raise ValueError(f"tcav.random: {params['random']}: no such folder (or say folder)")

    def applies_with(self, ctx, params) -> str | None:
        return why_not(ctx.concepts_dir)

    def default_layers(self, model) -> list[str]:
        return [default_layer(model)]

    def run_dataset(self, ctx, items, params) -> Result:
        problem = why_not(ctx.concepts_dir)
        if problem:
            raise ValueError(problem)
        layers = layer_names(ctx, params["layers"])
        folders = concept_folders(ctx.concepts_dir)
        loaded = {name: load_images(ctx, files) for name, files in folders.items()}
        concepts = {name: images for name, (images, _) in loaded.items()}
        randoms = self._random_sets(ctx, items, params)
        cav_sets = [self._cavs(ctx, layer, concepts, randoms) for layer in layers]
        predicted, signs = [], [[] for _ in layers]
        for batch_predicted, batch_signs_ in map_batches(ctx, items, batch_signs, layers,
                                                          [s.vectors for s in cav_sets]):
            predicted += batch_predicted
            for slot, block in enumerate(batch_signs_):
                signs[slot].append(block)
        predicted = np.asarray(predicted)
        counts = np.bincount(predicted, minlength=len(ctx.class_names))
        classes = class_indices(ctx, params["classes"], dict(enumerate(counts.tolist())), params["min_images"])
        pictures = {name: shown for name, (_, shown) in loaded.items()}
        return self._result(ctx, params, pictures, layers, cav_sets, predicted,
                            [np.concatenate(s) for s in signs], classes)

    # --- the pieces ----------------------------------------------------------------------------------

    @staticmethod
    def _random_sets(ctx, items, params) -> list[torch.Tensor]:
        """R + 1 sets of set_size images, drawn with the run's seed from the folder or the given folder."""
        count, size = params["random_sets"] + 1, params["set_size"]
        rng = np.random.default_rng(ctx.seed)
        if params["random"] == "folder":
            indices = [item.record.index for item in items] if not hasattr(items, "records") else [
                record.index for record in items.records]
            if len(indices) < MIN_IMAGES:
                raise ValueError(f"random=folder: the folder has {len(indices)} image(s), fewer than {MIN_IMAGES}")
            drawn = rng.choice(indices, size=(count, size), replace=len(indices) < count * size)
            pool = {item.record.index: item.tensor for item in only(items, set(drawn.ravel().tolist()))}
            return [torch.stack([pool[i] for i in row if i in pool]).to(ctx.device) for row in drawn]
        files = [f for fs in concept_folders(Path(params["random"])).values() for f in fs] if Path(
            params["random"]).is_dir() else []
        files += [p for p in Path(params["random"]).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
        if len(files) < MIN_IMAGES:
            raise ValueError(f"random={params['random']}: fewer than {MIN_IMAGES} images there")
        drawn = rng.choice(len(files), size=(count, size), replace=len(files) < count * size)
        images, _ = load_images(ctx, files)
        return [images[torch.as_tensor(row)] for row in drawn]

    @staticmethod
    def _cavs(ctx, layer: str, concepts: dict[str, torch.Tensor], randoms: list[torch.Tensor]) -> CavSet:
        acts = {name: cav.activations(ctx.module, images, layer, ctx.batch_size) for name, images in concepts.items()}
        random_acts = [cav.activations(ctx.module, images, layer, ctx.batch_size) for images in randoms]
        trained = [cav.train_cav(positive, negative) for positive in [*acts.values(), random_acts[0]]
                   for negative in random_acts[1:]]
        return CavSet(layer, torch.stack([t.vector for t in trained]), np.array([t.accuracy for t in trained]))

    def _result(self, ctx, params, pictures, layers, cav_sets, predicted, signs, classes) -> Result:
        names, r = list(pictures), params["random_sets"]
        tests = len(names) * len(layers) * len(classes)
        rows, metrics, atlases = [], {}, []
        significant = {"above": 0, "below": 0}  # a two-sided test: a concept can also lower the class's logit
        for k in classes:
            own = predicted == k
            if not own.any():
                continue
            found = []
            for slot, layer in enumerate(layers):
                scores = signs[slot][own].mean(axis=0)  # (CAVs,) TCAV score of each CAV for class k
                chance = scores[len(names) * r:]
                for c, name in enumerate(names):
                    mine = scores[c * r:(c + 1) * r]
                    test = cav.significance(mine, chance, tests, params["alpha"])
                    side = "above" if mine.mean() > chance.mean() else "below"
                    significant[side] += test.significant
                    accuracy = cav_sets[slot].accuracies[c * r:(c + 1) * r].mean()
                    rows.append([ctx.class_names[k], name, layer, f"{mine.mean():.3f} ± {mine.std():.3f}",
                                 f"{chance.mean():.3f} ± {chance.std():.3f}", f"{test.p_value:.2g}",
                                 f"yes, {side} chance" if test.significant else "no", f"{accuracy:.2f}",
                                 str(int(own.sum()))])
                    metrics[f"tcav:{ctx.class_names[k]}:{name}:{layer}"] = float(mine.mean())
                    found.append(Concept(name if len(layers) == 1 else f"{name} @ {layer}", pictures[name],
                                         value=float(mine.mean()), low=float(mine.mean() - mine.std()),
                                         high=float(mine.mean() + mine.std()), significant=bool(test.significant),
                                         chance=(float(chance.mean()), float(chance.std()))))
            found.sort(key=lambda concept: -abs(concept.value - concept.chance[0]))  # furthest from chance first
            caption = (f"furthest from chance first; ✓: significant (p < {params['alpha']:g} / {tests}, two-sided); "
                       f"{int(own.sum())} images predicted {ctx.class_names[k]}; pictures: the concept's first images")
            atlases.append(ConceptAtlas(f"TCAV for {ctx.class_names[k]}", ctx.class_names[k], found, caption=caption,
                                        value_label="TCAV score (± sd over random sets; grey: random CAVs ± sd)",
                                        share_label=""))
        metrics["significant_above_chance"] = float(significant["above"])
        metrics["significant_below_chance"] = float(significant["below"])
        table = Table("TCAV score per class, concept and layer",
                      ["class", "concept", "layer", "TCAV (mean ± sd over random sets)", "random CAVs",
                       "p", f"significant (p < {params['alpha']:g} / {tests})", "CAV accuracy", "images"], rows,
                      caption=f"{r} random sets of {params['set_size']} images ({params['random']}); a class's "
                              "images are those the model predicts it for")
        return Result([table, *atlases], metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(TCAV())
