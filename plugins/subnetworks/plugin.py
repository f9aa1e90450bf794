"""The `hidden_subnetwork` plugin: find the subnetwork already inside random weights, then look into it."""

from __future__ import annotations

from pathlib import Path

import torch

from nnvis_core import Param, Plugin, Scope, Text, hookimpl
from nnvis_core.contract.artifacts import Result, Table
from nnvis_plugins.subnetworks.card import accuracy_chart, filters_gallery, kept_table, map_comparison
from nnvis_plugins.subnetworks.data import FolderRefusal, labelled_parts
from nnvis_plugins.subnetworks.edgepopup import INITS, export, forward, frozen_copy, initial_scores, prunable
from nnvis_plugins.subnetworks.training import Recipe, accuracy, train_dense, train_scores


def keep_shares(spec: str) -> list[float]:
    """'10,30,50' -> [0.1, 0.3, 0.5]; ValueError naming the parameter otherwise."""
    try:
        percents = [float(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        percents = []
    if not percents or any(not 0 < p < 100 for p in percents):
        raise ValueError(f"keep: expected comma-separated percentages between 0 and 100, got {spec!r}")
    return sorted({p / 100 for p in percents})


def init_names(spec: str) -> list[str]:
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names or any(name not in INITS for name in names):
        raise ValueError(f"init: expected comma-separated names from {', '.join(INITS)}, got {spec!r}")
    return list(dict.fromkeys(names))


def _check(parse):
    def check(value: str) -> str | None:
        try:
            parse(value)
        except ValueError as error:
            return str(error).split(": ", 1)[1]
        return None
    return check


class HiddenSubnetwork(Plugin):
    name = "hidden_subnetwork"
    title = "Hidden subnetworks of random weights"
    description = (
        "Ramanujan et al. (CVPR 2020): keeps the model's architecture, draws its weights at random and freezes "
        "them, and learns one score per weight of every conv and linear layer; the forward pass uses each "
        "layer's top-k weights by |score| (edge-popup, straight-through to the scores). Shows held-out accuracy "
        "against k for each weight init beside the dense network trained from the same initialization, the "
        "weights kept per layer, first-layer filters of both, and their saliency maps side by side. Needs "
        "class subfolders (or the train/ and test/ split nnvis demo digits writes); the loaded weights are "
        "used only with init=loaded."
    )
    scope = Scope.DATASET
    params = (
        Param("init", str, "kaiming_normal,signed_constant", "weight inits to search, comma-separated: "
              "kaiming_normal, signed_constant (plus or minus He's scale) or loaded (search the loaded weights: "
              "pruning by learned scores)", check=_check(init_names)),
        Param("keep", str, "10,30,50,70,90", "shares of each layer's weights kept, in percent, comma-separated",
              check=_check(keep_shares)),
        Param("epochs", int, 10, "epochs of score training (and of the dense baseline)", minimum=1, maximum=10_000),
        Param("lr", float, 0.1, "SGD learning rate (cosine decay, momentum 0.9, weight decay 5e-4)",
              minimum=1e-6, maximum=10.0),
        Param("batch", int, 128, "minibatch size", minimum=1, maximum=100_000),
        Param("held_out", float, 0.2, "share of each class held out, when the folder has no train/ and test/",
              minimum=0.01, maximum=0.99),
        Param("max_per_class", int, 500, "at most this many images of each class in each part",
              minimum=2, maximum=1_000_000),
        Param("maps", int, 4, "held-out images whose saliency maps are compared", minimum=0, maximum=64),
        Param("export", str, "", "a folder to write the best subnetwork and the dense network to, as "
              "checkpoints for a two-model report (empty: not written)"),
        Param("seed", int, 0, "added to the run's seed: another draw of weights, scores and split",
              minimum=0, maximum=2 ** 31 - 1),
    )

    def applies_to(self, ctx) -> str | None:
        if isinstance(ctx.module, torch.jit.ScriptModule):
            return "a TorchScript model's weights cannot be re-drawn: load the architecture as Python code"
        if not prunable(ctx.module):
            return f"{type(ctx.module).__name__} has no conv or linear layer whose weights could be chosen"
        return None

    def run_dataset(self, ctx, items, params):
        seed = (ctx.seed_for(None, self.name) + params["seed"]) % 2 ** 31
        with torch.random.fork_rng(devices=[]):  # dropout in training mode draws from the global generator
            torch.manual_seed(seed)
            return self._search(ctx, items, params, seed)

    def _search(self, ctx, items, params, seed: int) -> Result:
        generator = torch.Generator().manual_seed(seed)
        try:
            parts = labelled_parts(items, params["held_out"], params["max_per_class"], generator)
        except FolderRefusal as refusal:
            return Result([Text("refused", str(refusal), caption="nothing was searched")])
        keeps, inits = keep_shares(params["keep"]), init_names(params["init"])
        recipe = Recipe(epochs=params["epochs"], lr=params["lr"], batch=params["batch"])
        x, y, x_test, y_test = parts.train_images, parts.train_labels, parts.test_images, parts.test_labels
        curves, best = {}, None
        for init in inits:
            frozen = frozen_copy(ctx.module, init, seed)
            curves[init] = []
            for keep in keeps:
                scores = initial_scores(frozen, seed + 1)
                train_scores(frozen, scores, keep, x, y, recipe, seed + 2)
                held_out = accuracy(lambda images: forward(frozen, scores, keep, images), x_test, y_test)
                curves[init].append(held_out)
                if best is None or held_out > best[0]:
                    best = (held_out, init, keep, export(frozen, scores, keep))
        dense, _ = train_dense(frozen_copy(ctx.module, inits[0], seed), x, y, recipe, seed + 2)
        dense_accuracy = accuracy(dense, x_test, y_test)
        chance = float(torch.bincount(y_test).max()) / len(y_test)
        best_accuracy, best_init, best_keep, subnetwork = best
        rows = [[init, round(100 * keep), round(curves[init][i], 4)] for init in inits for i, keep in enumerate(keeps)]
        rows.append(["dense (learned weights)", 100, round(dense_accuracy, 4)])
        split = ("the folder's own train/ and test/" if parts.own_split
                 else f"a seeded split holding out {params['held_out']:.0%} of each class")
        artifacts = [
            accuracy_chart(keeps, curves, dense_accuracy, chance),
            Table("held-out accuracy", ["init", "kept (%)", "accuracy"], rows,
                  caption=f"{len(x)} images searched on, {len(x_test)} held out ({split}); {recipe.epochs} epochs "
                          f"of SGD (lr {recipe.lr:g}, cosine, momentum 0.9, weight decay 5e-4), batches of "
                          f"{recipe.batch}; chance {chance:.1%}; the best subnetwork is chosen on these held-out "
                          "images, so its figure is optimistic"),
            kept_table(subnetwork),
            *filters_gallery(subnetwork, dense),
        ]
        if params["maps"]:
            artifacts += map_comparison(subnetwork, dense, x_test[:params["maps"]], ctx.model.preprocess.mean,
                                        ctx.model.preprocess.std)
        artifacts.append(Text("export", _export(params["export"], subnetwork, dense, ctx, best_init, best_keep)))
        metrics = {f"{init}_{round(100 * keep)}_accuracy": curves[init][i] for init in inits
                   for i, keep in enumerate(keeps)}
        metrics.update(dense_accuracy=dense_accuracy, best_subnetwork_accuracy=best_accuracy, chance=chance)
        return Result(artifacts, metrics=metrics)


def _export(folder: str, subnetwork, dense, ctx, init: str, keep: float) -> str:
    """Write both networks where the user asked, and say how to compare them with every other plugin."""
    described = f"the best subnetwork: init {init}, {keep:.0%} of each layer kept"
    if not folder:
        return (f"{described}. Set hidden_subnetwork.export=DIR to write it and the dense network as "
                "checkpoints, then compare them in one report: nnvis report IMAGES --model DIR/dense.pt "
                "--model DIR/subnetwork.pt (with --arch as for the loaded model, unless it is a ConvNet)")
    target = Path(folder).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    from nnvis_core.models.convnet import ConvNet

    if isinstance(ctx.module, ConvNet):
        from nnvis_core.models.convnet_source import save_checkpoint

        for name, model in (("subnetwork", subnetwork), ("dense", dense)):
            save_checkpoint(model, target / f"{name}.pt", list(ctx.class_names), ctx.model.preprocess,
                            {"hidden_subnetwork": name, "init": init, "keep": keep})
        arch = ""
    else:
        for name, model in (("subnetwork", subnetwork), ("dense", dense)):
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, target / f"{name}.pt")
        arch = " --arch ARCH (the loaded model's architecture)"
    return (f"{described}. Written: {target / 'subnetwork.pt'} (masked weights) and {target / 'dense.pt'}. "
            f"Compare them with every other plugin: nnvis report IMAGES --model {target / 'dense.pt'} "
            f"--model {target / 'subnetwork.pt'}{arch}")


@hookimpl
def nnvis_register_plugins(register) -> None:
    register(HiddenSubnetwork())
