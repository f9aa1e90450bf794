"""`--model timm:NAME` with `--weights DEFAULT|TAG|none|PATH` (needs `pip install "nnvis[timm]"`).

timm is optional, so this source registers through its own entry point and
imports timm only when a `timm:` model is loaded. Pretrained weights come from
the Hugging Face hub through huggingface_hub's cache (`$HF_HOME/hub`): a cached
file is used without touching the network; a download is tried only when the
user asked for pretrained weights and none are cached, and failing that gives
one line naming the cache and the `--weights PATH` alternative. Everything else
(random init, local files, preprocessing, ImageNet class names) stays offline.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from nnvis_core.hook_marker import hookimpl
from nnvis_core.models.checkpoints import (
    apply_state_dict,
    first_line,
    load_checkpoint,
    unwrap_state_dict,
)
from nnvis_core.models.loaded import (
    LoadedModel,
    ModelLoadError,
    ModelOptions,
    Preprocess,
)
from nnvis_core.models.source import ModelSource

# What a timm repository on the hub holds, preferred first (timm's own order).
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def import_timm() -> ModuleType:
    """timm, imported after nnvis's torchvision import (timm imports torchvision itself, and a CUDA
    torchvision beside CPU torch only imports through nnvis_core.torchvision_compat's workaround)."""
    from nnvis_core import torchvision_compat as tv

    tv.import_torchvision()
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ModelLoadError('--model timm:NAME needs timm, which is not installed: '
                             'pip install "nnvis[timm]"') from None


def check_name(timm: ModuleType, name: str) -> None:
    """Raise a one-line error with close names unless `name` (optionally `name.tag`) is a timm model."""
    architecture = name.split(".", 1)[0]
    if timm.is_model(architecture):
        return
    names = timm.list_models()
    near = timm.list_models(f"*{architecture}*")[:3]
    for length in range(len(architecture) - 1, 2, -1):  # 'vit_tinyy' -> the models named 'vit_tiny*'
        if near:
            break
        near = difflib.get_close_matches(architecture, timm.list_models(f"{architecture[:length]}*"), n=3, cutoff=0)
    near = list(dict.fromkeys(near + difflib.get_close_matches(architecture, names, n=4, cutoff=0.6)))[:5]
    hint = f"; did you mean {', '.join(near)}?" if near else "; see timm.list_models()"
    raise ModelLoadError(f"timm has no model {architecture!r}{hint}")


