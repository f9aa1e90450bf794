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
