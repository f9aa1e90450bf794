"""Every image-scope method on every classifier torchvision offers (and a dozen timm families).

For each architecture: random weights (seeded), the smallest of SIZES the model
accepts, one demo image, and a report run with every built-in image-scope
plugin, cheap settings. A plugin passes when it gives finite maps of the
input's size that are not constant, or refuses with a one-line reason of its
own (an nnvis exception class); anything else is a failure the test reports.

`python tests/architecture_sweep.py --write` runs the sweep and writes
docs/architectures.md; tests/core/models/test_architecture_sweep.py checks every row of
that page against a fresh run, so the page and the behaviour cannot drift.
"""

from __future__ import annotations

import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"
SIZES = (64, 96, 128, 160, 224, 256)  # the smallest that runs is used; 64 keeps convnets' last maps at 2x2
PLUGINS = ("saliency", "gradient_x_input", "deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients",
           "gradcam", "guided_gradcam", "occlusion", "activations", "semantic_dictionary", "attention_rollout",
           "transformer_attribution", "attention_maps")
CHEAP = {  # settings that keep one architecture to seconds; what is checked does not depend on them
    "smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8},
    "semantic_dictionary": {"top": 1, "steps": 2, "cache": False}, "activations": {"max_maps": 8},
}
# What `make test` sweeps: one or two of every family and every model the issue names, with
# vit_b_32 for vit_b_16 (the same code, a quarter of the tokens: 22 s less). The
# rest run with `pytest -m sweep tests/core/models/test_architecture_sweep.py` (about an hour on 2 cores).
IN_CI = {"resnet18", "googlenet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
         "swin_t", "vit_b_32", "timm:deit_tiny_distilled_patch16_224", "timm:vit_little_patch16_reg4_gap_256",
         "timm:convnextv2_atto"}
# Too big to sweep in seconds on a 2-core CPU.
SLOW = {"vit_l_16", "vit_l_32", "vit_h_14", "regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf", "regnet_y_16gf",
        "regnet_x_16gf", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m",
        "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "swin_v2_b", "swin_b", "maxvit_t", "convnext_large",
        "convnext_base", "wide_resnet101_2", "resnext101_64x4d", "resnext101_32x8d", "timm:beit_base_patch16_224"}
TIMM = ("deit_tiny_distilled_patch16_224", "vit_little_patch16_reg4_gap_256", "eva02_tiny_patch14_224",
        "beit_base_patch16_224", "convnextv2_atto", "swin_tiny_patch4_window7_224", "efficientformerv2_s0",
        "levit_128s", "mobilevitv2_050", "poolformer_s12", "coatnet_nano_rw_224", "pvt_v2_b0")

OK = "ok"


@dataclass(frozen=True)
class Outcome:
    status: str  # ok, zero, refused, not applicable, or failed
    reason: str = ""


def torchvision_architectures() -> list[str]:
    from nnvis_core.torchvision_compat import torchvision_models

    models = torchvision_models()
    return sorted(models.list_models(module=models))


def architectures() -> list[str]:
    """torchvision's names as they are, timm's as timm:NAME (when timm is installed)."""
    names = torchvision_architectures()  # imports torchvision, with the workaround timm needs too
    try:
        import timm  # noqa: F401
    except ImportError:
        return names
    return names + [f"timm:{name}" for name in TIMM]


def build(name: str) -> nn.Module:
    """The architecture with seeded random weights; zero-initialised classifier heads (torchvision's ViT)
    get small random weights, or every gradient method would see a constant zero score."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        torchvision_architectures()  # timm imports torchvision: the workaround first
        import timm

        model = timm.create_model(name[5:], pretrained=False, num_classes=1000)  # MIM checkpoints have none
    else:
        from nnvis_core.torchvision_compat import torchvision_models

        model = torchvision_models().get_model(name, weights=None)
    for module in model.modules():
        if isinstance(module, nn.Linear) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.01)
    return model.eval()


def calibrate(model: nn.Module, size: int) -> None:
    """Make a random net behave like a trained one where the maps depend on it.

    BatchNorm statistics of demo images replace the initial ones (mean 0,
    variance 1): with those, some random nets (MobileNetV3, EfficientNet) shrink
    their signal to ~1e-8 and every class gets the same probability. Then the
    last Linear layer is scaled so that the logits of those images have unit
    spread: with logits in the thousands (EfficientNet-B2) the top class has
    probability 1 and any occluder flips it, so every map would be constant for
    reasons that have nothing to do with the method.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    noise = calibration_images(size)
    if norms:
        _normalize(model, norms, noise)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        spread = float(model(noise).std())
        if heads and spread > 1.0:
            heads[-1].weight /= spread
            if heads[-1].bias is not None:
                heads[-1].bias /= spread


