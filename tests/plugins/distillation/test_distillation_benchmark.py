"""The distillation benchmark's smoke run: every path of benchmarks/distillation.py on tiny budgets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "distillation.py"


def test_the_benchmark_runs_every_path_on_tiny_budgets():
    spec = importlib.util.spec_from_file_location("distillation_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.run(module.parse(["--smoke"]))
    assert results["folder"] == {"train": 16, "test": 8}  # 3 bundled images per class: 2 to distil, 1 held out
    row = results["counts"][1]
    for training_set in ("distilled", "random_real", "full_split", "random_real_best_fixed_lr"):
        assert 0 <= row[training_set]["mean"] <= 1 and len(row[training_set]["each"]) == 1
    assert set(results["seconds_per_outer_step"]) == {"unrolled 1/class", "gradient_matching 1/class",
                                                      "distribution_matching 1/class"}
    assert all(seconds > 0 for seconds in results["seconds_per_outer_step"].values())
