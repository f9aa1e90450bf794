"""The optimization loop: change an image until the network gives the objective a high score.

Two levels:

- ``optimize(model, objective, image, ...)`` takes the pieces (a parameterization,
  a transform, an optimizer setting) and runs the loop;
- ``render(model, objective, batch, settings, ...)`` builds the pieces from a
  :class:`Settings` (what the plugins and the cache use).

Each step: build the image, transform it at random, normalize it as the model
expects, run the model up to the last layer the objective reads, and take an
Adam step on minus the summed score. The model is left as it was found: its
parameters are frozen for the run (no weight gradients are computed or kept),
it is in eval mode, and every hook is removed, even on failure.

>>> from nnvis_core.toolkit.featvis import objectives, render
>>> result = render.render(model, objectives.channel("features.11", [0, 1, 2, 3]), 4,
...                        render.Settings(size=64, steps=128), mean=MEAN, std=STD)
>>> result.images.shape        # (4, 64, 64, 3), float in [0, 1]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nnvis_core.toolkit import Layout, LayoutError, find_layer, frozen, output_layout
from nnvis_core.toolkit.featvis import objectives as obj
from nnvis_core.toolkit.featvis.parameterizations import ImageParam, fourier_image, pixel_image
from nnvis_core.toolkit.featvis.transforms import Transform, identity, standard_transforms

PARAMETERIZATIONS = ("fourier", "pixel")


class _Enough(Exception):
    """Raised by a hook to end the forward pass once every needed layer has run."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides a rendering besides the model and the objective.

    The defaults are the regularized recipe (Fourier parameterization with
    decorrelated colour, standard robustness transforms). ``Settings.plain()``
    is the unregularized pixel-space optimization, for comparison.
    """

    size: int = 64
    steps: int = 256
    lr: float = 0.05
    parameterization: str = "fourier"
    decorrelate: bool = True
    decay_power: float = 1.0
    transforms: bool = True
    total_variation: float = 0.0  # weight of the penalty subtracted from the objective
    l1: float = 0.0
    l2: float = 0.0
    blur_every: int = 0  # blur the image every k steps (0: never)
    blur_sigma: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                             f"got {self.parameterization!r}")
        if self.size < 2 or self.steps < 0 or self.lr <= 0:
            raise ValueError(f"need size >= 2, steps >= 0 and lr > 0; got {self.size}, {self.steps}, {self.lr}")

    @classmethod
    def plain(cls, **overrides) -> "Settings":
        """Pixel parameterization, RGB, no transforms, no penalties: the unregularized baseline."""
        return cls(**{"parameterization": "pixel", "decorrelate": False, "transforms": False, **overrides})

    def as_dict(self) -> dict:
        return asdict(self)

    def image(self, batch: int, device: torch.device, generator: torch.Generator) -> ImageParam:
        if self.parameterization == "fourier":
            return fourier_image(batch, self.size, device=device, decay_power=self.decay_power,
                                 decorrelate=self.decorrelate, generator=generator)
        return pixel_image(batch, self.size, device=device, decorrelate=self.decorrelate, generator=generator)

    def transform(self) -> Transform:
        return standard_transforms(self.size) if self.transforms else identity

    def regularized(self, objective: obj.Objective) -> obj.Objective:
        """The objective minus the weighted image penalties these settings ask for."""
        for weight, penalty in ((self.total_variation, obj.total_variation), (self.l1, obj.l1), (self.l2, obj.l2)):
            if weight:
                objective = objective - weight * penalty()
        return objective


@dataclass
class Rendering:
    """What an optimization produced.

    images: (N, H, W, 3) float32 in [0, 1]; scores: (N,) the objective on the
    final, untransformed images; history: the mean score after each step (on
    the transformed images the optimizer saw); logits: (N, classes) of the
    final images, when the model's output is a class vector.
    """

    images: np.ndarray
    scores: np.ndarray
    history: list[float] = field(default_factory=list)
    logits: np.ndarray | None = None


class Recorder:
    """Forward hooks that keep the outputs of named layers during one forward pass.

    With `stop` set, the pass ends as soon as every named layer has run: an
    objective on a middle layer does not pay for the rest of the network.
    A layer that runs twice in one pass is refused (its output would be ambiguous).
    Token and channels-last outputs are kept as (N, C, h, w) maps (`layouts` says how),
    so that a channel objective means the same on a ViT's tokens as on a conv layer.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str]):
        self.model = model
        self.modules = {name: find_layer(model, name) for name in sorted(layers)}
        self.input_hw: tuple[int, int] = (0, 0)
        self.layouts: dict[str, Layout] = {}  # how each spatial output was read
        self.outputs: dict[str, torch.Tensor] = {}
        self.stop = False
        self._handles: list = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output):
            if not isinstance(output, torch.Tensor):
                raise obj.ObjectiveError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            if name in self.outputs:
                raise obj.ObjectiveError(f"layer {name!r} runs more than once per forward pass; "
                                         "pick one that runs once")
            self.outputs[name] = self._as_map(name, output)
            if self.stop and len(self.outputs) == len(self.modules):
                raise _Enough
            return output.clone()  # the saved tensor stays intact if a later op works in place

        return hook

    def _as_map(self, name: str, output: torch.Tensor) -> torch.Tensor:
        if output.dim() not in (3, 4):
            return output
        try:
            self.layouts[name] = output_layout(self.model, output, self.input_hw)
        except LayoutError:
            return output  # the objective names the shape it cannot read
        return self.layouts[name].to_map(output)

    def __enter__(self) -> "Recorder":
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def run(self, model: nn.Module, inputs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """(layer outputs, model output or None when the pass was cut short)."""
        self.outputs = {}
        self.input_hw = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        try:
            logits = model(inputs)
        except _Enough:
            logits = None
        missing = set(self.modules) - set(self.outputs)
        if missing:
            raise obj.ObjectiveError(f"layer(s) {', '.join(sorted(missing))} did not run in the model's forward pass")
        return dict(self.outputs), logits


def normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device):
    """The model's input normalization as a function of a [0, 1] batch."""
    m = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return lambda images: (images - m) / s


