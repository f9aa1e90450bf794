"""Dataset distillation's claim on real digits, small enough for CI: scikit-learn's 8x8 digits, the ConvNet,
distribution matching at one image per class against one random real image per class."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "distillation.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("distillation_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distilled_digits_beat_random_real_ones_at_one_per_class(benchmark):
    pytest.importorskip("sklearn")
    args = benchmark.parse(["--data", "sklearn", "--method", "distribution_matching", "--counts", "1",
                            "--steps-scale", "0.1", "--eval-steps", "100"])
    results = benchmark.run_digits(args)
    assert results["folder"] == {"train": 1438, "test": 359}  # a fifth of each class held out
    row = results["counts"][1]
    distilled, real = row["methods"]["distribution_matching"]["distilled"], row["random_real"]
    assert len(distilled["each"]) == 5 and len(real["each"]) == 10  # 5 initializations, 2 draws of real images
    margin = row["methods"]["distribution_matching"]["margin"]
    assert distilled["mean"] > real["mean"] and margin["mean"] > 3 * margin["std"]
    assert row["full_split"]["mean"] > distilled["mean"]  # the whole split is the ceiling