def calibration_images(size: int) -> torch.Tensor:
    """Eight generated demo images (not the swept one) at `size` px, normalized as ImageNet models expect:
    white noise is nothing like a picture, and a net calibrated on it still saturates on pictures."""
    from nnvis_core.demo.shapes import generate_dataset
    from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD

    pixels, _, _ = generate_dataset(8, seed=1)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _normalize(model: nn.Module, norms: list[nn.Module], noise: torch.Tensor) -> None:
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration passes
        norm.train()  # only the norms: GoogLeNet's auxiliary heads run in training mode
    with torch.no_grad():
        model(noise)
    model.eval()


def smallest_size(model: nn.Module) -> int:
    for size in SIZES:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return size
        except Exception:  # noqa: BLE001 - too small for this architecture: try the next size
            continue
    raise ValueError(f"{type(model).__name__} accepts none of the sizes {SIZES}")


def sweep_registry(name: str, model: nn.Module, size: int):
    """The installed image-scope plugins and a model source that hands over `model` at `size` px."""
    from nnvis_core import hookimpl
    from nnvis_core.models.loaded import LoadedModel, Preprocess
    from nnvis_core.models.source import ModelSource
    from nnvis_core.run.registry import load_registry

    class Given(ModelSource):
        name = "sweep"
        description = "the architecture under test"

        def load(self, target, options):
            classes = [f"class {i}" for i in range(1000)]
            return LoadedModel(model, name, "random", classes, Preprocess(size, size), "sweep")

    holder = types.SimpleNamespace(nnvis_register_model_sources=hookimpl(lambda register: register(Given())))
    registry = load_registry(extra=[("sweep", holder)])
    for plugin in list(registry.plugins):
        if plugin not in PLUGINS:
            del registry.plugins[plugin]
    return registry


def judge(outcome, size: int) -> Outcome:
    """ok / refused (an nnvis refusal) / failed (a crash or a map that is not a map of the input)."""
    from nnvis_core.contract.artifacts import Gallery, Heatmap

    zero = None
    if outcome.error is not None:
        last = (outcome.traceback or "").strip().splitlines()[-1:] or [""]
        refusal = last[0].startswith(("nnvis_core.", "nnvis_plugins.")) and "\n" not in outcome.error
        message = outcome.error.split(": ", 1)[-1]
        return Outcome("refused" if refusal else "failed", message)
    for artifact in outcome.result.artifacts:
        if isinstance(artifact, Heatmap):
            values = np.asarray(artifact.values, dtype=np.float64)
            if values.shape != (size, size):
                return Outcome("failed", f"{artifact.title}: map of shape {values.shape}, input {size}x{size}")
            if not np.isfinite(values).all():
                return Outcome("failed", f"{artifact.title}: map with NaN or infinite values")
            if not values.any():
                zero = Outcome("zero", f"{artifact.title}: zero everywhere")  # judged after the other maps
                continue
            if values.max() <= values.min():
                return Outcome("failed", f"{artifact.title}: constant map")
        if isinstance(artifact, Gallery):
            if any(image is not None and not np.isfinite(np.asarray(image, dtype=np.float64)).all()
                   for image in artifact.images):
                return Outcome("failed", f"{artifact.title}: picture with NaN or infinite values")
    return zero or Outcome(OK)


