"""Dataset distillation: the inner loop and its hypergradient, gradient matching, determinism, refusals,
and the plugin end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnvis_core.run.config import ReportConfig
from nnvis_core.run.registry import load_registry
from nnvis_core.runner import UsageError
from nnvis_plugins.distillation.architecture import Architecture, why_not_reinitializable
from nnvis_plugins.distillation.data import Split, labelled_images, random_real, split
from nnvis_plugins.distillation.distribution import distil_distribution, mean_embedding_distance
from nnvis_plugins.distillation.evaluation import LongTraining, held_out_score
from nnvis_plugins.distillation.matching import distil_matching, gradient_distance
from nnvis_plugins.distillation.synthetic import Settings
from nnvis_plugins.distillation.training import train, train_adam
from nnvis_plugins.distillation.unrolled import distil_unrolled, unrolled_loss
from nnvis_reports import build_report
from nnvis_reports.reader import read_report

CLASSES = 3


def tiny_net() -> nn.Module:
    """Smooth (tanh) so that finite differences are exact to second order everywhere."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, CLASSES)).eval()


def tiny_split(per_class: int = 4, dtype=torch.float64) -> Split:
    generator = torch.Generator().manual_seed(1)
    by_class = {label: [torch.randn(3, 6, 6, generator=generator, dtype=dtype) + label for _ in range(per_class)]
                for label in range(CLASSES)}
    return split(by_class, 0.25, generator, ["a", "b", "c"])


def test_one_inner_step_is_plain_gradient_descent():
    model = tiny_net().double()
    arch = Architecture(model, torch.device("cpu"), dtype=torch.float64)
    start = arch.fresh(3)
    images, labels = torch.randn(5, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    trained = train(arch.forward, start, images, labels, [0.3, 0.1])
    # Independent: the same two steps with torch.optim.SGD on a module holding the same weights.
    reference = tiny_net().double()
    reference.load_state_dict(start)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3)
    for lr in (0.3, 0.1):
        optimizer.param_groups[0]["lr"] = lr
        optimizer.zero_grad()
        F.cross_entropy(reference(images), labels).backward()
        optimizer.step()
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(trained[name], parameter.detach(), rtol=1e-12, atol=1e-12)


def test_the_long_evaluation_is_adam_on_the_minibatches_its_seed_draws():
    model = tiny_net().double()
    arch = Architecture(model, torch.device("cpu"), dtype=torch.float64)
    start = arch.fresh(3)
    images = torch.randn(7, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    trained = train_adam(arch.forward, start, images, labels, steps=4, lr=0.01, batch=3, seed=5)
    # Independent: torch.optim.Adam on a module holding the same weights, fed the same draws.
    reference = tiny_net().double()
    reference.load_state_dict(start)
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    draws = torch.Generator().manual_seed(5)
    for _ in range(4):
        chosen = torch.randperm(7, generator=draws)[:3]
        optimizer.zero_grad()
        F.cross_entropy(reference(images[chosen]), labels[chosen]).backward()
        optimizer.step()
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(trained[name], parameter.detach(), rtol=1e-10, atol=1e-12)
    assert all(torch.equal(start[name], arch.fresh(3)[name]) for name in start)  # the start is not modified
    again = train_adam(arch.forward, start, images, labels, steps=4, lr=0.01, batch=3, seed=6)
    assert not torch.equal(again["0.weight"], trained["0.weight"])  # another seed, other minibatches


def test_unrolled_hypergradient_matches_finite_differences():
    model = tiny_net().double()
    arch = Architecture(model, torch.device("cpu"), dtype=torch.float64)
    data = tiny_split()
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(CLASSES, 3, 6, 6, generator=generator, dtype=torch.float64).requires_grad_()
    targets = torch.softmax(torch.randn(CLASSES, CLASSES, generator=generator, dtype=torch.float64), 1)
    targets.requires_grad_()
    steps = torch.tensor([0.5, 0.3, 0.4], dtype=torch.float64, requires_grad=True)
    start = arch.fresh(7)

    def outer(x, y, s):
        return unrolled_loss(arch, start, x, y, s, data.train_images, data.train_labels)

    grad_images, grad_targets, grad_steps = torch.autograd.grad(outer(images, targets, steps),
                                                                [images, targets, steps])
    eps = 1e-6
    for tensor, gradient in ((images, grad_images), (targets, grad_targets), (steps, grad_steps)):
        numeric = torch.zeros_like(tensor)
        flat = numeric.view(-1)
        for index in range(tensor.numel()):
            shifted = [images.detach(), targets.detach(), steps.detach()]
            which = [t is tensor for t in (images, targets, steps)].index(True)
            plus, minus = shifted[which].clone(), shifted[which].clone()
            plus.view(-1)[index] += eps
            minus.view(-1)[index] -= eps
            with torch.no_grad():
                high = outer(*[plus if i == which else s for i, s in enumerate(shifted)])
                low = outer(*[minus if i == which else s for i, s in enumerate(shifted)])
            flat[index] = (high - low) / (2 * eps)
        assert gradient.abs().max() > 1e-4  # the check is not vacuous
        torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_gradient_distance_is_one_minus_cosine_per_output_unit():
    real = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([1.0, 1.0])]
    same_direction = [torch.tensor([[3.0, 0.0], [0.0, 0.5]]), torch.tensor([2.0, 2.0])]
    assert float(gradient_distance(real, same_direction)) == pytest.approx(0.0, abs=1e-7)
    # Row 0 orthogonal (1 - 0), row 1 opposite (1 + 1), bias at 45 degrees (1 - 1/sqrt 2).
    other = [torch.tensor([[0.0, 1.0], [0.0, -1.0]]), torch.tensor([1.0, 0.0])]
    assert float(gradient_distance(real, other)) == pytest.approx(4 - 2 ** -0.5)


