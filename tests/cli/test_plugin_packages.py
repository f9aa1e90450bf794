"""Third-party packages installed with pip: the example package (a plugin and a model source)
and the skeletons `nnvis plugins new` writes pass their own tests and work in a report."""

from __future__ import annotations

import importlib
import json
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import run_nnvis

from nnvis_cli.main import cli
from nnvis_cli.scaffold import KINDS, ScaffoldError, package_names, write_plugin_package
from nnvis_core.testing import check_plugin
from nnvis_core.toolkit import AttributionPlugin
from nnvis_reports.reader import read_report


def run_package_tests(env: dict, folder: str) -> subprocess.CompletedProcess:
    """The package's own test suite, as its author runs it (`python -m pytest` in its folder)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=300)


def write_zoo(root: Path) -> Path:
    """A folder registry for the example's zoo: source, holding the demo model as 'shapes'."""
    from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model

    (root / "shapes").mkdir(parents=True)
    torch.save(load_demo_model().state_dict(), root / "shapes" / "weights.pt")
    (root / "shapes" / "labels.txt").write_text("\n".join(CLASS_NAMES))
    (root / "shapes" / "model.json").write_text(json.dumps(
        {"architecture": "demo", "resize": 64, "crop": 64, "mean": DEMO_SPEC["mean"], "std": DEMO_SPEC["std"]}))
    return root


