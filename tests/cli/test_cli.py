"""The command line: exit codes, one-line usage errors, settings from flags and TOML."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import nnvis_core
from nnvis_cli.main import cli
from nnvis_reports.reader import read_report


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and nnvis_core.__version__ in result.output


def test_help_works_with_short_flag(runner):
    result = runner.invoke(cli, ["report", "-h"])
    assert result.exit_code == 0 and "IMAGE_DIR" in result.output


def test_plugins_lists_builtins_with_their_distribution(runner):
    result = runner.invoke(cli, ["plugins"])
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("saliency"))
    assert "image" in row and f"nnvis {nnvis_core.__version__}" in row and row.rstrip().endswith("ok")
    assert "torchvision" in result.output and "demo" in result.output


def test_report_writes_files_and_exits_zero(runner, few_demo_images, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(cli, ["report", str(few_demo_images), "-o", str(out), "--set", "saliency.target=true"])
    assert result.exit_code == 0, result.output
    report = read_report(out)
    assert report["plugins"][0]["params"] == {"target": "true", "faithfulness_steps": 32}
    assert (out / "index.html").is_file()


def test_config_file_and_flags(runner, few_demo_images, tmp_path):
    config = tmp_path / "nnvis.toml"
    config.write_text('plugins = ["saliency"]\nseed = 7\nbatch_size = 4\n[params.saliency]\ntarget = "true"\n')
    out = tmp_path / "out"
    result = runner.invoke(cli, ["report", str(few_demo_images), "-o", str(out), "--config", str(config),
                                 "--seed", "9", "--set", "saliency.target=predicted"])
    assert result.exit_code == 0, result.output
    report = read_report(out)
    assert report["seed"] == 9  # the flag wins over the file
    assert report["plugins"][0]["params"] == {"target": "predicted", "faithfulness_steps": 32}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "saliency.nope=1"], "unknown parameter saliency.nope: saliency accepts faithfulness_steps, target"),
        (["--set", "saliency.target=unicorn"], "target 'unicorn' is not a class"),
        (["--set", "justtext"], "--set expects PLUGIN.PARAM=VALUE"),
        (["--plugins", "nope"], "unknown plugin nope"),
        (["--model", "torchvision:nosuchnet"], "torchvision has no classification model 'nosuchnet'"),
        (["--mean", "1,2"], "mean (--mean) expects three comma-separated numbers"),
        (["--device", "cuda:0"], "no CUDA device"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(runner, few_demo_images, tmp_path, args, message):
    if args[:2] == ["--device", "cuda:0"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    result = runner.invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nnvis: error: ") and message in lines[0], result.output
    assert not (tmp_path / "out").exists()


def test_empty_and_missing_folders(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["report", str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no image files found" in result.output
    result = runner.invoke(cli, ["report", str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing" in result.output


def test_unreadable_image_gives_exit_code_1(runner, few_demo_images, tmp_path):
    (few_demo_images / "zero.png").write_bytes(b"")
    result = runner.invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "zero.png: empty file (0 bytes)" in result.output


def test_quiet_prints_nothing(runner, few_demo_images, tmp_path):
    result = runner.invoke(cli, ["report", str(few_demo_images), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0 and result.output == ""


def test_layers_lists_module_names(runner):
    result = runner.invoke(cli, ["layers"])
    assert result.exit_code == 0 and "features.0" in result.output and "Conv2d" in result.output
