"""The `shape_bias` plugin: over a folder of cue-conflict images, how often the model follows the shape."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from nnvis_core import Param, Plugin, Result, Scope, Text, hookimpl
from nnvis_core.toolkit import CueConflictError
from nnvis_plugins.shape_bias.card import category_chart, counts_table, summary
from nnvis_plugins.shape_bias.categories import IMAGENET16, IMAGENET_CLASSES, category_probabilities
from nnvis_plugins.shape_bias.counting import Trial, count_cues
from nnvis_plugins.shape_bias.labels import CONVENTIONS, FolderRefusal, cue_labels

DECISIONS = ("auto", "imagenet16", "classes")
Decide = Callable[[torch.Tensor], torch.Tensor]


def decision_space(mode: str, class_names: Sequence[str]) -> tuple[list[str], Decide, str]:
    """The classes decisions are taken over, the function from (N, classes) probabilities to (N,)
    indices into them, and a description for the card."""
    if mode == "imagenet16" or (mode == "auto" and len(class_names) == IMAGENET_CLASSES):
        return (list(IMAGENET16), lambda p: category_probabilities(p).argmax(dim=1),
                "the 16 categories of Geirhos et al. (the mean probability of each category's ImageNet classes)")
    return list(class_names), lambda p: p.argmax(dim=1), f"the model's {len(class_names)} classes"


class ShapeBias(Plugin):
    name = "shape_bias"
    title = "Shape bias"
    description = (
        "Over a folder of cue-conflict images (the shape of one class, the texture of another: nnvis cue-conflict "
        "makes them), the share of the model's decisions that follow the shape among those that follow either "
        "cue, overall and per category (Geirhos et al., ICLR 2019). Labels come from the folder's "
        f"cue-conflict.csv or the file names, {CONVENTIONS}. ImageNet models decide among the paper's 16 "
        "categories, other models among their own classes."
    )
    scope = Scope.DATASET
    params = (
        Param("decisions", str, "auto", "what the model chooses among: imagenet16 (the 16 categories, for a "
              "1000-class ImageNet model), classes (its own classes), or auto (imagenet16 for 1000 classes)",
              choices=DECISIONS),
    )

    def applies_with(self, ctx, params) -> str | None:
        if params["decisions"] == "imagenet16" and len(ctx.class_names) != IMAGENET_CLASSES:
            return (f"decisions=imagenet16 needs a 1000-class ImageNet model; this one has "
                    f"{len(ctx.class_names)} classes")
        return None

    def run_dataset(self, ctx, items, params) -> Result:
        records, probabilities = [], []
        for item in items:
            records.append(item.record)
            probabilities.append(item.probabilities.float())
        classes, decide, decided_over = decision_space(params["decisions"], ctx.class_names)
        try:
            labels = cue_labels(records, classes)
        except (FolderRefusal, CueConflictError) as refusal:
            # The folder is only seen here: a card that says why, so that --plugins all still succeeds.
            return Result([Text("refused", str(refusal), caption="no shape bias was measured")])
        labelled = [(position, record) for position, record in enumerate(records) if record.index in labels]
        decisions = decide(torch.stack([probabilities[position] for position, _ in labelled])).tolist()
        trials = {record.index: Trial(record.relpath, *labels[record.index], classes[decision])
                  for (_, record), decision in zip(labelled, decisions)}
        overall, per_category = count_cues(trials.values())
        if not overall.images:
            return Result([Text("refused", "every labelled image has the same class for shape and texture",
                                caption="no shape bias was measured")])
        chart = category_chart(overall, per_category)
        artifacts = [summary(overall, decided_over, len(records) - overall.images),
                     *([chart] if chart else []), counts_table(overall, per_category)]
        follows = {"shape": "follows the shape", "texture": "follows the texture", "neither": "follows neither cue"}
        per_image = {index: [Text("cue conflict", f"shape {t.shape}, texture {t.texture}: the model chose "
                                  f"{t.decision}, which {follows[t.cue]}")]
                     for index, t in trials.items() if t.shape != t.texture}
        metrics = {"images": float(overall.images), "cue_share": float(overall.cue_share or 0.0)}
        if overall.shape_bias is not None:
            metrics["shape_bias"] = overall.shape_bias
        return Result(artifacts, metrics=metrics, image_artifacts=per_image)


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(ShapeBias())