def build(timm: ModuleType, name: str, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised timm model; `name.tag` picks the pretrained config (and class count)."""
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as error:  # an unknown pretrained tag
        raise ModelLoadError(f"timm:{name}: {first_line(error)}") from None


def preprocess_from(model: nn.Module) -> tuple[Preprocess, list[str]]:
    """nnvis preprocessing from timm's evaluation config, and notes on what it cannot copy.

    timm resizes the shorter side to input_size / crop_pct and centre-crops
    input_size (crop_mode 'center'); nnvis does the same with bilinear
    resampling where timm usually uses bicubic.
    """
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    _, height, width = config["input_size"]
    crop = min(height, width)
    crop_pct = config.get("crop_pct") or 1.0
    notes = []
    if height != width:
        notes.append(f"timm's input size is {height}x{width}; nnvis crops a {crop}x{crop} square")
    if config.get("crop_mode", "center") != "center":
        notes.append(f"timm's crop_mode {config['crop_mode']!r} is approximated by a centre crop")
    preprocess = Preprocess(math.floor(crop / crop_pct), crop, tuple(config["mean"]), tuple(config["std"]))
    return preprocess, notes


def class_names(model: nn.Module) -> list[str]:
    """ImageNet class names (first lemma, as torchvision's categories) when the class count is an
    ImageNet subset's, read from the synset files timm ships; else [] (generic names)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    count = getattr(model, "num_classes", None)
    subset = infer_imagenet_subset(model) if count else None
    if subset is None:
        return []
    info = ImageNetInfo(subset)
    if info.num_classes() != count:
        return []
    return [info.index_to_description(i).split(",")[0].strip() for i in range(count)]


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloaded files ($HF_HUB_CACHE, default ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hub_file(repo: str, filename: str, revision: str | None) -> Path | None:
    """The cached copy of a hub file, found without any network request, or None."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache(), local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is a FileNotFoundError
        return None


def download_from_hub(repo: str, filename: str, revision: str | None) -> Path:
    """Download one hub file into the cache (the only network access of this source).

    huggingface_hub logs a warning per retry when the hub cannot be reached; the
    one-line error that follows says it all, so its log is quietened meanwhile.
    """
    from huggingface_hub import hf_hub_download

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=hub_cache()))
    finally:
        hub_log.setLevel(level)


def hub_weights_file(hub_id: str, filename: str | None) -> Path:
    """The weights file of a timm hub id (`timm/name.tag[@revision]`): cached, else downloaded."""
    from huggingface_hub.errors import EntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    candidates = (filename,) if filename else HUB_FILES
    for candidate in candidates:
        found = cached_hub_file(repo, candidate, revision or None)
        if found is not None:
            return found
    from huggingface_hub import constants

    if constants.is_offline_mode():
        problem = "HF_HUB_OFFLINE is set"
    else:
        problem = f"the hub has none of {', '.join(candidates)}"
        for candidate in candidates:
            try:
                return download_from_hub(repo, candidate, revision or None)
            except EntryNotFoundError as error:
                if not isinstance(error, FileNotFoundError):  # the hub has no such file: try the next
                    continue
                problem = "the hub cannot be reached"  # LocalEntryNotFoundError: no connection
                break
            except Exception as error:  # noqa: BLE001 - connection and HTTP errors
                problem = first_line(error).split(". ")[0][:160]
                break
    raise ModelLoadError(
        f"cannot download weights {hub_id} from the Hugging Face hub ({problem}); no cached copy in "
        f"{hub_cache()}. Run once with network access, or pass --weights PATH to a local weights file"
    )


def read_weights(path: Path, trusted: bool) -> dict:
    """A state_dict from a .safetensors file or a PyTorch file (weights_only unless trusted)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    return unwrap_state_dict(path, load_checkpoint(path, trusted))


def fit_weights(model: nn.Module, state: dict, what: str, arch: str) -> None:
    """Load `state` strictly; weights in an original (non-timm) layout go through the model module's
    own checkpoint_filter_fn first, as timm does for its pretrained files."""
    try:
        apply_state_dict(model, state, what, arch)
    except ModelLoadError:
        remap = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
        if remap is None:
            raise
        try:
            remapped = remap(state, model)
        except Exception:  # noqa: BLE001 - the filter does not understand the file: report the plain mismatch
            remapped = None
        if not isinstance(remapped, dict):
            raise
        apply_state_dict(model, remapped, what, arch)


def classifier_outputs(model: nn.Module, state: dict) -> int | None:
    """The class count of a state_dict for this model: its classifier's rows (pretrained_cfg names it)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    heads = config.get("classifier") or ()
    for head in (heads,) if isinstance(heads, str) else heads:
        weight = state.get(f"{head}.weight")
        if isinstance(weight, torch.Tensor) and weight.ndim >= 2:
            return int(weight.shape[0])
    return None


def load_timm(name: str, options: ModelOptions) -> LoadedModel:
    """The model `name` with the weights `--weights` names (default: timm's pretrained ones)."""
    timm = import_timm()
    check_name(timm, name)
    spec = options.weights or "DEFAULT"
    label = f"timm:{name}"
    if spec.lower() == "none":
        torch.manual_seed(options.seed)
        return _loaded(build(timm, name), label, "none (random init)")
    path = Path(spec).expanduser()
    if path.is_file():
        state = read_weights(path, options.trust_checkpoint)
        probe = build(timm, name)
        count = classifier_outputs(probe, state)
        model = probe if count in (None, getattr(probe, "num_classes", None)) else build(timm, name, count)
        fit_weights(model, state, str(path), label)
        return _loaded(model, label, str(path))
    if os.sep in spec or spec.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise ModelLoadError(f"{spec}: weights file not found")
    tagged = name if spec.upper() == "DEFAULT" else f"{name.split('.', 1)[0]}.{spec}"
    if spec.upper() != "DEFAULT" and tagged not in timm.list_pretrained(tagged):
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{name.split('.', 1)[0]}.*")]
        allowed = ", ".join(["DEFAULT", "none", *tags, "PATH"])
        raise ModelLoadError(f"--weights {spec!r} is not a pretrained tag of {name}: use one of {allowed}")
    model = build(timm, tagged)
    config = model.pretrained_cfg
    hub_id, url = config.get("hf_hub_id"), config.get("url")
    if hub_id:
        source, state = hub_id, read_weights(hub_weights_file(hub_id, config.get("hf_hub_filename")), False)
    elif url:
        from nnvis_core.models.torchvision_source import (
            fetch_state_dict,  # torch.hub's cache, as torchvision
        )

        source, state = url, fetch_state_dict(url)
    else:
        raise ModelLoadError(f"timm lists no pretrained weights for {tagged}: use --weights none or --weights PATH")
    fit_weights(model, state, source, f"timm:{tagged}")
    return _loaded(model, f"timm:{tagged}", source)


def _loaded(model: nn.Module, label: str, weights: str) -> LoadedModel:
    preprocess, notes = preprocess_from(model)
    return LoadedModel(model, label, weights, class_names(model), preprocess, "timm", notes)


class TimmSource(ModelSource):
    name = "timm"
    description = ('timm models; --weights DEFAULT|TAG|none|PATH '
                   '(pretrained weights may download; pip install "nnvis[timm]")')

    def load(self, target: str, options: ModelOptions) -> LoadedModel:
        if not target:
            raise ModelLoadError("--model timm:NAME needs a model name, e.g. timm:deit_tiny_patch16_224")
        return load_timm(target, options)


@hookimpl
def nnvis_register_model_sources(register) -> None:
    register(TimmSource())
