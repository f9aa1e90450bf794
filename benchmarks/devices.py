"""Seconds per image of every image-scope method, on the CPU and on a GPU, side by side.

    python benchmarks/devices.py                          # demo, resnet50, vit_b_16; cpu vs cuda
    python benchmarks/devices.py --models resnet50 --images 4
    python benchmarks/devices.py --quick                  # demo model only, 1 image

Each method runs with its default parameters through the plugin itself (plugin.run_image,
as a report calls it), on the same random-pixel images for both devices; the first image
is a warm-up (cuDNN autotuning, kernel loading) and is not timed. The GPU's times include
its synchronization. Torchvision models have random weights (speed does not depend on them).
Methods that do not apply to a model (transformer methods on a convnet) are skipped.
Not part of the test suite; needs a CUDA device for the second column.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import load_model

from nnvis_core.contract.artifacts import as_result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import resolve_params
from nnvis_core.contract.plugin import Scope
from nnvis_core.images import ImageRecord
from nnvis_core.models.loaded import LoadedModel, Preprocess
from nnvis_core.run.registry import load_registry

SLOW_DEFAULTS = {"sanity_check": {"max_levels": 4}}  # the full cascade is minutes per image on a CPU


def loaded(name: str, device: str) -> LoadedModel:
    module = load_model(name).to(device)
    if name == "demo":
        from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC

        preprocess, classes = Preprocess(None, None, DEMO_SPEC["mean"], DEMO_SPEC["std"]), list(CLASS_NAMES)
    else:
        preprocess, classes = Preprocess(None, None), [f"class {i}" for i in range(1000)]
    return LoadedModel(module, name, "random", classes, preprocess, "benchmark")


def items(ctx: RunContext, count: int, size: int) -> list[ImageItem]:
    rng = np.random.default_rng(0)
    made = []
    for index in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        tensor = ctx.model.preprocess.normalize(pixels)
        with torch.no_grad():
            probabilities = torch.softmax(ctx.module(tensor[None].to(ctx.device)), 1)[0].cpu()
        record = ImageRecord(index, Path(f"/bench/{index}.png"), f"{index}.png", None)
        made.append(ImageItem(record, pixels, tensor, None, probabilities))
    return made


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_plugins(registry, model_name: str, size: int, device: str, count: int,
                 names: list[str]) -> dict[str, float | str]:
    ctx = RunContext(loaded(model_name, device), torch.device(device), 0, 16, None,
                     {name: reg.item for name, reg in registry.plugins.items()})
    images = items(ctx, count + 1, size)
    seconds: dict[str, float | str] = {}
    for name in names:
        plugin = registry.plugins[name].item
        if plugin.applies_to(ctx) is not None:
            seconds[name] = "n/a"
            continue
        params = resolve_params(name, plugin.params, SLOW_DEFAULTS.get(name, {}))
        try:
            as_result(plugin.run_image(ctx, images[0], params))  # warm-up
            synchronize(device)
            start = time.perf_counter()
            for item in images[1:]:
                as_result(plugin.run_image(ctx, item, params))
            synchronize(device)
            seconds[name] = (time.perf_counter() - start) / count
            print(f"  {model_name} {device} {name}: {seconds[name]:.4f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
            seconds[name] = f"error: {(str(error).splitlines() or [repr(error)])[0][:80]}"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo:64,resnet50:224,vit_b_16:224", help="NAME:SIZE,...")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--images", type=int, default=2, help="timed images per method (after one warm-up)")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="demo model only, 1 image")
    args = parser.parse_args()
    if args.quick:
        args.models, args.images = "demo:64", 1
    devices = [d for d in args.devices.split(",") if d]
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        devices = [d for d in devices if not d.startswith("cuda")]
        print("no CUDA device: CPU only")
    registry = load_registry()
    image_scope = sorted(n for n, r in registry.plugins.items() if r.item.scope is Scope.IMAGE)
    names = image_scope if args.methods == "all" else args.methods.split(",")
    table = {}
    for spec in args.models.split(","):
        model_name, _, size = spec.partition(":")
        table[model_name] = {d: time_plugins(registry, model_name, int(size or 224), d, args.images, names)
                             for d in devices}
    if args.json:
        args.json.write_text(json.dumps(table, indent=1), encoding="utf-8")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"seconds per image; CPU threads {torch.get_num_threads()}, GPU {gpu}")
    for model_name, by_device in table.items():
        print(f"\n{model_name}")
        print(f"{'method':26s}" + "".join(f"{d:>12s}" for d in devices) + ("   cpu/gpu" if len(devices) == 2 else ""))
        for name in names:
            cells = [by_device[d][name] for d in devices]
            text = "".join(f"{c:12.4f}" if isinstance(c, float) else f"{str(c)[:11]:>12s}" for c in cells)
            ratio = (f"{cells[0] / cells[1]:9.1f}x" if len(cells) == 2 and all(isinstance(c, float) for c in cells)
                     else "")
            print(f"{name:26s}{text}{ratio}")
        errors = {d: {n: c for n, c in by_device[d].items() if str(c).startswith("error")} for d in devices}
        for d, failed in errors.items():
            for n, c in failed.items():
                print(f"  {d} {n}: {c}")


if __name__ == "__main__":
    main()
