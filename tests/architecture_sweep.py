"""Every image-scope method on every classifier torchvision offers, one model of every timm family,
and hand-written models whose forward returns a dict, a tuple, a named tuple or an object with `.logits`.

For each architecture: random weights (seeded), the smallest of SIZES the model
accepts (else its own input size), one demo image, and a report run with every built-in image-scope
plugin, cheap settings. A plugin passes when it gives finite maps of the
input's size that are not constant, or refuses with a one-line reason of its
own (an nnvis exception class); anything else is a failure the test reports.

`python tests/architecture_sweep.py --write` runs the sweep and writes
docs/architectures.md (`--resume=FILE` keeps each row in FILE as it is done, and goes on from there;
with `--only=lrp,attnlrp` as well, the rows in FILE keep their other columns and only those methods run);
tests/core/models/test_architecture_sweep.py checks every row of that page against a fresh run, so the
page and the behaviour cannot drift.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"
SIZES = (64, 96, 128, 160, 224, 256)  # the smallest that runs is used; 64 keeps convnets' last maps at 2x2
PLUGINS = ("saliency", "gradient_x_input", "deconvnet", "guided_backprop", "smoothgrad", "integrated_gradients",
           "gradcam", "guided_gradcam", "gradcam_plusplus", "xgradcam", "hirescam", "gradcam_elementwise",
           "layercam", "scorecam", "ablationcam", "eigencam", "eigen_gradcam", "lrp", "occlusion", "activations",
           "semantic_dictionary", "attention_rollout", "transformer_attribution", "attnlrp", "attention_maps",
           "feature_inversion", "style_transfer", "texture_synthesis")
CHEAP = {  # settings that keep one architecture to seconds; what is checked does not depend on them
    "smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8}, "scorecam": {"channels": 8},
    "semantic_dictionary": {"top": 1, "steps": 2, "cache": False}, "activations": {"max_maps": 8},
    "feature_inversion": {"steps": 2}, "style_transfer": {"steps": 2}, "texture_synthesis": {"steps": 2},
}
# What `make test` sweeps (about 80 seconds on 2 cores): one or two of the torchvision convnet families
# (torchvision's ViT and Swin defaults are tested in test_layer_layouts.py), and the timm and hand-written models
# each rule of issue 33 was written for: a class-attention trunk (XCiT), no run of blocks (CrossViT),
# list outputs (HRNet), channels-last blocks after a stem (HieraDet), unrolled tokens (Hiera), an
# encoder without a head (Gemma 4), a conv inside a block's branch (EfficientFormerV2), gridless tokens
# (PVT-v2, LeViT, MViTv2), a linear patch embedding (NaFlexViT), and non-tensor outputs. The rest run
# with `pytest -m sweep tests/core/models/test_architecture_sweep.py` (about 50 minutes on 2 cores).
IN_CI = {"resnet18", "googlenet", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny",
         "timm:deit_tiny_distilled_patch16_224", "timm:convnextv2_atto", "timm:xcit_nano_12_p8_224",
         "timm:crossvit_tiny_240", "timm:hrnet_w18_small", "timm:sam2_hiera_tiny", "timm:hiera_tiny_224",
         "timm:gemma4_vit_167m_enc", "timm:efficientformerv2_s0", "timm:pvt_v2_b0", "timm:dla46x_c",
         "timm:levit_128s", "timm:mvitv2_tiny", "timm:naflexvit_base_patch16_parfac_gap", "own:dict", "own:tuple",
         "own:logits"}
# Too big to sweep in seconds on a 2-core CPU.
SLOW = {"timm:deepseek_vit_412m", "vit_l_16", "vit_l_32", "vit_h_14", "regnet_y_128gf", "regnet_y_32gf",
        "regnet_x_32gf", "regnet_y_16gf",
        "regnet_x_16gf", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l", "efficientnet_v2_m",
        "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "swin_v2_b", "swin_b", "maxvit_t", "convnext_large",
        "convnext_base", "wide_resnet101_2", "resnext101_64x4d", "resnext101_32x8d", "timm:beit_base_patch16_224"}
TIMM = ("deit_tiny_distilled_patch16_224", "vit_little_patch16_reg4_gap_256", "eva02_tiny_patch14_224",
        "beit_base_patch16_224", "convnextv2_atto", "swin_tiny_patch4_window7_224", "efficientformerv2_s0",
        "levit_128s", "mobilevitv2_050", "poolformer_s12", "coatnet_nano_rw_224", "pvt_v2_b0")
# One model of every other family (module) timm.list_modules() offers: the smallest by parameter count
# (`python tests/architecture_sweep.py --families` counts them again, on the meta device).
TIMM_FAMILIES = {
    "byoanet": "halonet_h1", "byobnet": "test_byobnet", "cait": "cait_xxs24_224", "coat": "coat_tiny",
    "convit": "convit_tiny", "convmixer": "convmixer_768_32", "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240", "csatv2": "csatv2", "cspnet": "cs3darknet_focus_s", "cspnext": "cspnext_tiny",
    "davit": "davit_tiny", "deepseek_vit": "deepseek_vit_412m", "densenet": "densenet121", "dla": "dla46x_c",
    "dpn": "dpn48b", "edgenext": "edgenext_xx_small", "efficientformer": "efficientformer_l1",
    "efficientnet": "test_efficientnet", "efficientvim": "efficientvim_m1", "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0", "fasternet": "fasternet_t0", "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf", "gcvit": "gcvit_xxtiny", "gemma4_vit": "gemma4_vit_167m_enc",
    "ghostnet": "ghostnet_050", "hardcorenas": "hardcorenas_b", "hgnet": "hgnetv2_b0", "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny", "hrnet": "hrnet_w18_small", "iformer": "iformer_t",
    "inception_next": "inception_next_atto", "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3", "inception_v4": "inception_v4", "lcnetv2": "lcnetv2_small",
    "lowformer": "lowformer_b0", "mambaout": "test_mambaout", "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "mobilenetv3_small_050", "mobilenetv5": "mobilenetv5_base", "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_parfac_gap", "nasnet": "nasnetalarge", "nest": "nest_tiny",
    "nextvit": "nextvit_small", "nfnet": "test_nfnet", "pit": "pit_ti_224", "pnasnet": "pnasnet5large",
    "qwen3_vit": "qwen3_vit_88m", "rdnet": "rdnet_tiny", "regnet": "regnetx_002", "repghost": "repghostnet_050",
    "repvit": "repvit_m1", "res2net": "res2next50", "resnest": "resnest14d", "resnet": "test_resnet",
    "resnetv2": "resnetv2_18", "rexnet": "rexnet_100", "selecsls": "selecsls42", "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s", "shvit": "shvit_s1", "sknet": "skresnet18", "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs", "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224", "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224", "tresnet": "tresnet_m", "twins": "twins_svt_small", "vgg": "vgg11",
    "visformer": "visformer_tiny", "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos", "vision_transformer_sam": "samvit_base_patch16_224",
    "vitamin": "vitamin_small_224", "volo": "volo_d1_224", "vovnet": "ese_vovnet19b_slim_dw",
    "xception": "legacy_xception", "xception_aligned": "xception41p", "xcit": "xcit_nano_12_p8_224",
}
# Hand-written classifiers whose forward returns something other than a tensor.
OWN = ("own:dict", "own:tuple", "own:namedtuple", "own:logits")

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
    return names + [f"timm:{name}" for name in (*TIMM, *TIMM_FAMILIES.values())] + list(OWN)


def timm_families() -> dict[str, list[str]]:
    """{family (timm's module): its model names} for every family timm offers."""
    torchvision_architectures()
    import timm

    return {family: timm.list_models(module=family) for family in timm.list_modules()}


def smallest_of_each_family() -> dict[str, str]:
    """{family: its model with the fewest parameters}, counted on the meta device (no memory, ~5 min)."""
    import timm

    smallest = {}
    for family, names in timm_families().items():
        counts = {}
        for name in names:
            try:
                with torch.device("meta"):
                    counts[name] = sum(p.numel() for p in timm.create_model(name, num_classes=1000).parameters())
            except Exception:  # noqa: BLE001 - a variant that cannot be built is not the smallest
                continue
        smallest[family] = min(counts, key=counts.get)
    return smallest


class OwnOutput(typing.NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


@dataclass
class ModelOutput:  # what a Hugging Face model returns, reduced to what matters here
    logits: torch.Tensor
    hidden_states: torch.Tensor


class ReturnsOther(nn.Module):
    """A small convnet whose forward returns its class scores inside `shape` (dict, tuple,
    namedtuple or logits: an object with .logits), beside its last feature map."""

    def __init__(self, shape: str) -> None:
        super().__init__()
        self.shape = shape
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(64, 1000)

    def forward(self, x: torch.Tensor):
        features = self.features(x)
        logits = self.head(features.mean((2, 3)))
        return {"dict": {"features": features, "logits": logits}, "tuple": (logits, features),
                "namedtuple": OwnOutput(logits, features), "logits": ModelOutput(logits, features)}[self.shape]


def build(name: str) -> nn.Module:
    """The architecture with seeded random weights; zero-initialised classifier heads (torchvision's ViT)
    get small random weights, or every gradient method would see a constant zero score."""
    torch.manual_seed(0)
    if name.startswith("own:"):
        model = ReturnsOther(name[4:])
    elif name.startswith("timm:"):
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
    from nnvis_core.models.logits import logits_of

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    noise = calibration_images(size)
    if norms:
        _normalize(model, norms, noise)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        spread = float(logits_of(model(noise)).std())
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


# Models that resize any input to their own size inside forward: swept at that size, since at a smaller
# one no token count fits the input's patch grid and every layer method would refuse for that alone.
AT_OWN_SIZE = {"timm:crossvit_tiny_240"}


def smallest_size(model: nn.Module, name: str = "") -> int:
    """The smallest of SIZES the model accepts, else the side of its own input size (timm's config)."""
    own = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 0, 0))[-1]
    for size in ((own,) if name in AT_OWN_SIZE else (*SIZES, own)):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return size
        except Exception:  # noqa: BLE001 - too small for this architecture: try the next size
            continue
    raise ValueError(f"{type(model).__name__} accepts none of the sizes {SIZES} nor its own, {own}")


def sweep_registry(name: str, model: nn.Module, size: int, chosen: tuple[str, ...] = PLUGINS):
    """The installed image-scope plugins of `chosen` and a model source that hands over `model` at `size` px."""
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
        if plugin not in chosen:
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


def sweep(name: str, chosen: tuple[str, ...] = PLUGINS) -> tuple[int, dict[str, Outcome], str, str | None]:
    """(input size, {plugin: outcome}, the layer layer=auto reads, why that layer is wrong or None) for
    one architecture, with the methods of `chosen`."""
    from nnvis_core.run.config import ReportConfig
    from nnvis_core.run.plan import UsageError
    from nnvis_core.run.sink import MemorySink
    from nnvis_core.runner import run
    from nnvis_core.testing import write_demo_images

    model = build(name)
    size = smallest_size(model, name)
    calibrate(model, size)
    registry = sweep_registry(name, model, size, chosen)
    params = {plugin: {"faithfulness_steps": 0} for plugin in chosen
              if any(p.name == "faithfulness_steps" for p in registry.plugins[plugin].item.params)}
    cheap = {**CHEAP, "occlusion": {"window": size // 4, "stride": size // 4}}
    for plugin in chosen:
        params.setdefault(plugin, {}).update(cheap.get(plugin, {}))
    with tempfile.TemporaryDirectory() as work:
        image_dir, _ = write_demo_images(Path(work) / "input", images=1)
        style_dir, _ = write_demo_images(Path(work) / "style", images=2, seed=7)
        if "style_transfer" in chosen:
            params["style_transfer"]["style"] = str(sorted(style_dir.rglob("*.png"))[-1])
        config = ReportConfig(image_dir, Path(work) / "out", model="sweep", plugins=["all"], params=params,
                              device="cpu", batch_size=4, quiet=True)
        sink = MemorySink()
        try:
            run(config, registry, sink)
        except UsageError as error:  # the model itself is refused (an encoder with no classifier head)
            return size, {plugin: Outcome("refused", str(error)) for plugin in chosen}, "refused", None
    found: dict[str, Outcome] = {}
    for skipped in sink.plan.skipped:  # left out for want of a default layer: a refusal, listed with its reason
        found[skipped.name] = Outcome("refused" if skipped.needs_layer else "not applicable", skipped.reason)
    for plugin in chosen:
        calls = sink.outcomes(plugin)
        if calls:
            found[plugin] = judge(next(iter(calls.values())), size)
    auto, wrong = auto_layer(model, size)
    return size, {plugin: found.get(plugin, Outcome("failed", "did not run")) for plugin in chosen}, auto, wrong


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
    """One line per method that refused, failed or gave zero; one line in all when every method refused
    for the same reason (a model nnvis refuses at load)."""
    listed = {plugin: outcome for plugin, outcome in outcomes.items()
              if outcome.status in ("zero", "refused", "failed")}
    if len(listed) == len(outcomes) and len({(o.status, o.reason) for o in listed.values()}) == 1:
        return [f"- `{name}` every method: {next(iter(listed.values())).reason}"]
    return [f"- `{name}` {plugin}: {outcome.reason}" for plugin, outcome in listed.items()]


HEADER = """# Architectures: every image method on every classifier

Generated by `python tests/architecture_sweep.py --write`; `tests/core/models/test_architecture_sweep.py`
runs the same sweep and fails when a row of this page and the code disagree (the rows `make test` runs
on every commit; `pytest -m sweep` runs them all).

The architectures: every classifier of `torchvision.models.list_models`; a dozen named timm models;
one model of every other family (module) `timm.list_modules()` offers, the one with the fewest
parameters (`--families` counts them again); and four hand-written convnets whose forward returns a
dict, a tuple, a named tuple or an object with `.logits` (`own:`), which nnvis reads through its
output adapter. Each with seeded random weights (a classifier head initialised to zero, as
torchvision's ViT's, gets small random weights: a zero head makes every gradient
zero; BatchNorm statistics are taken from eight other demo images, since with their initial values
some random nets shrink every activation to 1e-8 and give every class the same
probability; and the last Linear layer is scaled to logits of unit spread on those
images, since with logits in the thousands any occluder flips the top class), at the smallest of {sizes} px it
accepts (else its own input size; CrossViT, which resizes any input to its own 240 px inside forward,
at that size), on one generated demo image, with
every built-in image-scope method at cheap settings (the synthesis methods two optimizer steps:
what is checked is that they run and give finite pictures). **layer=auto**: the layer the layer methods read
by default at that size ([docs/timm.md](timm.md#how-layerauto-is-chosen)), or refused. **ok**: finite maps of the
input's size that are not constant; **zero**: a rectified map (Grad-CAM's ReLU) that is
zero everywhere: on this random model no position raises the class score, which is
what the method says for a class the image shows no evidence of; **refused**: the
method said why, in one line (listed below the table, and why that is right for the family below
that); **n/a**: the method does not apply to the model (`--plugins all` leaves it out; the reasons
are listed last).

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
    refused = [name for name in results if needs_explaining(results[name][1])]
    lines.append("\n## Why those refusals are right\n")
    lines += [f"- {plugin}, wherever it refused: {why}" for plugin, why in METHOD_REFUSALS.items()]
    lines += [f"- `{name}`: {WHY_REFUSED.get(name, 'NOT EXPLAINED')}" for name in refused]
    lines.append("\n## Where a method does not apply\n")
    lines += not_applicable(results)
    return "\n".join(lines) + "\n"


def not_applicable(results: dict[str, tuple[int, dict[str, Outcome], str, str | None]]) -> list[str]:
    """The n/a reasons, each once, with the methods and the architectures it was given for."""
    grouped: dict[str, tuple[set[str], list[str]]] = {}
    for name, (_, outcomes, *_) in results.items():
        for plugin, outcome in outcomes.items():
            if outcome.status == "not applicable":
                reason = outcome.reason.removeprefix(f"{plugin}: ").removeprefix(f"{plugin} ")  # said per method
                plugins, names = grouped.setdefault(reason, (set(), []))
                plugins.add(plugin)
                if name not in names:
                    names.append(name)
    return [f"- {', '.join(p for p in PLUGINS if p in plugins)}: {reason} ({len(names)}: "
            + ", ".join(f"`{n}`" for n in names) + ")" for reason, (plugins, names) in grouped.items()]


def needs_explaining(outcomes: dict[str, Outcome]) -> bool:
    """Whether a method refused for a reason of the architecture's own, not one METHOD_REFUSALS gives."""
    return any(o.status == "refused" and plugin not in METHOD_REFUSALS for plugin, o in outcomes.items())


# Methods whose refusals are their own rule, the same on every architecture they meet it on: said once.
METHOD_REFUSALS: dict[str, str] = {
    "lrp": "LRP propagates relevance by a rule per layer, and gives every call a forward makes between layers "
           "its rule (docs/lrp.md). A call it has no rule for (F.layer_norm, F.group_norm, a Sigmoid or "
           "Hardsigmoid gate, an unknown function) or a sum of two activations outside torchvision's ResNet "
           "blocks (MobileNet, MNASNet, RegNet residuals) is refused by name: the gradient in its place would "
           "copy relevance to both summands or pass it through a map it does not describe, a map under LRP's "
           "name that is not LRP. Transformers get `attnlrp`.",
    "attnlrp": "AttnLRP has rules for Linear layers, LayerNorm, GELU, softmax attention and the calls between "
               "layers a vision transformer makes (docs/lrp.md). A call outside them (GroupNorm, RMSNorm, "
               "einsum, a LayerNorm over a map's channels, a gating Sigmoid, a product of two activations other "
               "than a matrix product) is refused by name rather than passed the gradient, which would give a "
               "map that is not AttnLRP; so is a model that changes in place a tensor a rule keeps.",
    "hirescam": "HiResCAM sums gradient x activation over channels at each position. When the layer feeds a "
                "normalization of each position (LayerNorm: Swin's and ConvNeXt-style last stages), scaling a "
                "position's activation changes nothing downstream, so that sum is zero up to rounding everywhere: "
                "the map would be rounding noise. It refuses and names the layer to read instead (the norm after).",
}

# Why each architecture with a refusal truly cannot run that method (the page prints these, and the
# sweep test fails for a refusal without one).
WHY_REFUSED: dict[str, str] = {
    "maxvit_t": "its classifier holds a Tanh (Linear, Tanh, Linear). Deconvnet and guided backprop define "
                "their backward pass for rectifiers (and the activations listed in docs/attribution.md); "
                "there is none for Tanh, and passing its gradient through unchanged would be a different "
                "method under their name.",
    "timm:hiera_tiny_224": "its tokens are in Hiera's unrolled order (mask units first), not raster order: laid "
                           "on a grid they would draw a scrambled map, so every layer after its stem is refused "
                           "for the map readers and synthesis.",
    "timm:mvitv2_tiny": "its blocks and attention return (tokens, size) pairs and its attention pooling runs "
                        "on images x heads, so the picture-making plugins, which spread over a run of blocks, "
                        "find none to read (its final norm gives tokens on the grid of its stated stride 32, "
                        "which the map readers use).",
    "timm:tnt_s_legacy_patch16_224": "its blocks return (pixel tokens, patch tokens) pairs and its inner blocks "
                                     "run on images x patches; the modules that give patch tokens (its norms "
                                     "and projections) reach the class score through its class token alone, "
                                     "so Grad-CAM has no position to weigh.",
    "timm:gemma4_vit_167m_enc": "it is an image encoder with no classifier head: its forward returns (1, 4, 768) "
                                "pooled tokens whatever num_classes says, so nnvis refuses the model at load.",
}


def load_results(path: Path) -> dict[str, tuple[int, dict[str, Outcome], str, str | None]]:
    """The rows a `--resume=FILE` run wrote so far: a full sweep takes hours on 2 cores, and an
    interrupted one goes on from the last architecture it finished."""
    results = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            outcomes = {plugin: Outcome(*outcome) for plugin, outcome in entry["outcomes"].items()}
            if set(outcomes) == set(PLUGINS):  # a row from before a method was added is swept again
                results[entry["name"]] = (entry["size"], outcomes, entry["auto"], entry["wrong"])
    return results


def save_result(path: Path, name: str, result: tuple, seconds: float) -> None:
    size, outcomes, auto, wrong = result
    entry = {"name": name, "size": size, "auto": auto, "wrong": wrong, "seconds": round(seconds, 1),
             "outcomes": {plugin: [o.status, o.reason] for plugin, o in outcomes.items()}}
    with path.open("a") as file:
        file.write(json.dumps(entry) + "\n")


def main(argv: list[str]) -> int:
    if "--families" in argv:
        for family, name in smallest_of_each_family().items():
            print(f"{family}: {name}")
        return 0
    names = [n for n in argv if not n.startswith("--")] or architectures()
    resume = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("--resume=")), None)
    only = next((tuple(a.split("=", 1)[1].split(",")) for a in argv if a.startswith("--only=")), None)
    done = load_results(resume) if resume else {}
    results = {}
    start = time.perf_counter()
    for name in names:
        began = time.perf_counter()
        if only and name in done:  # a method changed: sweep it again, keep the row's other columns
            size, outcomes, auto, wrong = done.pop(name)
            results[name] = (size, {**outcomes, **sweep(name, only)[1]}, auto, wrong)
        else:
            results[name] = done.get(name) or sweep(name)
        if resume and name not in done:
            save_result(resume, name, results[name], time.perf_counter() - began)
        size, outcomes, auto, wrong = results[name]
        print(row(name, size, outcomes, auto) + (f"  WRONG LAYER: {wrong}" if wrong else ""), flush=True)
    print(f"{len(names)} architectures in {time.perf_counter() - start:.0f} s")
    if "--write" in argv:
        PAGE.write_text(page(results))
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
