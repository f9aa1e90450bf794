"""The `dataset_distillation` plugin: distil the labelled folder for the model's architecture and test it."""

from __future__ import annotations

import torch

from nnvis_core import Param, Plugin, Scope, Text, hookimpl
from nnvis_core.contract.artifacts import Result
from nnvis_plugins.distillation.architecture import INITS, Architecture, output_layer, why_not_reinitializable
from nnvis_plugins.distillation.card import accuracy_table, image_grid, training_curve
from nnvis_plugins.distillation.data import FolderRefusal, Split, labelled_images, random_real, split
from nnvis_plugins.distillation.distribution import distil_distribution
from nnvis_plugins.distillation.evaluation import LongTraining, Score, held_out_score
from nnvis_plugins.distillation.matching import distil_matching
from nnvis_plugins.distillation.synthetic import STARTS, Distilled, Settings, draw_seed
from nnvis_plugins.distillation.unrolled import distil_unrolled

METHODS = {"unrolled": distil_unrolled, "gradient_matching": distil_matching,
           "distribution_matching": distil_distribution}


def per_class_counts(spec: str) -> list[int]:
    """'1,10' -> [1, 10]; ValueError naming the parameter otherwise."""
    try:
        counts = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 or c > 100 for c in counts):
        raise ValueError(f"images_per_class: expected comma-separated counts from 1 to 100, got {spec!r}")
    return list(dict.fromkeys(counts))


def check_counts(spec: str) -> str | None:
    try:
        per_class_counts(spec)
    except ValueError as error:
        return str(error).split(": ", 1)[1]
    return None


def comparison(arch: Architecture, data: Split, distilled: Distilled, count: int, seeds: list[int],
               generator: torch.Generator, long: LongTraining | None = None) -> dict[str, tuple[int, Score]]:
    """Held-out scores of the distilled images and of the two baselines, from the same initializations
    with the same training (the distillation's steps and step sizes, or `long`): {training set: (images, score)}."""
    real_images, real_labels = random_real(data, count, generator)
    training_sets = {"distilled": (distilled.images, distilled.targets), "random real": (real_images, real_labels),
                     "full split": (data.train_images, data.train_labels)}
    return {name: (len(images), held_out_score(arch, data, images, targets, distilled.step_sizes, seeds, long))
            for name, (images, targets) in training_sets.items()}


