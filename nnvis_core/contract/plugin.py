"""The plugin contract: what a visualization method declares and implements.

A method is a subclass of Plugin, registered from a hook implementation:

    from nnvis_core import Plugin, Scope, Param, Heatmap, hookimpl

    class Brightness(Plugin):
        name = "brightness"
        title = "Brightness"
        description = "Mean of the colour channels, as a heatmap."
        scope = Scope.IMAGE

        def run_image(self, ctx, item, params):
            return [Heatmap("brightness", item.tensor.mean(0).numpy())]

    @hookimpl
    def nnvis_register_plugins(register):
        register(Brightness())

See docs/plugins.md for the whole contract.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

from nnvis_core.contract.artifacts import Artifact
from nnvis_core.contract.params import Param
from nnvis_core.hook_marker import PROJECT, hookimpl  # noqa: F401 - part of this module's API

if TYPE_CHECKING:
    import torch

    from nnvis_core.contract.context import ImageItem, RunContext

PLUGIN_API_VERSION = 2
# Version 1 plugins run unchanged: version 2 added the method toolkit (nnvis_core.toolkit),
# Plugin.check_declaration and Plugin.check_params, all optional for a plugin.
SUPPORTED_API_VERSIONS = (1, 2)



class Scope(str, enum.Enum):
    """What a plugin needs to run."""

    IMAGE = "image"  # one image at a time
    DATASET = "dataset"  # all images of the folder together
    MODEL = "model"  # the model alone, no image


class Plugin:
    """Base class of visualization methods. Subclasses set the class attributes
    and override the run method that matches their scope."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    scope: ClassVar[Scope] = Scope.IMAGE
    params: ClassVar[Sequence[Param]] = ()
    api_version: ClassVar[int] = PLUGIN_API_VERSION
    default_enabled: ClassVar[bool] = False  # run when the user names no plugins

    def check_declaration(self) -> None:
        """Raise ValueError saying what the declaration lacks; called when the plugin registers.

        A base class overrides it to require what its run methods rely on (the
        attribution base requires `target` and `faithfulness_steps` parameters).
        """

    def check_params(self, params: dict[str, Any], plugins: Mapping[str, "Plugin"]) -> None:
        """Raise ValueError for parameter values that need the other installed plugins to judge.

        Called before the run with the resolved parameters and every registered
        plugin by name (the sanity check's `methods` names other plugins).
        """

    def applies_to(self, ctx: "RunContext") -> str | None:
        """Why this plugin cannot run on ctx's model (one line), or None when it can.

        Called once before the run. `--plugins all` leaves out a plugin that does
        not apply (the report lists it with the reason); a plugin named on its own
        is a usage error. The transformer methods use it to pass over convnets.
        """
        return None

    def applies_with(self, ctx: "RunContext", params: dict[str, Any]) -> str | None:
        """Like applies_to, for a plugin that cannot run without a parameter the user must give
        (style_transfer's `style` image): why not with these parameters, or None. Defaults to applies_to."""
        return self.applies_to(ctx)

    def default_layers(self, model: "torch.nn.Module") -> list[str]:
        """The layers this plugin reads on `model` when the user names none (`nnvis layers` shows them).

        The default reads a `layer` parameter: auto (the model family's default
        layer), last_conv, penultimate (the last Linear, whose input is read) or a
        name. A plugin whose `auto` means something else overrides this.
        """
        from nnvis_core.models.layers import PENULTIMATE, feature_source, resolve_layer_name

        for param in self.params:
            if param.name == "layer" and isinstance(param.default, str):
                if param.default == PENULTIMATE:
                    module, _ = feature_source(model, PENULTIMATE)
                    return [name for name, candidate in model.named_modules() if candidate is module][:1]
                return [resolve_layer_name(model, param.default)]
        return []

    def run_image(self, ctx: "RunContext", item: "ImageItem", params: dict[str, Any]) -> list[Artifact]:
        """Scope.IMAGE: artifacts for one image."""
        raise NotImplementedError

    def run_batch(
        self, ctx: "RunContext", items: Sequence["ImageItem"], params: dict[str, Any]
    ) -> Sequence[Any]:
        """Scope.IMAGE, optional: one result (a list of artifacts or a Result) per item, in order.

        A plugin overrides it when a batch costs less than its images one at a time (one
        optimization over the batch instead of one per image); the core then feeds it up to
        `--batch-size` images whose results are not cached yet, and still caches, checks and
        reports each image on its own. Each result must be what `run_image` gives for that image
        alone, whatever else shares the batch: draw random numbers per item (from
        `ctx.seed_for(item, self.name)` or a parameter), never from one stream for the batch, and
        keep the items' computations independent. When the batch raises or runs past its time
        limit (the per-call limit times the batch size), the core calls `run_image` for each of its
        images instead. Plugins that do not override it get `run_image` calls only.
        """
        raise NotImplementedError

    def run_dataset(
        self, ctx: "RunContext", items: Iterable["ImageItem"], params: dict[str, Any]
    ) -> list[Artifact]:
        """Scope.DATASET: artifacts for the whole folder. `items` streams every
        readable image (iterate it more than once if needed; it reloads)."""
        raise NotImplementedError

    def run_model(self, ctx: "RunContext", params: dict[str, Any]) -> list[Artifact]:
        """Scope.MODEL: artifacts that need only the model."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')}>"


def runs_batches(plugin: Plugin) -> bool:
    """Whether `plugin` declares a batched entry: an image-scope plugin whose class overrides run_batch."""
    return plugin.scope is Scope.IMAGE and getattr(type(plugin), "run_batch", None) not in (None, Plugin.run_batch)
