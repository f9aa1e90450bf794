"""Every usage problem the Python API raises is a nnvis.UsageError with the CLI's one line; a method
that cannot apply names the methods that can."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import nnvis
from nnvis_cli.main import cli

SMALL = {"resize": 32, "crop": 32}


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))


def test_grad_cam_on_a_model_without_conv_or_token_layer_names_the_methods_that_apply():
    with pytest.raises(nnvis.UsageError) as raised:
        nnvis.explain(mlp(), torch.rand(3, 32, 32), "gradcam", preprocess=SMALL, device="cpu")
    message = str(raised.value)
    assert "\n" not in message and message.startswith("gradcam does not apply to model Sequential: ")
    applies = message.split("methods that apply: ")[1].split(", ")
    assert "saliency" in applies and "integrated_gradients" in applies and "gradcam" not in applies
    assert nnvis.explain(mlp(), torch.rand(3, 32, 32), applies[0], preprocess=SMALL, device="cpu").map.shape == (32, 32)


def test_a_layer_that_does_not_exist_is_refused_as_the_cli_refuses_it(demo_images, tmp_path):
    image = sorted(demo_images.rglob("*.png"))[0]
    with pytest.raises(nnvis.UsageError) as raised:
        nnvis.explain("demo", image, "gradcam", layer="nope", device="cpu")
    result = CliRunner().invoke(cli, ["report", str(image.parent), "--plugins", "gradcam", "--set",
                                      "gradcam.layer=nope", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and result.output.strip() == f"nnvis: error: {raised.value}"


def test_no_lookup_error_escapes_except_usage_error(demo_images):
    image = sorted(demo_images.rglob("*.png"))[0]
    for call in (lambda: nnvis.explain("demo", image, "gradcam", layer="nope", device="cpu"),
                 lambda: nnvis.explain(mlp(), torch.rand(3, 32, 32), "gradcam", preprocess=SMALL, device="cpu")):
        try:
            call()
        except nnvis.UsageError:
            pass


def test_a_run_refuses_grad_cam_on_a_model_without_its_layer_before_any_image():
    with pytest.raises(nnvis.UsageError) as raised:
        nnvis.run([torch.rand(3, 32, 32)] * 2, mlp(), plugins=["gradcam", "saliency"], preprocess=SMALL,
                  class_names=[str(i) for i in range(10)], device="cpu")
    assert str(raised.value).startswith("gradcam does not apply to model Sequential: ")


def test_every_plugin_leaves_grad_cam_out_with_its_reason_on_such_a_model():
    run = nnvis.run([torch.rand(3, 32, 32)] * 2, mlp(), plugins=["all"], preprocess=SMALL,
                    class_names=[str(i) for i in range(10)], device="cpu")
    skipped = {entry["name"]: entry["reason"] for entry in run.report()["by_model"][0]["skipped_plugins"]}
    assert "gradcam" in skipped and "saliency" not in skipped
    assert all(outcome["status"] == "ok" for image in run.report()["by_model"][0]["images"]
               for name, outcome in image["results"].items() if name == "saliency")