def _activations(recorder: Recorder, model: nn.Module, images: torch.Tensor, inputs: torch.Tensor) -> dict:
    outputs, logits = recorder.run(model, inputs)
    outputs[obj.IMAGE] = images
    if logits is not None:
        outputs[obj.LOGITS] = logits
    return outputs


def optimize(model: nn.Module, objective: obj.Objective, image: ImageParam, *, transform: Transform = identity,
             steps: int = 256, lr: float = 0.05, mean: Sequence[float] = (0.0, 0.0, 0.0),
             std: Sequence[float] = (1.0, 1.0, 1.0), blur_every: int = 0, blur_sigma: float = 0.5,
             generator: torch.Generator | None = None, stop_early: bool = True,
             measure: obj.Objective | None = None) -> Rendering:
    """Maximise `objective` over `image`'s parameters with Adam; see the module docstring.

    The model must already be on the device the image lives on. `stop_early`
    ends each forward pass at the last layer the objective reads (unless it
    reads the logits). `measure` is what the final scores report (default: the
    objective itself; `render` passes the objective without its penalties).
    """
    measure = measure or objective
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = image.params[0].device
    normalize = normalizer(mean, std, device)
    layers = (objective.layers | measure.layers) - {obj.IMAGE, obj.LOGITS}
    optimizer = torch.optim.Adam(image.params, lr=lr)
    history: list[torch.Tensor] = []
    with frozen(model), Recorder(model, layers) as recorder:
        with torch.no_grad():  # a full pass first: checks every layer runs, once
            picture = image.image()
            try:
                objective(_activations(recorder, model, picture, normalize(picture)))
            except obj.ObjectiveError:
                raise
            except Exception as error:  # noqa: BLE001 - a ViT built for one input size, say
                side = "x".join(map(str, picture.shape[-2:]))
                raise obj.ObjectiveError(f"the model rejects {side} images ({type(error).__name__}: "
                                         f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
                                         "set size to its input size (size=0)") from None
        recorder.stop = stop_early and obj.LOGITS not in objective.layers
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            picture = image.image()
            scores = objective(_activations(recorder, model, picture, normalize(transform(picture, generator))))
            (-scores.sum()).backward()
            optimizer.step()
            history.append(scores.detach().mean())
            if blur_every and (step + 1) % blur_every == 0:
                image.blur(blur_sigma)
        recorder.stop = False
        with torch.no_grad():
            picture = image.image()
            final = _activations(recorder, model, picture, normalize(picture))
            scores = measure(final)
    logits = final.get(obj.LOGITS)
    return Rendering(
        images=picture.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
        scores=scores.cpu().numpy().astype(np.float64),
        history=torch.stack(history).cpu().tolist() if history else [],
        logits=logits.cpu().numpy() if logits is not None and logits.dim() == 2 else None,
    )


def render(model: nn.Module, objective: obj.Objective, batch: int, settings: Settings = Settings(), *,
           mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
           device: torch.device | str = "cpu", stop_early: bool = True) -> Rendering:
    """Optimize `batch` images for `objective` (plus the settings' penalties) from a seeded start."""
    generator = torch.Generator().manual_seed(settings.seed)
    image = settings.image(batch, torch.device(device), generator)
    return optimize(model, settings.regularized(objective), image, transform=settings.transform(),
                    steps=settings.steps, lr=settings.lr, mean=mean, std=std, blur_every=settings.blur_every,
                    blur_sigma=settings.blur_sigma, generator=generator, stop_early=stop_early, measure=objective)


def layer_outputs(model: nn.Module, inputs: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named layers (and "logits") for a normalized batch, without gradients."""
    with torch.no_grad(), frozen(model), Recorder(model, layers) as recorder:
        outputs, logits = recorder.run(model, inputs)
    if logits is not None:
        outputs[obj.LOGITS] = logits
    return outputs


def evaluate(model: nn.Module, objective: obj.Objective, images: np.ndarray, *,
             mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
             device: torch.device | str = "cpu") -> np.ndarray:
    """(N,) scores of `objective` on (N, H, W, 3) images (uint8, or float in [0, 1]), untransformed."""
    array = np.asarray(images)
    pictures = torch.as_tensor(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
    pictures = pictures.permute(0, 3, 1, 2).to(device)
    outputs = layer_outputs(model, normalizer(mean, std, torch.device(device))(pictures),
                            objective.layers - {obj.IMAGE, obj.LOGITS})
    outputs[obj.IMAGE] = pictures
    with torch.no_grad():
        return objective(outputs).cpu().numpy().astype(np.float64)
