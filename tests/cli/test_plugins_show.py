"""`nnvis plugins show NAME`: an installed plugin's origin, description and parameters."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import nnvis_core
from nnvis_cli.describe import WIDTH, allowed_values, format_value
from nnvis_cli.main import cli
from nnvis_core.contract.params import Param
from nnvis_core.toolkit import MEMORY_MB


@pytest.fixture
def runner():
    return CliRunner()


def show(runner, name: str) -> str:
    result = runner.invoke(cli, ["plugins", "show", name])
    assert result.exit_code == 0, result.output
    return result.output


def facts(output: str) -> dict[str, str]:
    """The `  label  value` lines under the title, up to the first blank line."""
    head = output.split("\n\n")[0].splitlines()[1:]
    return {line[:16].strip(): line[16:].strip() for line in head}


def parameter_rows(output: str) -> dict[str, list[str]]:
    """name -> [name, type, default, allowed] for each parameter row (help lines are indented further)."""
    table = output.split("parameters (")[1].splitlines()[2:]
    return {line.split()[0]: line.split(None, 3) for line in table if line.startswith("  ") and line[2] != " "}


def test_occlusion_shows_its_origin_and_every_parameter(runner):
    output = show(runner, "occlusion")
    assert output.startswith("occlusion: Occlusion sensitivity\n")
    assert facts(output) == {
        "scope": "image",
        "attribution": "yes (nnvis_core.toolkit.AttributionPlugin)",
        "distribution": f"nnvis {nnvis_core.__version__}",
        "module": "nnvis_plugins.occlusion.plugin",
        "plugin API": "2",
    }
    assert "Zeiler & Fergus (2014)" in output and "Nakandala et al." in output
    assert all(len(line) <= WIDTH for line in output.split("parameters (")[0].splitlines())
    assert "parameters (--set occlusion.NAME=VALUE):" in output
    rows = parameter_rows(output)
    assert list(rows) == ["target", "window", "stride", "occluder", "layer", "channel", "engine", "memory_mb",
                          "faithfulness_steps"]
    assert rows["window"] == ["window", "int", "0", ">= 0"]
    assert rows["stride"] == ["stride", "int", "0", ">= 0"]
    assert rows["occluder"] == ["occluder", "str", "grey", "grey|mean|blur|zero"]
    assert rows["memory_mb"] == ["memory_mb", "int", str(MEMORY_MB), ">= 1"]
    assert rows["faithfulness_steps"] == ["faithfulness_steps", "int", "32", "0 to 1024"]
    assert rows["target"] == ["target", "str", "predicted"]  # any string: no allowed column
    assert "      side of the square in pixels; 0 = 1/7 of the image's shorter side\n" in output
    assert "      what fills the square: grey (mid-grey)" in output


def test_columns_line_up(runner):
    lines = show(runner, "occlusion").split("parameters (")[1].splitlines()
    header = lines[1]
    starts = [header.index(word) for word in ("type", "default", "allowed")]
    for line in lines[2:]:
        if line.startswith("  ") and line[2] != " ":
            assert all(line[start - 1] == " " and line[start] != " " for start in starts[:2]), line


def test_saliency_is_an_attribution_plugin_and_runs_by_default(runner):
    output = show(runner, "saliency")
    assert output.startswith("saliency: Gradient saliency\n")
    assert facts(output)["scope"] == "image (runs when no plugins are named)"
    assert facts(output)["attribution"] == "yes (nnvis_core.toolkit.AttributionPlugin)"
    assert facts(output)["module"] == "nnvis_plugins.attribution.saliency"
    assert parameter_rows(output) == {"target": ["target", "str", "predicted"],
                                      "faithfulness_steps": ["faithfulness_steps", "int", "32", "0 to 1024"]}
    assert "class to explain: predicted, true, an index or a class name" in output


def test_a_long_default_does_not_widen_every_row(runner):
    output = show(runner, "hidden_subnetwork")
    rows = parameter_rows(output)
    assert rows["init"][2].startswith("kaiming_normal,signed_constant")
    assert rows["epochs"] == ["epochs", "int", "10", "1 to 10000"]
    epochs_line = next(line for line in output.splitlines() if line.startswith("  epochs "))
    assert len(epochs_line) < 60


def test_values_are_shown_as_set_on_the_command_line():
    assert allowed_values(Param("flag", bool, True)) == "true|false" and format_value(True) == "true"
    assert allowed_values(Param("gamma", float, 1.0, minimum=0.1, maximum=10.0)) == "0.1 to 10.0"
    assert allowed_values(Param("depth", int, 3, maximum=8)) == "<= 8"
    assert allowed_values(Param("label", str, "")) == "" and format_value("") == '""'


def test_an_unknown_name_is_a_one_line_usage_error_listing_the_installed(runner):
    result = runner.invoke(cli, ["plugins", "show", "nope"])
    assert result.exit_code == 2
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("nnvis: error: no plugin named 'nope'; installed: ")
    installed = line.split("installed: ")[1].split(", ")
    assert {"saliency", "occlusion", "sanity_check"} <= set(installed) and installed == sorted(installed)


def test_a_plugin_that_failed_to_load_shows_its_failure(runner, fake_distribution):
    fake_distribution("nnvis-plugin-broken", {"broken": "fakeplug_broken"},
                      {"fakeplug_broken.py": "import fakeplug_not_installed_anywhere\n"})
    result = runner.invoke(cli, ["plugins", "show", "broken"])
    assert result.exit_code == 2
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("nnvis: error: plugin broken (nnvis-plugin-broken) failed to load: missing dependency")
    assert "fakeplug_not_installed_anywhere" in line