@pytest.mark.parametrize("distil", [distil_unrolled, distil_matching, distil_distribution])
def test_distillation_is_deterministic_for_a_seed_and_changes_with_it(distil):
    arch = Architecture(tiny_net(), torch.device("cpu"))
    data = tiny_split(dtype=torch.float32)
    settings = Settings(inner_steps=3, outer_steps=4, lr=0.1, image_lr=0.1, soft_labels=distil is distil_unrolled)
    first = distil(arch, data, 2, CLASSES, settings, torch.Generator().manual_seed(5))
    again = distil(arch, data, 2, CLASSES, settings, torch.Generator().manual_seed(5))
    other = distil(arch, data, 2, CLASSES, settings, torch.Generator().manual_seed(6))
    assert first.images.shape == (2 * CLASSES, 3, 6, 6) and first.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(first.images, again.images) and torch.equal(first.step_sizes, again.step_sizes)
    assert torch.equal(first.targets, again.targets) and first.curve == again.curve
    assert not torch.equal(first.images, other.images)
    assert len(first.curve) == 4 and all(torch.isfinite(torch.tensor(first.curve)))


def test_fresh_initializations_differ_by_seed_and_leave_the_model_alone():
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arch = Architecture(model, torch.device("cpu"))
    one, same, two = arch.fresh(1), arch.fresh(1), arch.fresh(2)
    assert all(torch.equal(one[k], same[k]) for k in one)
    assert not torch.equal(one["0.weight"], two["0.weight"])
    assert not torch.equal(one["0.weight"], before["0.weight"])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


class WithBareParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.linear = nn.Linear(2, 2)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_models_that_cannot_be_reinitialized_are_refused_in_one_line():
    scripted = torch.jit.script(nn.Sequential(nn.Linear(2, 2)))
    assert "TorchScript" in why_not_reinitializable(scripted)
    reason = why_not_reinitializable(WithBareParameter())
    assert "WithBareParameter" in reason and "reset_parameters" in reason and "\n" not in reason
    assert why_not_reinitializable(tiny_net()) is None
    with pytest.raises(ValueError, match="TorchScript"):
        Architecture(scripted, torch.device("cpu"))


