"""What the concept plugins cost: seconds for a folder of N images, per plugin, in a real run.

    python benchmarks/concepts.py                                   # demo net, 1,000 images
    python benchmarks/concepts.py --model torchvision:resnet50 --images 200 --plugins tcav,concept_dictionary

Images: N generated demo images (one class folder per shape); concepts: three folders of 20 demo images
each (shapes of three classes). Each plugin runs alone in its own run (nnvis_core.runner, no HTML), with
its default parameters except those given by --set-style pairs in --params; the time is the plugin's
call as the report records it, and the run's wall time beside it (model loading and the pass that
classifies every image included). resnet50 has random weights (no download): speed does not depend on
them, though which classes it predicts, and so how many classes CRAFT explains, does. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from nnvis_core.demo.shapes import CLASS_NAMES, generate_dataset
from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.run.sink import MemorySink
from nnvis_core.runner import run
from nnvis_core.testing import write_demo_images

PLUGINS = ("tcav", "craft", "concept_dictionary")


def write_concepts(root: Path, per_concept: int = 20) -> Path:
    """Three concept folders of demo shapes (circle, star, ring)."""
    images, _, labels = generate_dataset(8 * per_concept, seed=31)
    for name in ("circle", "star", "ring"):
        (root / name).mkdir(parents=True)
        for i, picture in enumerate(images[labels == CLASS_NAMES.index(name)][:per_concept]):
            Image.fromarray(picture).save(root / name / f"{i}.png")
    return root


def parse_params(pairs: list[str]) -> dict[str, dict[str, str]]:
    params: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        plugin, name = key.split(".", 1)
        params.setdefault(plugin, {})[name] = value
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--weights", default=None, help="for torchvision models: none (random weights) by default")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--plugins", default=",".join(PLUGINS))
    parser.add_argument("--params", nargs="*", default=[], metavar="PLUGIN.PARAM=VALUE")
    args = parser.parse_args()
    weights = args.weights or (None if args.model == "demo" else "none")
    registry = load_registry()
    with tempfile.TemporaryDirectory() as work:
        folder, _ = write_demo_images(Path(work) / "input", images=args.images)
        concepts = write_concepts(Path(work) / "concepts")
        print(f"{args.model}, {args.images} images")
        print(f"{'plugin':22s} {'plugin s':>9s} {'run wall s':>11s}  result")
        for plugin in args.plugins.split(","):
            config = ReportConfig(folder, Path(work) / plugin, model=args.model, weights=weights, plugins=[plugin],
                                  concepts=concepts, params=parse_params(args.params), quiet=True)
            sink = MemorySink()
            start = time.perf_counter()
            run(config, registry, sink)
            wall = time.perf_counter() - start
            outcome = sink.outcomes(plugin)[None]
            note = "ok" if outcome.error is None else outcome.error.splitlines()[0][:60]
            metrics = outcome.result.metrics if outcome.result else {}
            figures = {k: v for k, v in metrics.items() if not k.startswith(("tcav:", "craft:"))}
            classes = {k.split(":")[1] for k in metrics if k.startswith(("tcav:", "craft:"))}
            if classes:
                figures["classes explained"] = len(classes)
            print(f"{plugin:22s} {outcome.seconds:9.1f} {wall:11.1f}  {note} {figures}", flush=True)


if __name__ == "__main__":
    main()