class DatasetDistillation(Plugin):
    name = "dataset_distillation"
    title = "Dataset distillation"
    description = (
        "Learns a few synthetic images per class such that fresh random initializations of the model's "
        "architecture, trained on them alone for a few steps, classify the folder (Wang, Zhu, Torralba & Efros "
        "2018: unrolled inner steps, learned step sizes, optional soft labels; or gradient matching, Zhao, "
        "Mopuri & Bilen 2021; or distribution matching, Zhao & Bilen 2023). Shows the images, the training curve, "
        "and held-out accuracy beside random real "
        "images and the full folder trained the same way. Needs class subfolders; the loaded weights are not used."
    )
    scope = Scope.DATASET
    params = (
        Param("method", str, "unrolled", "unrolled (Wang et al. 2018), gradient_matching (Zhao et al. 2021: the "
              "cost of an image update does not grow with inner_steps) or distribution_matching (Zhao & Bilen "
              "2023: class mean embeddings under fresh networks matched, no second-order pass)",
              choices=tuple(METHODS)),
        Param("images_per_class", str, "1", "synthetic images per class; several counts separated by commas "
              "(1,10) are distilled one after the other, each taking about that many times longer",
              check=check_counts),
        Param("outer_steps", int, 20, "outer optimization steps (each draws a fresh initialization)",
              minimum=1, maximum=100_000),
        Param("inner_steps", int, 3, "gradient steps a network takes on the synthetic images (unrolled and "
              "evaluated; for gradient_matching, matched steps per initialization)", minimum=1, maximum=1000),
        Param("lr", float, 0.01, "step size of the inner steps: the initial value of the learned step sizes "
              "(unrolled) or the fixed one (gradient_matching)", minimum=1e-6, maximum=10.0),
        Param("image_lr", float, 0.05, "Adam learning rate of the synthetic images (in the model's normalized "
              "input space)", minimum=1e-6, maximum=10.0),
        Param("soft_labels", bool, False, "learn a label distribution per synthetic image (unrolled only)"),
        Param("fixed_init", bool, False, "distil for one fixed initialization instead of fresh ones; it is "
              "then also the one evaluated"),
        Param("start", str, "noise", "what the synthetic images start from: noise or real images",
              choices=STARTS),
        Param("init", str, "kaiming", "how fresh weights are drawn: kaiming (He normal for conv and linear "
              "layers, the last Linear at zero, each module's reset_parameters for the rest) or default "
              "(reset_parameters everywhere)",
              choices=INITS),
        Param("eval_inits", int, 4, "fresh initializations each training set is evaluated from",
              minimum=1, maximum=1000),
        Param("eval_steps", int, 0, "how the evaluation trains: 0 = the distillation's own steps and step "
              "sizes (Wang et al.); N = N Adam steps on minibatches of 64 (Zhao et al.'s longer evaluation: a "
              "deep net learns nothing in a few plain steps), the same for every training set",
              minimum=0, maximum=100_000),
        Param("eval_lr", float, 1e-3, "Adam learning rate of the evaluation's long training (eval_steps > 0)",
              minimum=1e-6, maximum=1.0),
        Param("held_out", float, 0.3, "share of each class's images held out for testing (at least one)",
              minimum=0.01, maximum=0.99),
        Param("max_per_class", int, 50, "the budget: at most this many images of each class are read "
              "(a seeded random choice)", minimum=2, maximum=100_000),
        Param("real_batch", int, 64, "real images per outer step", minimum=1, maximum=100_000),
        Param("seed", int, 0, "added to the run's seed: another draw of split, starts and initializations",
              minimum=0, maximum=2 ** 31 - 1),
    )

    def applies_to(self, ctx) -> str | None:
        return why_not_reinitializable(ctx.module)

    def check_params(self, params, plugins) -> None:
        if params["soft_labels"] and params["method"] != "unrolled":
            raise ValueError("dataset_distillation.soft_labels works only with method=unrolled")

    def run_dataset(self, ctx, items, params):
        counts = per_class_counts(params["images_per_class"])
        generator = torch.Generator().manual_seed((ctx.seed_for(None, self.name) + params["seed"]) % 2 ** 63)
        try:
            by_class = labelled_images(items, params["max_per_class"], generator)
            data = split(by_class, params["held_out"], generator, list(ctx.class_names))
        except FolderRefusal as refusal:
            # The folder is only seen here, after the run began: a card that says why, not a failed run,
            # so that `--plugins all` over an unlabelled folder still succeeds.
            return Result([Text("refused", str(refusal), caption="nothing was distilled")])
        if params["method"] == "distribution_matching" and output_layer(ctx.module) is None:
            return Result([Text("refused", "distribution_matching embeds images with the features that feed the "
                                "model's last Linear layer, and this model has none", caption="nothing was distilled")])
        arch = Architecture(ctx.module, ctx.device, params["init"])
        settings = Settings(inner_steps=params["inner_steps"], outer_steps=params["outer_steps"], lr=params["lr"],
                            image_lr=params["image_lr"], real_batch=params["real_batch"], start=params["start"],
                            soft_labels=params["soft_labels"], fixed_init=params["fixed_init"])
        evaluation_seeds = [draw_seed(generator) for _ in range(params["eval_inits"])]
        long = LongTraining(params["eval_steps"], params["eval_lr"]) if params["eval_steps"] else None
        distil = METHODS[params["method"]]
        preprocess = ctx.model.preprocess
        artifacts, rows, curves, metrics = [], [], {}, {}
        for count in counts:
            distilled = distil(arch, data, count, len(ctx.class_names), settings, generator)
            seeds = [distilled.fixed_seed] if settings.fixed_init else evaluation_seeds
            scores = comparison(arch, data, distilled, count, seeds, generator, long)
            for training_set, (images, score) in scores.items():
                rows.append((count, training_set, images, score))
                metrics[f"{training_set.replace(' ', '_')}_{count}_accuracy"] = score.mean
            metrics[f"margin_{count}"] = scores["distilled"][1].mean - scores["random real"][1].mean
            curves[count] = distilled.curve
            artifacts.append(image_grid(distilled, count, ctx.class_names, preprocess.mean, preprocess.std,
                                        params["method"], long.describe() if long else None))
        smallest = min(len(data.class_images(label)) for label in data.classes)
        note = (f"{len(data.classes)} classes (chance {1 / len(data.classes):.1%}), "
                f"{len(data.train_images)} images to distil from "
                f"(at most {params['max_per_class']} read per class); each training set trained with "
                + (long.describe() if long else f"the distillation's {settings.inner_steps} steps and step sizes")
                + ("; fixed_init: evaluated on the one initialization it was distilled for" if settings.fixed_init
                   else f" from the same {len(evaluation_seeds)} fresh initializations"))
        if smallest < max(counts):
            note += f"; random real uses all images of a class with fewer than the count (smallest: {smallest})"
        artifacts += [training_curve(curves, params["method"]), accuracy_table(rows, len(data.test_images), note)]
        return Result(artifacts, metrics=metrics)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(DatasetDistillation())