def test_folders_without_labels_or_with_too_few_images_are_refused():
    class Item:
        def __init__(self, label):
            self.true_class, self.tensor = label, torch.zeros(3, 6, 6)

    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="needs labelled images.*none of the 2"):
        labelled_images([Item(None), Item(None)], 10, generator)
    by_class = labelled_images([Item(0), Item(0), Item(1)], 10, generator)
    with pytest.raises(ValueError, match="at least 2 images per class.*too few in b"):
        split(by_class, 0.3, generator, ["a", "b"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        split({0: [torch.zeros(3, 6, 6)] * 3}, 0.3, generator, ["a"])


def test_the_split_holds_out_images_of_every_class_and_caps_the_budget():
    generator = torch.Generator().manual_seed(0)
    by_class = {0: [torch.full((1,), float(i)) for i in range(10)], 1: [torch.full((1,), 100.0 + i) for i in range(3)]}
    data = split(by_class, 0.3, generator, ["a", "b"])
    assert data.test_labels.tolist() == [0, 0, 0, 1] and data.train_labels.tolist() == [0] * 7 + [1] * 2
    seen = sorted(torch.cat([data.train_images, data.test_images]).view(-1).tolist())
    assert seen == sorted(float(v) for v in list(range(10)) + [100, 101, 102])  # disjoint and complete


def test_report_renders_the_distilled_images_curve_and_accuracy_table(few_demo_images, tmp_path):
    out = tmp_path / "out"
    params = {"dataset_distillation": {"images_per_class": "1,2", "outer_steps": "2", "inner_steps": "2",
                                       "eval_inits": "2", "soft_labels": "true", "eval_steps": "3"}}
    config = ReportConfig(few_demo_images, out, plugins=["dataset_distillation"], params=params)
    assert build_report(config, load_registry()).exit_code == 0
    card = read_report(out)["dataset"]["dataset_distillation"]
    kinds = [(a["kind"], a["title"]) for a in card["artifacts"]]
    assert kinds == [("gallery", "distilled images, 1 per class"), ("gallery", "distilled images, 2 per class"),
                     ("chart", "distillation training curve"), ("table", "held-out accuracy of fresh initializations")]
    assert len(card["artifacts"][0]["tiles"]) == 3 and len(card["artifacts"][1]["tiles"]) == 6
    assert all((out / tile["path"]).is_file() for tile in card["artifacts"][1]["tiles"])
    assert all(" (label " in tile["label"] for tile in card["artifacts"][0]["tiles"])  # the learned soft labels
    table = card["artifacts"][3]
    assert [row[:3] for row in table["rows"]] == [[1, "distilled", 3], [1, "random real", 3], [1, "full split", 3],
                                                 [2, "distilled", 6], [2, "random real", 3], [2, "full split", 3]]
    # Three held-out images (one per class): every accuracy is a multiple of 1/3.
    for row in table["rows"]:
        assert 0 <= row[3] <= 1 and row[5] == 2
    assert set(card["metrics"]) >= {"distilled_1_accuracy", "random_real_2_accuracy", "margin_1"}
    assert "trained with 3 Adam steps (lr 0.001, batches of 64)" in table["caption"]
    assert (out / "index.html").read_text(encoding="utf-8").count("distilled images, 2 per class") >= 1


def test_a_folder_with_one_image_per_class_gets_a_card_that_says_why(tmp_path):
    from nnvis_core.testing import write_demo_images

    image_dir, _ = write_demo_images(tmp_path / "input", images=3)
    out = tmp_path / "out"
    config = ReportConfig(image_dir, out, plugins=["dataset_distillation"])
    assert build_report(config, load_registry()).exit_code == 0
    (refusal,) = read_report(out)["dataset"]["dataset_distillation"]["artifacts"]
    assert refusal["kind"] == "text" and refusal["title"] == "refused"
    assert "at least 2 images per class" in refusal["text"] and "\n" not in refusal["text"]


def test_soft_labels_with_gradient_matching_is_a_usage_error(few_demo_images, tmp_path):
    params = {"dataset_distillation": {"method": "gradient_matching", "soft_labels": "true"}}
    config = ReportConfig(few_demo_images, tmp_path / "out", plugins=["dataset_distillation"], params=params)
    with pytest.raises(UsageError, match="soft_labels works only with method=unrolled"):
        build_report(config, load_registry())


def blobs(classes: int, per_class: int, generator: torch.Generator) -> dict[int, list[torch.Tensor]]:
    """Noise images with a bright or dark 6x6 square in one colour channel at a random place: the class."""
    by_class: dict[int, list[torch.Tensor]] = {}
    for label in range(classes):
        for _ in range(per_class):
            image = torch.randn(3, 16, 16, generator=generator) * 0.5
            top, left = torch.randint(0, 10, (2,), generator=generator).tolist()
            image[label % 3, top:top + 6, left:left + 6] += 2.0 if label < 3 else -2.0
            by_class.setdefault(label, []).append(image)
    return by_class


def test_one_distilled_image_per_class_teaches_a_fixed_initialization_the_task():
    """Wang et al.'s fixed-init setting on an easy task: after distillation, three steps on one synthetic
    image per class classify the held-out images (at least as well as one real image per class or the
    whole split, with the learned step sizes and the same initialization), and the outer loss falls."""
    generator = torch.Generator().manual_seed(0)
    data = split(blobs(4, 20, generator), 0.3, generator, list("abcd"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    arch = Architecture(model, torch.device("cpu"))
    settings = Settings(inner_steps=3, outer_steps=120, image_lr=0.05, fixed_init=True)
    distilled = distil_unrolled(arch, data, 1, 4, settings, generator)
    seeds = [distilled.fixed_seed]
    mine = held_out_score(arch, data, distilled.images, distilled.targets, distilled.step_sizes, seeds).mean
    real_images, real_labels = random_real(data, 1, generator)
    real = held_out_score(arch, data, real_images, real_labels, distilled.step_sizes, seeds).mean
    full = held_out_score(arch, data, data.train_images, data.train_labels, distilled.step_sizes, seeds).mean
    assert distilled.curve[-1] < 0.5 * distilled.curve[0]
    assert mine >= 0.9 and mine >= real and mine >= full, (mine, real, full)
    # The long evaluation trains fresh initializations on the whole split to the task as well.
    long = held_out_score(arch, data, data.train_images, data.train_labels, distilled.step_sizes, [11, 12],
                          LongTraining(100, 0.01, 16))
    assert long.mean >= 0.9, long.accuracies


def test_a_torchscript_model_is_a_one_line_usage_error(few_demo_images, tmp_path):
    from nnvis_core.demo import DemoNet

    path = tmp_path / "scripted.pt"
    torch.jit.script(DemoNet().eval()).save(str(path))
    config = ReportConfig(few_demo_images, tmp_path / "out", model=str(path), plugins=["dataset_distillation"])
    with pytest.raises(UsageError, match="TorchScript model cannot be re-initialized") as raised:
        build_report(config, load_registry())
    assert "\n" not in str(raised.value)


def test_gradient_matching_follows_the_plugin_contract():
    from nnvis_core.testing import check_plugin

    params = {"method": "gradient_matching", "outer_steps": 2, "inner_steps": 1, "eval_inits": 2}
    check = check_plugin(load_registry().plugin("dataset_distillation"), params=params, images=16)
    (result,) = check.results.values()
    chart = next(a for a in result.artifacts if a.kind == "chart")
    assert chart.y_label == "gradient distance" and len(chart.x) == 2
    assert {"distilled_1_accuracy", "random_real_1_accuracy", "full_split_1_accuracy"} <= set(result.metrics)


def test_the_embedding_is_what_feeds_the_last_linear_layer():
    model = tiny_net()
    arch = Architecture(model, torch.device("cpu"))
    params = arch.fresh(3)
    images = torch.randn(5, 3, 6, 6)
    expected = torch.tanh(F.conv2d(images, params["0.weight"], params["0.bias"])).flatten(1)
    assert torch.allclose(arch.embed(params, images), expected, atol=1e-6)
    # The head's input, not its output: the fresh head is zero, the features are not.
    assert float(expected.abs().sum()) > 0


def test_mean_embedding_distance_is_the_summed_squared_gap_of_class_means():
    real = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 0.0]])
    real_labels = torch.tensor([0, 0, 1])
    synthetic = torch.tensor([[1.0, 3.0], [4.0, 0.0]])
    labels = torch.tensor([0, 1])
    # Class 0: mean (1, 1) against (1, 3): 4. Class 1: (1, 0) against (4, 0): 9.
    assert float(mean_embedding_distance(real, real_labels, synthetic, labels, [0, 1])) == pytest.approx(13.0)


def test_distribution_matching_closes_the_gap_for_a_fixed_network():
    """With one fixed initialization the objective is an ordinary function of the images: it must fall."""
    arch = Architecture(tiny_net(), torch.device("cpu"))
    data = tiny_split(per_class=8, dtype=torch.float32)
    settings = Settings(outer_steps=80, image_lr=0.05, real_batch=60, fixed_init=True)
    distilled = distil_distribution(arch, data, 2, CLASSES, settings, torch.Generator().manual_seed(0))
    assert distilled.curve[-1] < 0.1 * distilled.curve[0], distilled.curve[::20]


def test_distribution_matching_follows_the_plugin_contract():
    from nnvis_core.testing import check_plugin

    params = {"method": "distribution_matching", "outer_steps": 3, "eval_inits": 2}
    check = check_plugin(load_registry().plugin("dataset_distillation"), params=params, images=16)
    (result,) = check.results.values()
    chart = next(a for a in result.artifacts if a.kind == "chart")
    assert chart.y_label == "squared distance of class mean embeddings" and len(chart.x) == 3


def test_distribution_matching_refuses_a_model_without_a_linear_head():
    from nnvis_core.demo import CLASS_NAMES
    from nnvis_core.testing import check_plugin

    torch.manual_seed(0)
    conv_head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, len(CLASS_NAMES), 1),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    params = {"method": "distribution_matching", "outer_steps": 1, "eval_inits": 1}
    check = check_plugin(load_registry().plugin("dataset_distillation"), params=params, images=16, model=conv_head)
    (result,) = check.results.values()
    (refusal,) = result.artifacts
    assert refusal.title == "refused" and "last Linear layer" in refusal.text
