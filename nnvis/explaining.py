"""`nnvis.explain`: one attribution method on one image, the map as a tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nnvis.images import IN_MEMORY_ROOT, as_images, to_pil
from nnvis.models import model_specs
from nnvis.notebook import plugin_card, result_html
from nnvis_core.contract.artifacts import Heatmap, Result, as_result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import ParamError, resolve_params
from nnvis_core.contract.plugin import Plugin
from nnvis_core.contract.targets import TargetError
from nnvis_core.images import ImageReadError, ImageRecord, match_label
from nnvis_core.models import ModelOptions, load_model
from nnvis_core.models.layers import LAYER_KEYWORDS, LayerNotFound, error_line, find_layer
from nnvis_core.models.loaded import ModelLoadError, Preprocess
from nnvis_core.run.plan import UsageError
from nnvis_core.runner import choose_device, default_layer_problem
from nnvis_core.toolkit import AttributionPlugin
from nnvis_core.toolkit.targets import AttributionError


@dataclass
class Explained:
    """One method on one image: `map` is the (H, W) map the card draws, as a tensor."""

    map: torch.Tensor
    target: int
    target_name: str
    predicted: int
    result: Result
    pixels: np.ndarray | None = None  # the input as the model saw it (H, W, 3), under the drawn map
    plugin: dict = field(default_factory=dict)  # the method's name, title and description, for the card

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.result.metrics)

    @property
    def caption(self) -> str:
        return next((a.caption for a in self.result.artifacts if isinstance(a, Heatmap)), "")

    def _repr_html_(self) -> str:
        """The map over the input, as the report draws it, with its caption and metrics."""
        return result_html(self.result, self.pixels, self.plugin)


@dataclass
class ExplainedBatch:
    """One method on a batch of images (explain given an (N, 3, H, W) tensor or a list): `map` is
    the (N, H, W) maps, as Captum returns a batch's attributions; `items` each image's Explained."""

    map: torch.Tensor
    items: list[Explained]

    @property
    def target(self) -> list[int]:
        return [item.target for item in self.items]

    @property
    def predicted(self) -> list[int]:
        return [item.predicted for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _repr_html_(self) -> str:
        """The first few images' cards."""
        return "".join(item._repr_html_() for item in self.items[:SHOWN_CARDS])


SHOWN_CARDS = 4  # cards a notebook draws for a batch


def explain(model: Any, image: Any, method: str = "gradcam", target: str | int = "predicted", *,
            weights: Any = None, preprocess: Preprocess | dict | None = None,
            class_names: Sequence[str] | None = None, device: str = "auto", seed: int = 0,
            model_output: str | None = None, **params: Any) -> Explained | ExplainedBatch:
    """One attribution method on one image (a file, a PIL image, a NumPy array (H, W, 3) or an RGB
    tensor (3, H, W) in [0, 1]), the one-liner: the map as a tensor, the target, the metrics.

    A batch (an (N, 3, H, W) tensor, (1, 3, H, W) included, or a list of images) gives an
    ExplainedBatch whose `map` is (N, H, W).

    target: predicted, true (from the file's folder name), a class index or a class name.
    model_output: where the class scores are when the model returns more than a tensor (as --model-output).
    """
    models = model_specs([model], preprocess, class_names, weights=weights)
    weights = weights if isinstance(weights, str) or weights is None else None
    registry = models.registry
    try:
        if method not in registry.plugins:
            raise UsageError(f"unknown method {method!r}; installed: {', '.join(registry.plugins)}")
        plugin = registry.plugins[method].item
        try:
            takes_target = "target" in {p.name for p in plugin.params}
            given = {**params, **({"target": str(target)} if takes_target else {})}
            values = resolve_params(method, plugin.params, given)
        except ParamError as error:
            raise UsageError(str(error)) from None
        resolved = choose_device(device)
        try:
            options = ModelOptions(weights=weights, seed=seed, output=model_output)
            loaded = load_model(models.specs[0], options, registry, str(resolved))
        except ModelLoadError as error:
            raise UsageError(str(error)) from None
        ctx = RunContext(loaded, resolved, seed, 16, None, {n: r.item for n, r in registry.plugins.items()})
        check_applies(ctx, method, plugin, values)
        batch = as_images(image)
        if not isinstance(batch, list):
            return _explain_one(ctx, method, plugin, values, image)
        items = [_explain_one(ctx, method, plugin, values, one) for one in batch]
        return ExplainedBatch(torch.stack([item.map for item in items]), items)
    finally:
        models.restore()


def _explain_one(ctx: RunContext, method: str, plugin: Plugin, values: dict, image: Any) -> Explained:
    item = _item(ctx, image)
    torch.manual_seed(ctx.seed_for(item, method))
    try:
        result = as_result(plugin.run_image(ctx, item, values))
    except TargetError as error:
        raise UsageError(f"{method}.target: {error}") from None
    except (LayerNotFound, AttributionError) as error:
        raise UsageError(cannot_apply(ctx, method, error_line(error))) from None
    heatmap = next((a for a in result.artifacts if isinstance(a, Heatmap)), None)
    if heatmap is None:
        raise UsageError(f"{method} draws no map (its first result is a {type(result.artifacts[0]).__name__})")
    chosen = ctx.target(item, str(values.get("target", "predicted")))
    return Explained(torch.as_tensor(heatmap.values), chosen, ctx.class_names[chosen], item.predicted, result,
                     item.pixels, plugin_card(plugin))


def check_applies(ctx: RunContext, method: str, plugin: Plugin, values: dict) -> None:
    """What the CLI refuses before a run (nnvis_core.runner's applicable and check_layers), refused
    here with the same line: a method that does not apply, a layer that does not exist."""
    reason = plugin.applies_with(ctx, values) or default_layer_problem(plugin, ctx, values)
    if reason is None and isinstance(values.get("layer"), str) and values["layer"] not in LAYER_KEYWORDS:
        try:
            find_layer(ctx.module, values["layer"])
        except LayerNotFound as error:
            raise UsageError(f"{method}.layer: {error_line(error)}") from None
    if reason is not None:
        raise UsageError(cannot_apply(ctx, method, reason))


def cannot_apply(ctx: RunContext, method: str, reason: str) -> str:
    """The line for a method that cannot run on the model, naming the attribution methods that can."""
    can = [name for name, plugin in ctx.plugins.items() if isinstance(plugin, AttributionPlugin)
           and plugin.applies_to(ctx) is None
           and default_layer_problem(plugin, ctx, {p.name: p.default for p in plugin.params}) is None]
    return (f"{method} does not apply to model {ctx.model.name}: {reason}; "
            f"methods that apply: {', '.join(can) or 'none'}")


def _item(ctx: RunContext, image: Any) -> ImageItem:
    """One image as the model sees it, with the model's prediction."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        record = ImageRecord(0, path, path.name, path.parent.name or None)
    else:
        record = ImageRecord(0, IN_MEMORY_ROOT / "image_0000.png", "image_0000.png", None, image=to_pil(image))
    preprocess = ctx.model.preprocess
    try:
        pixels = preprocess.display(record.read())
    except ImageReadError as error:
        raise UsageError(str(error)) from None
    tensor = preprocess.normalize(pixels)
    with torch.no_grad():
        probabilities = torch.softmax(ctx.module(tensor[None].to(ctx.device)).float(), dim=1)[0].cpu()
    return ImageItem(record, pixels, tensor, match_label(record.folder, ctx.class_names), probabilities)
