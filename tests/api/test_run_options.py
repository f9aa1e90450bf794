"""One run configuration (nnvis_core.run.config.build_config) behind both front ends: every option
it takes is offered by `nnvis report` and by `nnvis.run`, and a bad value is refused with the same
one-line message by both."""

from __future__ import annotations

import inspect

import pytest
from click.testing import CliRunner

import nnvis
from nnvis_cli.main import cli
from nnvis_core.run.config import PLACE_OPTIONS, build_config

# How the CLI spells options whose value it gathers differently (repeated --set PLUGIN.PARAM=VALUE).
CLI_SPELLING = {"params": "assignments"}


def run_options() -> set[str]:
    return {name for name, parameter in inspect.signature(build_config).parameters.items()
            if name not in PLACE_OPTIONS}


def test_every_option_of_the_builder_is_reachable_from_the_cli_and_python():
    report = cli.commands["report"]
    cli_names = {parameter.name for parameter in report.params}
    missing_cli = {name for name in run_options() if CLI_SPELLING.get(name, name) not in cli_names}
    api = inspect.signature(nnvis.run).parameters
    keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD and p.name == "params" for p in api.values())
    missing_api = {name for name in run_options() if name not in api and not (name == "params" and keywords)}
    assert run_options() >= {"model", "plugins", "batch_size", "engine", "jobs", "mean"}
    assert missing_cli == set() and missing_api == set()


BAD = [
    ({"batch_size": 0}, ["--batch-size", "0"]),
    ({"plugin_timeout": -1.0}, ["--plugin-timeout", "-1"]),
    ({"mean": (0.5, 0.5)}, ["--mean", "0.5,0.5"]),
    ({"engine": "spark"}, ["--engine", "spark"]),
    ({"jobs": 0}, ["--jobs", "0"]),
    ({"weights": ["a", "b"]}, ["--model", "demo", "--weights", "a", "--weights", "b"]),
]


@pytest.mark.parametrize(("python", "command"), BAD, ids=[next(iter(p)) for p, _ in BAD])
def test_a_bad_value_is_refused_with_the_same_line_by_both(python, command, demo_images, tmp_path):
    with pytest.raises(nnvis.UsageError) as raised:
        nnvis.run(demo_images, "demo", progress=False, **python)
    result = CliRunner().invoke(cli, ["report", str(demo_images), "-o", str(tmp_path / "out"), *command])
    assert result.exit_code == 2
    message = str(raised.value)
    assert "\n" not in message and result.output.strip().endswith(f"nnvis: error: {message}")
    assert not (tmp_path / "out").exists()