def test_installed_packages_are_listed_with_their_distributions(plugin_packages):
    result = run_nnvis(plugin_packages, "plugins", "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line and not line.startswith(" ")}
    assert "nnvis-plugin-example 0.1.0" in rows["mean-activations"] and rows["mean-activations"].endswith("ok")
    assert "nnvis-plugin-brightness 0.1.0" in rows["brightness"] and rows["brightness"].endswith("ok")
    assert "nnvis-plugin-mymethod 0.1.0" in rows["mymethod"] and rows["mymethod"].endswith("ok")
    zoo = next(line for line in result.stdout.splitlines() if line.strip().startswith("zoo "))
    assert "nnvis-plugin-example 0.1.0" in zoo and "folder registry" in zoo


def test_the_example_package_passes_its_own_tests(plugin_packages):
    result = run_package_tests(plugin_packages, plugin_packages["NNVIS_TEST_EXAMPLE"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


def test_the_example_plugin_and_model_source_run_in_a_report(plugin_packages, few_demo_images, tmp_path):
    env = {**plugin_packages, "NNVIS_ZOO": str(write_zoo(tmp_path / "zoo"))}
    out = tmp_path / "out"
    result = run_nnvis(env, "report", str(few_demo_images), "-o", str(out), "--model", "zoo:shapes",
                       "--plugins", "saliency,mean-activations", "--set", "mean-activations.layers=convolutions")
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    assert report["model"]["source"] == "zoo" and report["model"]["name"] == "shapes"
    assert {p["name"]: p["origin"] for p in report["plugins"]}["mean-activations"] == "nnvis-plugin-example 0.1.0"
    for image in report["images"]:
        assert image["predictions"][0]["name"] == image["folder"]  # the demo weights, loaded through zoo:
        result = image["results"]["mean-activations"]
        assert result["status"] == "ok" and 0 < result["metrics"]["fraction_active"] < 1
        table, chart = result["artifacts"]
        assert len(table["rows"]) == 7 and chart["x_ticks"] == [row[0] for row in table["rows"]]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "Mean activation per layer" in html


def test_an_unknown_zoo_model_is_a_one_line_usage_error(plugin_packages, few_demo_images, tmp_path):
    env = {**plugin_packages, "NNVIS_ZOO": str(write_zoo(tmp_path / "zoo"))}
    result = run_nnvis(env, "report", str(few_demo_images), "-o", str(tmp_path / "out"), "--model", "zoo:nope")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("nnvis: error: zoo: no model 'nope'")
    assert "(available: shapes)" in result.stderr


def test_the_generated_skeleton_passes_its_own_tests(plugin_packages):
    result = run_package_tests(plugin_packages, plugin_packages["NNVIS_TEST_SKELETON"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_generated_skeleton_runs_in_a_report(plugin_packages, few_demo_images, tmp_path):
    out = tmp_path / "out"
    result = run_nnvis(plugin_packages, "report", str(few_demo_images), "-o", str(out),
                       "--plugins", "brightness", "--set", "brightness.gamma=2")
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    [plugin] = report["plugins"]
    assert plugin["origin"] == "nnvis-plugin-brightness 0.1.0" and plugin["params"] == {"gamma": 2.0}
    for image in report["images"]:
        [heatmap] = image["results"]["brightness"]["artifacts"]
        assert heatmap["caption"] == "gamma 2.0"
        assert image["results"]["brightness"]["metrics"]["confidence"] == pytest.approx(
            image["predictions"][0]["probability"], abs=1e-6)


def test_the_generated_attribution_package_passes_its_own_tests(plugin_packages):
    result = run_package_tests(plugin_packages, plugin_packages["NNVIS_TEST_ATTRIBUTION"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 1 skipped" in result.stdout  # the method's own check is left to the author


def test_the_generated_attribution_tests_pass_after_the_method_is_replaced(tmp_path):
    """An author replaces the method; the tests the package came with check the contract, not
    the starter method, so they still pass (here with a coarse, layer-sized map of its own)."""
    import os

    root = write_plugin_package("mymethod", tmp_path, kind="attribution")
    module = root / "nnvis_mymethod" / "__init__.py"
    starter = "    return (inputs - baseline).detach() * gradient(model, inputs, target)\n"
    source = module.read_text()
    assert starter in source
    module.write_text(source.replace(starter, "    return torch.nn.functional.avg_pool2d(inputs.detach().abs(), 8)\n"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                             "-k", "not entry_point"],  # the package is not pip-installed here
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 1 skipped, 1 deselected" in result.stdout


def test_the_generated_attribution_method_is_scored_and_sanity_checked(plugin_packages, few_demo_images, tmp_path):
    out = tmp_path / "out"
    result = run_nnvis(plugin_packages, "report", str(few_demo_images), "-o", str(out),
                       "--plugins", "mymethod,sanity_check", "--set", "sanity_check.methods=gradient,mymethod")
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    assert {p["name"]: p["origin"] for p in report["plugins"]}["mymethod"] == "nnvis-plugin-mymethod 0.1.0"
    for image in report["images"]:
        card = image["results"]["mymethod"]
        assert card["status"] == "ok" and card["artifacts"][0]["title"] == "mymethod"
        assert {"deletion_auc", "insertion_auc"} <= set(card["metrics"])
        assert all(0 <= card["metrics"][key] <= 1 for key in ("deletion_auc", "insertion_auc"))
    sanity = report["dataset"]["sanity_check"]
    assert sanity["status"] == "ok", sanity
    assert {"gradient_final_spearman", "mymethod_final_spearman"} <= set(sanity["metrics"])
    [chart] = [a for a in sanity["artifacts"] if a["kind"] == "chart"]
    curve = chart["series"]["mymethod"]  # its randomization curve: 1 for the trained model, then lower
    assert len(curve) == len(chart["x_ticks"]) > 2 and curve[0] == pytest.approx(1.0) and min(curve) < 0.9


def test_the_rise_example_passes_its_own_tests(plugin_packages):
    result = run_package_tests(plugin_packages, plugin_packages["NNVIS_TEST_RISE"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed" in result.stdout


def test_the_rise_example_runs_in_a_report_and_in_the_sanity_check(plugin_packages, few_demo_images, tmp_path):
    out = tmp_path / "out"
    result = run_nnvis(plugin_packages, "report", str(few_demo_images), "-o", str(out),
                       "--plugins", "rise,sanity_check", "--set", "rise.masks=50", "--set", "sanity_check.max_levels=3",
                       "--set", "sanity_check.methods=gradient,rise", "--set", "sanity_check.images=2")
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    assert {p["name"]: p["origin"] for p in report["plugins"]}["rise"] == "nnvis-plugin-rise 0.1.0"
    for image in report["images"]:
        assert {"deletion_auc", "insertion_auc"} <= set(image["results"]["rise"]["metrics"])
    assert "rise_final_spearman" in report["dataset"]["sanity_check"]["metrics"]


@pytest.fixture
def generated_module():
    """generated_module(root, module) -> the module of a package written to root, imported without pip;
    sys.path and sys.modules are restored afterwards."""
    added = []

    def load(root: Path, module: str):
        sys.path.insert(0, str(root))
        added.append((str(root), module))
        return importlib.import_module(module)

    yield load
    for path, module in added:
        sys.path.remove(path)
        sys.modules.pop(module, None)


@pytest.mark.parametrize("kind", ["image", "dataset", "model"])
def test_each_kind_of_skeleton_compiles_and_follows_the_plugin_contract(kind, tmp_path, generated_module):
    root = write_plugin_package(f"my{kind}", tmp_path, kind=kind)
    for source in root.rglob("*.py"):
        py_compile.compile(str(source), cfile=str(tmp_path / "compiled.pyc"), doraise=True)
    assert f'my{kind} = "nnvis_my{kind}"' in (root / "pyproject.toml").read_text()
    module = generated_module(root, f"nnvis_my{kind}")
    plugin = getattr(module, f"My{kind}")()
    assert plugin.scope.value == kind and not isinstance(plugin, AttributionPlugin)
    check = check_plugin(plugin, images=2)
    if kind != "image":
        table, chart = check.artifacts(None)
        assert len(table.rows) == len(chart.x) > 0
    assert f"--plugins my{kind}" in (root / "README.md").read_text()


def test_the_attribution_skeleton_builds_on_the_toolkit(tmp_path, generated_module):
    root = write_plugin_package("mymethod", tmp_path, kind="attribution")
    plugin = generated_module(root, "nnvis_mymethod").Mymethod()
    assert isinstance(plugin, AttributionPlugin)
    assert [param.name for param in plugin.params] == ["target", "baseline", "faithfulness_steps"]
    assert "sanity_check.methods=gradient,mymethod" in (root / "README.md").read_text()


def test_new_offers_every_kind_and_prints_its_next_steps(tmp_path):
    [kind_option] = [p for p in cli.commands["plugins"].commands["new"].params if p.name == "kind"]
    assert list(kind_option.type.choices) == list(KINDS) and kind_option.default == "image"
    result = CliRunner().invoke(cli, ["plugins", "new", "mymethod", "--kind", "attribution", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "nnvis-plugin-mymethod"
    assert "class Mymethod(AttributionPlugin):" in (root / "nnvis_mymethod" / "__init__.py").read_text()
    assert "nnvis plugins show mymethod" in result.output
    assert "nnvis report IMAGES --plugins mymethod,sanity_check --set sanity_check.methods=gradient,mymethod" in (
        result.output)
    with pytest.raises(ScaffoldError, match="unknown plugin kind 'nope'"):
        write_plugin_package("other", tmp_path, kind="nope")


def test_package_names_follow_from_the_plugin_name():
    assert package_names("edge-density_v2") == {
        "name": "edge-density_v2", "distribution": "nnvis-plugin-edge-density-v2", "module": "nnvis_edge_density_v2",
        "cls": "EdgeDensityV2", "title": "Edge density v2"}


def test_new_writes_the_skeleton_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "new", "edges", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "nnvis-plugin-edges"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "nnvis_edges/__init__.py", "pyproject.toml", "tests/test_nnvis_edges.py"]
    assert 'edges = "nnvis_edges"' in (root / "pyproject.toml").read_text()
    assert f"pip install -e '{root}[test]'" in result.output
    before = (root / "pyproject.toml").read_text()
    again = runner.invoke(cli, ["plugins", "new", "edges", "-o", str(tmp_path)])
    assert again.exit_code == 2 and "already exists and is not empty" in again.stderr
    assert (root / "pyproject.toml").read_text() == before


@pytest.mark.parametrize("name", ["Edges", "1st", "with space", ""])
def test_new_rejects_names_nnvis_would_reject(tmp_path, name):
    with pytest.raises(ScaffoldError, match="must match"):
        write_plugin_package(name, tmp_path)
    result = CliRunner().invoke(cli, ["plugins", "new", name, "-o", str(tmp_path)])
    assert result.exit_code == 2 and "must match" in result.stderr
    assert not any(tmp_path.iterdir())
