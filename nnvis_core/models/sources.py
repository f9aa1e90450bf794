"""Model sources: the ways a `--model` value becomes a LoadedModel.

Sources are registered through the `nnvis_register_model_sources` hook, so a
plugin can add `--model timm:...` without changing nnvis. The built-ins are:
`demo`, `demo-vit`, `convnet[:OPTIONS]`, `torchvision:NAME` and `file:PATH` (a bare existing path means
`file:`).
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch

from nnvis_core.hook_marker import hookimpl
from nnvis_core.models.checkpoints import apply_state_dict, load_checkpoint, num_classes_of, unwrap_state_dict
from nnvis_core.models.convnet_source import ConvNetSource, is_convnet_checkpoint, load_checkpoint_model
from nnvis_core.models.layers import remember_input_size
from nnvis_core.models.loaded import LoadedModel, ModelLoadError, ModelOptions, Preprocess, read_labels
from nnvis_core.models.logits import OutputError, logits_of, select_output
from nnvis_core.models.source import ModelSource, check_model_source  # noqa: F401 - public here too


class HasModelSources(Protocol):
    """A registry, or anything with its registered model sources by name."""

    model_sources: Mapping[str, Any]  # name -> Registered(item=ModelSource, ...)

class DemoSource(ModelSource):
    name = "demo"
    description = "the embedded demo convnet trained on generated shapes (no download)"

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        from nnvis_core.demo import CLASS_NAMES

        try:
            module = self.module(options.weights)
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from None
        return LoadedModel(module, self.name, options.weights or "embedded", list(CLASS_NAMES), demo_preprocess(),
                           self.name)

    def module(self, weights: str | None) -> torch.nn.Module:
        from nnvis_core.demo import load_demo_model

        return load_demo_model(weights)


class DemoVitSource(DemoSource):
    name = "demo-vit"
    description = "the embedded demo ViT (torchvision's VisionTransformer) trained on generated shapes (no download)"

    def module(self, weights: str | None) -> torch.nn.Module:
        from nnvis_core.demo.vit import load_demo_vit

        try:
            return load_demo_vit(weights)
        except RuntimeError as error:  # a state_dict of another architecture
            raise ModelLoadError(f"--model demo-vit --weights {weights}: {str(error).splitlines()[0]}") from None


def demo_preprocess() -> Preprocess:
    from nnvis_core.demo import DEMO_SPEC

    size = DEMO_SPEC["input_size"]
    return Preprocess(size, size, tuple(DEMO_SPEC["mean"]), tuple(DEMO_SPEC["std"]))


class TorchvisionSource(ModelSource):
    name = "torchvision"
    description = "torchvision classifiers; --weights DEFAULT|NAME|none|PATH (pretrained weights may download)"

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        from nnvis_core.models.torchvision_source import load_torchvision

        if not target:
            raise ModelLoadError("--model torchvision:NAME needs a model name, e.g. torchvision:resnet18")
        return load_torchvision(target, options)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


class FileSource(ModelSource):
    name = "file"
    description = "a TorchScript file, or a state_dict with --arch (full pickles need --trust-checkpoint)"

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"{path}: model file not found")
        if (options.arch or "").startswith("timm:"):
            # timm reads .safetensors too and remaps original layouts: the same as --model timm:NAME --weights PATH
            from nnvis_core.models.timm_source import load_timm

            return load_timm(options.arch.split(":", 1)[1], replace(options, weights=str(path), arch=None))
        if _is_torchscript(path):
            module = torch.jit.load(str(path), map_location="cpu")
            return LoadedModel(module, path.name, str(path), [], Preprocess(256, 224), "torchscript")
        obj = load_checkpoint(path, options.trust_checkpoint)
        if is_convnet_checkpoint(obj):  # written by nnvis demo train --data: it says what it is
            return load_checkpoint_model(path, obj)
        if isinstance(obj, torch.nn.Module):
            return LoadedModel(obj, path.name, str(path), [], Preprocess(256, 224), "pickled module")
        return self._from_state_dict(path, unwrap_state_dict(path, obj), options)

    def _from_state_dict(self, path: Path, state: dict, options: ModelOptions) -> LoadedModel:
        from nnvis_core.models import torchvision_source as tvs

        arch = options.arch
        if not arch:
            raise ModelLoadError(f"{path}: a state_dict needs --arch demo, --arch torchvision:NAME or --arch timm:NAME")
        if arch == "demo":
            from nnvis_core.demo import CLASS_NAMES, DemoNet

            module, preprocess, names = DemoNet(), demo_preprocess(), list(CLASS_NAMES)
        elif arch.startswith("torchvision:"):
            name = arch.split(":", 1)[1]
            count = num_classes_of(state)
            module = tvs.build_architecture(name, count)
            default = tvs.weights_enum(name).DEFAULT
            preprocess = tvs.preprocess_from(default)
            categories = list(default.meta.get("categories") or [])
            names = categories if count == len(categories) else []
        else:
            raise ModelLoadError(f"--arch {arch!r}: use demo, torchvision:NAME or timm:NAME")
        apply_state_dict(module, state, str(path), arch)
        return LoadedModel(module, path.name, str(path), names, preprocess, f"state_dict ({arch})")


@hookimpl
def nnvis_register_model_sources(register) -> None:
    register(DemoSource())
    register(DemoVitSource())
    register(TorchvisionSource())
    register(FileSource())
    register(ConvNetSource())


def _probe(module: torch.nn.Module, preprocess: Preprocess) -> Any:
    """What one forward pass of a blank image of the model's input size returns, or None when the model
    rejects it (the runner reports input-size problems later, in one line)."""
    size = preprocess.side
    try:
        with torch.no_grad():
            return module(torch.zeros(1, 3, size, size))
    except Exception:  # noqa: BLE001
        return None


def load_model(spec: str, options: ModelOptions, registry: HasModelSources, device: str = "cpu",
               preprocess: Mapping[str, Any] | None = None) -> LoadedModel:
    """Resolve `--model` against the registered sources and load it on `device`; `preprocess`
    replaces fields of the source's preprocessing (--resize, --crop, --mean, --std; None keeps one)."""
    sources = {name: reg.item for name, reg in registry.model_sources.items()}
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in sources:
        source, target = sources[prefix], rest
    elif spec in sources:
        source, target = sources[spec], ""
    elif Path(spec).expanduser().exists() and "file" in sources:
        source, target = sources["file"], spec
    else:
        known = ", ".join(sorted(f"{n}:" if n not in ("demo", "demo-vit", "convnet") else n for n in sources))
        raise ModelLoadError(f"--model {spec!r}: not a file, and no model source matches (sources: {known})")
    loaded = source.load(target, options).with_preprocess(**(preprocess or {}))
    if options.labels is not None:
        loaded.class_names = read_labels(options.labels)
    loaded.module.eval()
    remember_input_size(loaded.module, (loaded.preprocess.side,) * 2)
    output = _probe(loaded.module, loaded.preprocess)
    if output is not None:
        try:
            note = select_output(loaded.module, output, options.output)
        except OutputError as error:
            raise ModelLoadError(f"model {loaded.name}: {error}") from None
        if note:
            loaded.notes.append(note)
            output = logits_of(output, options.output)
    count = int(output.shape[-1]) if isinstance(output, torch.Tensor) and output.ndim == 2 else None
    if count is not None and loaded.class_names and len(loaded.class_names) != count:
        raise ModelLoadError(
            f"model {loaded.name} has {count} outputs but {len(loaded.class_names)} class names were given"
        )
    if not loaded.class_names and count is not None:
        loaded.class_names = [f"class {i}" for i in range(count)]
    loaded.module.to(device)
    return loaded