def sweep(name: str) -> tuple[int, dict[str, Outcome], str, str | None]:
    """(input size, {plugin: outcome}, the layer layer=auto reads, why that layer is wrong or None) for
    one architecture."""
    from nnvis_core.run.config import ReportConfig
    from nnvis_core.run.sink import MemorySink
    from nnvis_core.runner import run
    from nnvis_core.testing import write_demo_images

    model = build(name)
    size = smallest_size(model)
    calibrate(model, size)
    registry = sweep_registry(name, model, size)
    params = {plugin: {"faithfulness_steps": 0} for plugin in PLUGINS
              if any(p.name == "faithfulness_steps" for p in registry.plugins[plugin].item.params)}
    cheap = {**CHEAP, "occlusion": {"window": size // 4, "stride": size // 4}}
    for plugin in PLUGINS:
        params.setdefault(plugin, {}).update(cheap.get(plugin, {}))
    with tempfile.TemporaryDirectory() as work:
        image_dir, _ = write_demo_images(Path(work) / "input", images=1)
        config = ReportConfig(image_dir, Path(work) / "out", model="sweep", plugins=["all"], params=params,
                              device="cpu", batch_size=4, quiet=True)
        sink = MemorySink()
        run(config, registry, sink)
    found: dict[str, Outcome] = {}
    for skipped in sink.plan.skipped:  # left out for want of a default layer: a refusal, listed with its reason
        found[skipped.name] = Outcome("refused" if skipped.needs_layer else "not applicable", skipped.reason)
    for plugin in PLUGINS:
        calls = sink.outcomes(plugin)
        if calls:
            found[plugin] = judge(next(iter(calls.values())), size)
    auto, wrong = auto_layer(model, size)
    return size, {plugin: found.get(plugin, Outcome("failed", "did not run")) for plugin in PLUGINS}, auto, wrong


SHORT = {OK: "ok", "zero": "zero", "refused": "refused", "not applicable": "n/a", "failed": "FAILED"}


def row(name: str, size: int, outcomes: dict[str, Outcome], auto: str) -> str:
    return "| " + " | ".join([f"`{name}`", str(size), auto, *(SHORT[outcomes[p].status] for p in PLUGINS)]) + " |"


def auto_layer(model: nn.Module, size: int) -> tuple[str, str | None]:
    """(what layer=auto reads on the model at `size` px, in the page's words; why that choice is wrong, or
    None): never the first conv, never a module after the global pooling, a single token or zeros."""
    from nnvis_core.models import LayerNotFound
    from nnvis_core.models.layers import conv_layers, default_layer, remember_input_size, spatial_problem

    remember_input_size(model, (size, size))
    try:
        layer = default_layer(model)
    except (LayerNotFound, ValueError):
        return "refused", None
    if conv_layers(model)[:1] == [layer]:
        return f"`{layer}`", "layer=auto reads the first conv"
    return f"`{layer}`", spatial_problem(model, layer)


def reasons(name: str, outcomes: dict[str, Outcome]) -> list[str]:
    return [f"- `{name}` {plugin}: {outcome.reason}" for plugin, outcome in outcomes.items()
            if outcome.status in ("zero", "refused", "failed")]


HEADER = """# Architectures: every image method on every classifier

Generated by `python tests/architecture_sweep.py --write`; `tests/core/models/test_architecture_sweep.py`
runs the same sweep and fails when a row of this page and the code disagree.

Each classification architecture of `torchvision.models.list_models` and a dozen timm
families, with seeded random weights (a classifier head initialised to zero, as
torchvision's ViT's, gets small random weights: a zero head makes every gradient
zero; BatchNorm statistics are taken from eight other demo images, since with their initial values
some random nets shrink every activation to 1e-8 and give every class the same
probability; and the last Linear layer is scaled to logits of unit spread on those
images, since with logits in the thousands any occluder flips the top class), at the smallest of {sizes} px it
accepts, on one generated demo image, with
every built-in image-scope method at cheap settings. **layer=auto**: the layer the layer methods read
by default at that size ([docs/timm.md](timm.md#how-layerauto-is-chosen)), or refused. **ok**: finite maps of the
input's size that are not constant; **zero**: a rectified map (Grad-CAM's ReLU) that is
zero everywhere: on this random model no position raises the class score, which is
what the method says for a class the image shows no evidence of; **refused**: the
method said why, in one line (listed below the table); **n/a**: the method does not apply to the model (the
transformer methods on models without attention; `--plugins all` leaves them out).

"""


def page(results: dict[str, tuple[int, dict[str, Outcome], str, str | None]]) -> str:
    lines = [HEADER.format(sizes=", ".join(map(str, SIZES)))]
    lines.append("| architecture | px | layer=auto | " + " | ".join(PLUGINS) + " |")
    lines.append("|---|---|---|" + "---|" * len(PLUGINS))
    lines += [row(name, *results[name][:2], results[name][2]) for name in results]
    counts = {status: sum(o.status == status for _, outcomes, *_ in results.values() for o in outcomes.values())
              for status in SHORT}
    lines.append("")
    lines.append(f"Totals: {len(results)} architectures x {len(PLUGINS)} methods: "
                 + ", ".join(f"{counts[s]} {SHORT[s]}" for s in SHORT) + ".")
    lines.append("\n## Why a method refused, or gave zero\n")
    lines += [line for name in results for line in reasons(name, results[name][1])]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    names = [n for n in argv if not n.startswith("--")] or architectures()
    results = {}
    for name in names:
        results[name] = sweep(name)
        size, outcomes, auto, wrong = results[name]
        print(row(name, size, outcomes, auto) + (f"  WRONG LAYER: {wrong}" if wrong else ""), flush=True)
    if "--write" in argv:
        PAGE.write_text(page(results))
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
