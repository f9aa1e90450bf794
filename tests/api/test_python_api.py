"""`import nnvis`: the CLI's run from Python, results in memory, the same report on save, the report
inline for notebooks, and one map in one line."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import without_timings

import nnvis
from nnvis_cli.main import cli
from nnvis_core.contract.artifacts import Heatmap
from nnvis_core.demo import CLASS_NAMES, DEMO_SPEC, load_demo_model

DEMO_PREPROCESS = {"resize": DEMO_SPEC["input_size"], "crop": DEMO_SPEC["input_size"],
                   "mean": DEMO_SPEC["mean"], "std": DEMO_SPEC["std"]}


@pytest.fixture(scope="module")
def api_images(tmp_path_factory, demo_images) -> Path:
    from conftest import copy_demo

    return copy_demo(demo_images, tmp_path_factory.mktemp("api") / "images")


@pytest.fixture(scope="module")
def demo_run(api_images) -> nnvis.Run:
    return nnvis.run(api_images, "demo", plugins=["gradcam", "occlusion"], occlusion={"window": 16},
                     device="cpu", progress=False)


def test_results_are_typed_and_in_memory(demo_run, api_images, tmp_path, monkeypatch):
    assert demo_run.images == sorted(str(p.relative_to(api_images).as_posix()) for p in api_images.rglob("*.png"))
    result = demo_run.result(demo_run.images[0], "gradcam")
    heatmap = result.artifacts[0]
    assert isinstance(heatmap, Heatmap) and heatmap.values.shape == (64, 64)
    assert set(result.metrics) >= {"deletion_auc", "insertion_auc"}
    with pytest.raises(KeyError, match="no readable image"):
        demo_run.result("nothing.png", "gradcam")
    assert [row["method"] for row in demo_run.leaderboard] == ["gradcam", "occlusion"]
    assert "6 images through demo" in repr(demo_run)


def test_nothing_is_written_until_save(api_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in Path(api_images.parent).iterdir())
    nnvis.run(api_images, "demo", plugins=["saliency"], device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in api_images.parent.iterdir()) == before


def test_save_writes_the_report_the_cli_writes(demo_run, api_images, tmp_path):
    index = demo_run.save(tmp_path / "python")
    assert index == tmp_path / "python" / "index.html" and index.is_file()
    result = CliRunner().invoke(cli, ["report", str(api_images), "--plugins", "gradcam,occlusion", "--device", "cpu",
                                      "--set", "occlusion.window=16", "-o", str(tmp_path / "cli"), "-q"])
    assert result.exit_code == 0, result.output
    ours, theirs = (without_timings(json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8")))
                    for name in ("python", "cli"))
    assert ours == theirs
    assert demo_run.report()["by_model"][0]["images"] == json.loads(
        (tmp_path / "python" / "report.json").read_text(encoding="utf-8"))["by_model"][0]["images"]


def test_a_model_in_memory_is_used_as_it_is_and_left_as_it_was(api_images):
    model = load_demo_model(None).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    files = sorted(api_images.rglob("*.png"))[:3]
    run = nnvis.run(files, model, plugins=["saliency"], preprocess=DEMO_PREPROCESS, class_names=CLASS_NAMES,
                    device="cpu", progress=False)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    view = run.view()
    assert [image["true_class"]["name"] for image in view["images"]] == [f.parent.name for f in files]
    assert view["model"]["source"] == "python (in memory)"
    # the same weights through the embedded model give the same maps
    embedded = nnvis.run(files, "demo", plugins=["saliency"], device="cpu", progress=False)
    for name in run.images:
        assert np.array_equal(run.result(name, "saliency").artifacts[0].values,
                              embedded.result(name, "saliency").artifacts[0].values)


def test_bad_settings_are_usage_errors(api_images):
    with pytest.raises(nnvis.UsageError, match="unknown plugin nothing"):
        nnvis.run(api_images, plugins=["nothing"], progress=False)
    with pytest.raises(nnvis.UsageError, match="unknown parameter occlusion.size"):
        nnvis.run(api_images, plugins=["occlusion"], occlusion={"size": 3}, progress=False)
    with pytest.raises(nnvis.UsageError, match="go as a dict"):
        nnvis.run(api_images, plugins=["occlusion"], occlusion=16, progress=False)
    with pytest.raises(nnvis.UsageError, match="cannot read a object"):
        nnvis.run([object()], progress=False)


def test_the_report_shows_inline_self_contained(demo_run, tmp_path, open_report):
    frame = demo_run._repr_html_()
    assert frame.startswith('<iframe class="nnvis-report" sandbox="allow-scripts"')
    page = html.unescape(re.search(r'srcdoc="(.*)"></iframe>', frame, re.S)[1])
    assert not re.search(r'(?<![\w/.])assets/[\w./-]+\.png', page)  # every picture inlined
    alone = tmp_path / "alone.html"  # no assets/ beside it
    alone.write_text(page, encoding="utf-8")
    opened = open_report(alone)
    opened.page.wait_for_selector("[data-matrix] tbody tr")
    sizes = opened.page.locator("[data-matrix] tbody img").evaluate_all(
        "images => images.slice(0, 6).map(i => i.complete ? i.naturalWidth : -1)")
    assert sizes and all(size > 0 for size in sizes)
    assert opened.page.locator("#leaderboard table.leaderboard tbody tr").count() == 2
    assert opened.console_errors == [] and opened.page_errors == []


def test_explain_gives_the_map_the_run_draws(demo_run, api_images):
    name = demo_run.images[0]
    explained = nnvis.explain("demo", api_images / name, "gradcam", device="cpu")
    assert isinstance(explained.map, torch.Tensor) and explained.map.shape == (64, 64)
    assert torch.equal(explained.map, torch.as_tensor(demo_run.result(name, "gradcam").artifacts[0].values))
    assert explained.target == explained.predicted and explained.target_name == CLASS_NAMES[explained.target]
    other = nnvis.explain("demo", api_images / name, "gradcam", target="ring", device="cpu")
    assert other.target_name == "ring" and not torch.equal(other.map, explained.map)
    with pytest.raises(nnvis.UsageError, match="unknown method"):
        nnvis.explain("demo", api_images / name, "nothing")


def test_pil_images_and_tensors_run_as_their_files_do(api_images):
    from PIL import Image

    files = sorted(api_images.rglob("*.png"))[:2]
    pictures = [Image.open(path) for path in files]
    batch = torch.stack([torch.from_numpy(np.array(p.convert("RGB"))).permute(2, 0, 1).float() / 255 for p in pictures])
    from_files = nnvis.run(files, "demo", plugins=["saliency"], device="cpu", progress=False)
    for given in (pictures, batch, list(batch)):
        run = nnvis.run(given, "demo", plugins=["saliency"], device="cpu", progress=False)
        assert run.images == ["image_0000.png", "image_0001.png"]
        assert run.view()["input"]["root"] == "(in memory)"
        for mine, theirs in zip(run.images, from_files.images):
            assert np.array_equal(run.result(mine, "saliency").artifacts[0].values,
                                  from_files.result(theirs, "saliency").artifacts[0].values)
    assert torch.equal(nnvis.explain("demo", batch[0], "saliency", device="cpu").map,
                       nnvis.explain("demo", files[0], "saliency", device="cpu").map)
    with pytest.raises(nnvis.UsageError, match=r"RGB values in \[0, 1\]"):
        nnvis.run(batch * 3, "demo", progress=False)
    with pytest.raises(nnvis.UsageError, match="cannot read a Tensor"):
        nnvis.run([torch.rand(4, 8, 8)], "demo", progress=False)


def test_parts_of_the_report_show_inline(demo_run, api_images, tmp_path, open_report):
    board = demo_run.leaderboard
    assert isinstance(board, list) and [row["method"] for row in board] == ["gradcam", "occlusion"]
    page = html.unescape(re.search(r'srcdoc="(.*)"></iframe>', board._repr_html_(), re.S)[1])
    assert page.count("<section") == 1 and 'id="leaderboard"' in page
    (tmp_path / "board.html").write_text(page, encoding="utf-8")
    opened = open_report(tmp_path / "board.html")
    opened.page.locator("#leaderboard thead th button", has_text="deletion AUC").click()  # its script runs
    assert opened.page.locator("#leaderboard th[aria-sort='ascending']").count() == 1
    assert opened.console_errors == [] and opened.page_errors == []
    with pytest.raises(ValueError, match="the parts are"):
        demo_run.show("nothing")
    explained = nnvis.explain("demo", api_images / demo_run.images[0], "gradcam", device="cpu")
    figure = explained._repr_html_()
    assert figure.startswith('<iframe class="nnvis-report" sandbox="allow-scripts"')
    figure = html.unescape(re.search(r'srcdoc="(.*)"></iframe>', figure, re.S)[1])
    assert "Grad-CAM" in figure and "data:image/webp;base64," in figure and ">deletion AUC <span" in figure
    frame = demo_run.result(demo_run.images[0], "occlusion")._repr_html_()  # one result, as its card draws it
    card = html.unescape(re.search(r'srcdoc="(.*)"></iframe>', frame, re.S)[1])
    assert card.count('<figure class="artifact') == 5 and '<svg class="chart"' in card and "raw .npy" not in card
    (tmp_path / "card.html").write_text(card, encoding="utf-8")
    opened = open_report(tmp_path / "card.html")
    sizes = opened.page.locator("img").evaluate_all("images => images.map(i => i.complete ? i.naturalWidth : -1)")
    assert len(sizes) == 4 and all(size == 64 for size in sizes)
    assert opened.console_errors == [] and opened.page_errors == []


def test_the_t_sne_shows_inline(api_images, tmp_path, open_report):
    run = nnvis.run(api_images, "demo", plugins=["tsne"], tsne={"perplexity": 2}, device="cpu", progress=False)
    page = html.unescape(re.search(r'srcdoc="(.*)"></iframe>', run.show("dataset")._repr_html_(), re.S)[1])
    (tmp_path / "tsne.html").write_text(page, encoding="utf-8")
    opened = open_report(tmp_path / "tsne.html")
    assert opened.page.locator(".scatter-view").evaluate("root => root.nnvisScatter !== undefined")
    assert opened.console_errors == [] and opened.page_errors == []


def test_preprocessing_and_classes_are_read_off_torchvision_weights_and_timm_models(api_images):
    from nnvis_core.models.timm_source import import_timm
    from nnvis_core.torchvision_compat import torchvision_models

    models = torchvision_models()
    weights = models.ResNet18_Weights.IMAGENET1K_V1  # its transforms and meta: nothing is downloaded
    resnet = models.resnet18(weights=None)
    files = sorted(api_images.rglob("*.png"))[:1]
    run = nnvis.run(files, resnet, weights=weights, plugins=["saliency"], saliency={"faithfulness_steps": 0},
                    device="cpu", progress=False)
    model = run.view()["model"]
    assert model["preprocess"]["resize"] == 256 and model["preprocess"]["crop"] == 224
    assert model["num_classes"] == 1000
    assert run.view()["images"][0]["predictions"][0]["name"] in weights.meta["categories"]
    timm = import_timm()
    small = timm.create_model("resnet10t", pretrained=False)
    run = nnvis.run(files, small, plugins=["saliency"], saliency={"faithfulness_steps": 0}, device="cpu",
                    progress=False)
    config = timm.data.resolve_data_config({}, model=small)
    assert run.view()["model"]["preprocess"]["crop"] == config["input_size"][-1]
    assert run.view()["model"]["preprocess"]["mean"] == list(config["mean"])


def test_the_result_cache_is_opt_in(api_images, tmp_path):
    first = nnvis.run(api_images, "demo", plugins=["saliency"], device="cpu", progress=False, cache=tmp_path / "cache")
    again = nnvis.run(api_images, "demo", plugins=["saliency"], device="cpu", progress=False, cache=tmp_path / "cache")
    assert first.reused == 0 and again.reused == len(again.images) == 6
    for name in again.images:
        assert np.array_equal(first.result(name, "saliency").artifacts[0].values,
                              again.result(name, "saliency").artifacts[0].values)
    assert nnvis.run(api_images, "demo", plugins=["saliency"], device="cpu", progress=False).reused == 0
