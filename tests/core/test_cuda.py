"""`--device cuda`: every built-in runs on a GPU, follows the contract there, and draws the
same pictures as on the CPU.

Skipped where torch sees no CUDA device (marker `cuda`; `pytest -m cuda` selects only these).
Set NNVIS_CUDA_LOG=FILE to get each method's CPU-vs-CUDA deviation as JSON lines.

The comparison is the point: a method that moves a tensor to the wrong device fails loudly,
but one that draws its noise from a device-dependent stream, or reads a buffer that stayed
on the CPU, would quietly draw another picture. Runs compute in full float32 on a GPU
(toolkit.exact_float32); the first H100 run, before that, with cuDNN's default TF32, had
saliency, gradient x input and SmoothGrad within 0.7% of the CPU's maps, the others within 0.07%.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nnvis_cli.main import cli
from nnvis_core.contract.artifacts import Heatmap, as_result
from nnvis_core.contract.context import ImageItem, RunContext
from nnvis_core.contract.params import resolve_params
from nnvis_core.contract.plugin import Scope
from nnvis_core.contract.stream import stream_items
from nnvis_core.images import discover_images
from nnvis_core.models import ModelOptions, load_model
from nnvis_core.run.registry import load_registry
from nnvis_core.testing import (
    GIVEN_MODEL,
    _demo_registry,
    check_plugin,
    write_demo_images,
)
from nnvis_core.toolkit import exact_float32
from nnvis_reports.reader import read_report

# Another accelerator (mps, xpu) can be checked the same way: NNVIS_TEST_DEVICE=mps pytest -m cuda.
DEVICE = os.environ.get("NNVIS_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]

REGISTRY = load_registry()
BUILTINS = sorted(name for name, reg in REGISTRY.plugins.items() if reg.origin.distribution == "nnvis")
IMAGE_PLUGINS = [name for name in BUILTINS if REGISTRY.plugins[name].item.scope is Scope.IMAGE]
TRANSFORMER_ONLY = ("attention_rollout", "transformer_attribution", "attention_maps")
CHEAP: dict[str, dict] = {"sanity_check": {"max_levels": 4}, "smoothgrad": {"samples": 8},
                          "integrated_gradients": {"steps": 16},
                          # Few steps: long optimizations drift apart between devices.
                          "texture_synthesis": {"steps": 5}, "feature_inversion": {"steps": 5},
                          "style_transfer": {"steps": 5, "style": str(Path(__file__).resolve().parents[2]
                                                                      / "examples/demo/images/ring/ring_00.png")}}
# Relative L2 distance between the CPU's and the GPU's map, TF32 convolutions included.
MAP_TOLERANCE = 2e-2


def tiny_vit() -> torch.nn.Module:
    """A two-block ViT on the demo's 64-px images (the transformer methods need attention)."""
    from nnvis_core.demo import CLASS_NAMES
    from nnvis_core.torchvision_compat import torchvision_models

    torch.manual_seed(0)
    model = torchvision_models().VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2,
                                                   hidden_dim=32, mlp_dim=64, num_classes=len(CLASS_NAMES))
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def log(record: dict) -> None:
    path = os.environ.get("NNVIS_CUDA_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def context_on(device: str, folder: Path, model: torch.nn.Module | None) -> tuple[RunContext, list[ImageItem]]:
    """The demo model (or `model`, with the demo's preprocessing) on `device`, and its items."""
    image_dir, mask_dir = folder / "input" / "images", folder / "input" / "masks"
    registry = _demo_registry(model=model)
    loaded = load_model("demo" if model is None else GIVEN_MODEL, ModelOptions(), registry, device)
    ctx = RunContext(loaded, torch.device(device), 0, 16, mask_dir,
                     {name: reg.item for name, reg in REGISTRY.plugins.items()})
    items = [item for batch in stream_items(discover_images(image_dir), ctx) for item in batch]
    return ctx, items


def relative_distance(cpu: np.ndarray, gpu: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(cpu)), 1e-12)
    return float(np.linalg.norm(np.asarray(gpu, np.float64) - np.asarray(cpu, np.float64)) / scale)


@pytest.mark.parametrize("name", BUILTINS)
def test_built_in_follows_the_contract_on_cuda(name, tmp_path):
    """A real report with the plugin alone, on the GPU: no failed call, the model left as found,
    the same output twice for one seed."""
    plugin = REGISTRY.plugin(name)
    model = tiny_vit() if name in TRANSFORMER_ONLY else None
    check = check_plugin(plugin, params=CHEAP.get(name), images=2, device=DEVICE, model=model)
    assert check.report["model"]["device"].startswith(DEVICE)
    assert check.results


@pytest.mark.parametrize("name", IMAGE_PLUGINS)
def test_image_plugin_draws_the_same_map_on_cuda_as_on_the_cpu(name, tmp_path):
    write_demo_images(tmp_path / "input", 2)
    model = tiny_vit() if name in TRANSFORMER_ONLY else None
    plugin = REGISTRY.plugins[name].item
    runs = {}
    for device in ("cpu", DEVICE):
        ctx, items = context_on(device, tmp_path, None if model is None else model.to("cpu"))
        params = resolve_params(name, plugin.params, CHEAP.get(name, {}))
        results = []
        for item in items:
            torch.manual_seed(ctx.seed_for(item, name))  # as the runner does
            with exact_float32():  # as the runner does
                results.append(as_result(plugin.run_image(ctx, item, params)))
        runs[device] = (items, results)
        assert all(p.device.type == torch.device(device).type for p in ctx.module.parameters())
    cpu_items, cpu_results = runs["cpu"]
    gpu_items, gpu_results = runs[DEVICE]
    assert [i.predicted for i in cpu_items] == [i.predicted for i in gpu_items]
    worst = 0.0
    for cpu_result, gpu_result in zip(cpu_results, gpu_results):
        assert [a.title for a in cpu_result.artifacts] == [a.title for a in gpu_result.artifacts]
        for a, b in zip(cpu_result.artifacts, gpu_result.artifacts):
            if isinstance(a, Heatmap):
                distance = relative_distance(a.values, b.values)
                worst = max(worst, distance)
                assert distance <= MAP_TOLERANCE, f"{name} '{a.title}': CPU and CUDA maps differ by {distance:.2e}"
        for key, value in cpu_result.metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                other = gpu_result.metrics[key]
                assert abs(other - value) <= 2e-2 * max(1.0, abs(value)), f"{name} metric {key}: {value} vs {other}"
    log({"plugin": name, "worst_map_distance": worst})


def test_report_on_cuda_runs_every_plugin_and_records_the_device(tmp_path):
    """`nnvis report --device auto` picks the GPU; every built-in that applies runs there."""
    image_dir, mask_dir = write_demo_images(tmp_path / "input", 3)
    device = [] if DEVICE == "cuda" else ["--device", DEVICE]
    result = CliRunner().invoke(cli, ["report", str(image_dir), "--masks", str(mask_dir), "--plugins", "all", *device,
                                      "--set", "sanity_check.max_levels=4", "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "out")
    assert report["model"]["device"].startswith(DEVICE)
    failed = {p["name"]: p["failures"] for p in report["plugins"] if p["failures"]}
    errors = [r["error"] for image in report["images"] for r in image["results"].values() if r["error"]]
    assert len(report["plugins"]) >= 15 and not failed and not errors, (failed, errors)
    assert not failed, failed
    assert (tmp_path / "out" / "index.html").is_file()
