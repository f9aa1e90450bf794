"""Which layer a method reads: the one place that turns a `layer` parameter into a module.

Names are those of ``model.named_modules()`` (see ``nnvis layers``). Besides a
name, a `layer` parameter may hold one of :data:`LAYER_KEYWORDS`:

- ``auto``: the rectified output of the last Conv2d (:func:`default_layer`), the
  layer Grad-CAM and the feature projections read by default;
- ``last_conv``: the last Conv2d itself;
- ``penultimate``: the input of the last Linear layer, the vector the classifier
  reads (:func:`feature_source`; for folder views).
"""

from __future__ import annotations

import difflib
import functools
import weakref

import torch
from torch import nn

from nnvis_core.models.outputs import (
    CHANNELS_LAST,
    MAP,
    TOKENS,
    LayoutError,
    grid_like,
    output_layout,
    patch_size,
)

# The run checks every other value of a `layer` parameter against the model up front.
PENULTIMATE = "penultimate"
LAYER_KEYWORDS = ("auto", "last_conv", PENULTIMATE)


class LayerNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def error_line(error: BaseException) -> str:
    """An error's message in one line, without its type (a plain KeyError's without the quotes its
    str adds): a refusal's reason as the user reads it."""
    text = str(error.args[0]) if type(error) is KeyError and error.args else str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


def find_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called `name`, or LayerNotFound listing near matches."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; layers are: {', '.join(names[:12])}..."
    raise LayerNotFound(f"no layer named {name!r} in {type(model).__name__}{hint}")


def last_conv_layer(model: torch.nn.Module) -> str:
    """Name of the last Conv2d in definition order that runs in inference: the usual Grad-CAM layer."""
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return convs[-1]


# Element-wise activation modules: what "rectified output" and "pre-activation" look for.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Softplus)
RECTIFIERS = (nn.ReLU, nn.ReLU6)  # outputs with exact zeros: what sparsity counts
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # a member of one of these is a block


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d layers that run in inference, in definition order.

    GoogLeNet and Inception v3 define auxiliary classifiers last, and run them
    only in training: their convs would otherwise be "the last conv". When the
    model rejects the probe input, every Conv2d is listed.
    """
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    ran = modules_run(model)
    running = [name for name in convs if ran is None or name in ran]
    return running or convs


def modules_run(model: nn.Module) -> frozenset[str] | None:
    """Names of the modules an eval-mode forward pass at probe_size runs (cached per model),
    or None when the model rejects that input."""
    order = _forward_order(model)
    return None if order is None else frozenset(order.position)


def first_conv(model: nn.Module) -> str:
    convs = conv_layers(model)
    if not convs:
        raise LayerNotFound(f"{type(model).__name__} has no Conv2d layer")
    return convs[0]


def _siblings(model: nn.Module, name: str) -> tuple[str, list[str]] | None:
    """(parent name, child names) when `name` sits in a Sequential, else None."""
    parent_name, _, _ = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    return parent_name, [child for child, _ in parent.named_children()]


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _runs_once(model: nn.Module, module: nn.Module) -> bool:
    return sum(m is module for _, m in model.named_modules(remove_duplicate=False)) == 1


def rectified_output(model: nn.Module, conv: str) -> str:
    """The activation module right after `conv` (past a per-channel norm: batch, group or instance norm, as
    the dataset-condensation ConvNet has) in its Sequential, else `conv` itself."""
    found = _siblings(model, conv)
    if found is None:
        return conv
    parent, children = found
    for child in children[children.index(conv.rpartition(".")[2]) + 1:]:
        module = model.get_submodule(_join(parent, child))
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.Identity)):
            continue
        if isinstance(module, ACTIVATIONS) and _runs_once(model, module):
            return _join(parent, child)
        break
    return conv


def preactivation(model: nn.Module, name: str) -> str:
    """For an element-wise activation module that follows another module in a Sequential, that module.

    Optimizing a rectified output gets no gradient while the unit is off (a
    channel that is zero on the starting image stays zero); its pre-activation
    is the same unit without that dead zone (Olah et al. optimize pre-ReLU layers).
    Any other layer is returned unchanged.
    """
    module = find_layer(model, name)
    found = _siblings(model, name)
    if not isinstance(module, ACTIVATIONS) or found is None:
        return name
    parent, children = found
    position = children.index(name.rpartition(".")[2])
    return _join(parent, children[position - 1]) if position > 0 else name


def spatial_problem(model: nn.Module, name: str, gradient: bool = True) -> str | None:
    """Why the output of layer `name` cannot carry a spatial explanation, from the probe pass: it comes
    after the global pooling ((N, C) features or 1x1 maps), it is a single token, or it is zero everywhere
    (a residual branch whose last norm starts at zero, read before its add). None when it can, or when
    the probe did not run it."""
    order = _forward_order(model)
    shape = _probed_shape(model, name)
    if shape is None:
        return None
    if len(shape) == 2:
        return f"{name} gives {shape[1]} features per image (after the global pooling), not a spatial map"
    if len(shape) == 4 and (shape[2] == shape[3] == 1 or shape[1] == shape[2] == 1):
        return (f"{name} gives 1x1 maps at this input size (it comes after the global pooling, or the input "
                "is too small)")
    if len(shape) == 3 and shape[1] == 1:
        return f"{name} gives a single token, not one per patch"
    if name in order.zero:
        return f"{name} outputs zero everywhere at initialization (a residual branch read before its add)"
    if gradient and order.reached is not None and name not in order.reached:
        return (f"the class score's gradient reaches at most one position of {name} (nothing after it reads "
                "its positions but a class token)")
    return None


def folds_the_batch(model: nn.Module, name: str) -> bool:
    """Whether layer `name` gave the probe pass's one image more than one row (MViT's attention pooling
    runs on images x heads): its rows are not images, so no per-image reader can use it."""
    shape = _probed_shape(model, name)
    return bool(shape) and shape[0] != 1


def _probed_shape(model: nn.Module, name: str) -> tuple[int, ...] | None:
    """The shape of layer `name`'s first output in the probe pass, or None when the probe did not run it."""
    order = _forward_order(model)
    return None if order is None else order.shapes.get(name)


def last_spatial_block(model: nn.Module) -> str | None:
    """The module whose forward ends last among the model's blocks (its children, or the members of a
    Sequential, ModuleList or ModuleDict: never a branch inside a block) that hold weights and whose
    output a map reader can read (:func:`readable_problem`): the output of the model's last block that
    still has a spatial layout the class score depends on (a ResNetV2's final norm, a DLA's last level, a
    RegNet's last stage after its adds, a CoaT's last serial block but one). None when the probe did not
    run or no block qualifies."""
    order = _forward_order(model)
    if order is None:
        return None
    for strict in (True, False):  # a block of blocks first (Inception's mixed_7a, not its branch2.1)
        for name in reversed(order.finished):
            if not _is_block(model, name, strict) or next(model.get_submodule(name).parameters(), None) is None:
                continue
            if readable_problem(model, name) is None:
                if not _is_stem(order, name):
                    return name
                break
    return None


def _is_block(model: nn.Module, name: str, strict: bool) -> bool:
    """Whether `name` is a child of the model or a member of a Sequential, ModuleList or ModuleDict; strict:
    and so is each module above it (never inside a block's branch: Inception's mixed_7a.branch2.1 is a
    member of a Sequential, but of one branch of mixed_7a)."""
    parent = name.rpartition(".")[0]
    while parent:
        if not isinstance(model.get_submodule(parent), CONTAINERS):
            return False
        if not strict:
            return True
        parent = parent.rpartition(".")[0]
    return True


def is_stem(model: nn.Module, name: str) -> bool:
    """Whether layer `name` ends before a quarter of the model's layers with weights have run (see
    _is_stem); False when the probe did not run it."""
    order = _forward_order(model)
    return order is not None and name in order.finished and _is_stem(order, name)


def zero_output(model: nn.Module, name: str) -> bool:
    """Whether layer `name` output zero everywhere in the probe pass (a residual branch whose last norm
    starts at zero, as SHViT's mixers): no picture can be made from it."""
    order = _forward_order(model)
    return order is not None and name in order.zero


def tensor_output(model: nn.Module, name: str) -> bool:
    """Whether layer `name` returned a map or tokens (a 3-D or 4-D tensor) in the probe pass (True when
    the probe could not tell): HRNet's stages return lists of maps, which no feature reader can read."""
    order = _forward_order(model)
    return order is None or len(order.shapes.get(name, ())) in (3, 4)


def _is_stem(order: _ForwardOrder, name: str) -> bool:
    """Whether fewer than a quarter of the model's layers with weights have run when `name` ends (LeViT's
    conv stem, PiT's and Hiera's patch embeddings): its map is the input barely processed, not what the
    model decided on. (Counted before, not after: CoaT's parallel blocks hold most of its layers and run
    after its serial blocks, whose last output is no stem.)"""
    done = set(order.finished[:order.finished.index(name) + 1])
    return sum(layer in done for layer in order.weighted) < len(order.weighted) / 4


def readable_problem(model: nn.Module, name: str, gradient: bool = True) -> str | None:
    """Why no map reader (Grad-CAM, activations, the feature readers) can read layer `name` at the probe's
    input size: it is not spatial or its score gradient reaches one position (:func:`spatial_problem`;
    gradient=False leaves reach out, for readers of the activations alone, as synthesis is), it runs more
    than once, its rows are not images, or its layout is unknown. None when one can."""
    order = _forward_order(model)
    if order is not None and name in order.not_tensor:
        return f"{name} returns a {order.not_tensor[name]}, not a tensor"
    shape = _probed_shape(model, name)
    if order is None or shape is None:
        return None
    if len(shape) not in (3, 4):
        return f"{name} gives an output of shape {shape}, not a map or tokens"
    problem = spatial_problem(model, name, gradient)
    if problem is not None:
        return problem
    if order.calls.get(name, 0) > 1:
        return f"{name} runs {order.calls[name]} times per forward pass"
    if folds_the_batch(model, name):
        return f"{name} gives {shape[0]} rows for one image (its rows are not images)"
    try:
        layout = output_layout(model, torch.empty(shape, device="meta"), probe_size(model))
    except LayoutError as error:
        return f"{name}: {error}"
    grid = shape[2:] if layout.kind == MAP else shape[1:3] if layout.kind == CHANNELS_LAST else None
    if grid is not None and not grid_like(*probe_size(model), *grid):
        return f"{name} gives {shape}, whose last two sides are no grid of the input (attention's heads x tokens?)"
    return None


def readable_advice(model: nn.Module) -> str:
    """The end of a refusal: a layer the map readers accept on this model (checked by the probe pass,
    :func:`last_spatial_block`), or that none exists at this input size."""
    name = last_spatial_block(model)
    if name is not None:
        return f"name a layer (see nnvis layers): {name} is the last one a map reader can read here"
    return _none_readable(model)


def _none_readable(model: nn.Module) -> str:
    size = "x".join(map(str, probe_size(model)))
    return (f"no layer of {type(model).__name__} gives a spatial output the class score depends on at "
            f"{size} px that a map reader can read")


def default_layer(model: nn.Module) -> str:
    """The layer Grad-CAM and the other layer readers use by default, per architecture family.

    Models that start with a patch embedding (a Conv2d whose kernel equals its
    stride: ViT, DeiT, Swin, ConvNeXt) are read from their last block, found
    from one probe pass (:func:`block_default_layer`): for token models the last
    block's first LayerNorm (the normalized tokens its attention reads; after the
    last block only the class token reaches the head, so later token layers
    carry no gradient on the patches), for Swin and ConvNeXt the last stage. Their
    last Conv2d is the patch embedding or a depthwise conv inside a block: never
    the default.

    Convnets: the rectified output of the last Conv2d (when the probe pass shows it cannot carry a
    spatial explanation, :func:`spatial_problem`, the output of the last block with a spatial map,
    :func:`last_spatial_block`). The paper weights the last
    conv layer's *rectified* feature maps; at the raw conv output the negative
    parts cancel the positive ones and many maps are all zero (on the demo model,
    70% of images). So: the activation module that directly follows the last
    Conv2d in its Sequential, past a BatchNorm, as in VGG, AlexNet, MobileNet and
    the demo net (:func:`rectified_output`); else the outermost block that holds
    the last conv as its final part (a ResNet stage, whose last block ends with its
    ReLU; a whole Inception module; a DenseNet block); else the last Conv2d itself.
    (A layer that turns out to run twice per forward pass is refused when it is captured.)
    """
    if patch_size(model) is not None:
        try:
            name = block_default_layer(model)
        except LayerNotFound as refused:  # no run of blocks (CrossViT's two branches): the last readable one
            fallback = last_spatial_block(model)
            if fallback is None:
                raise LayerNotFound(f"{error_line(refused)}; {_none_readable(model)}") from None
            return fallback
        return _spatial_or_refused(model, name)
    try:
        name = refuse_a_non_tensor(model, _convnet_default(model))
    except LayerNotFound:  # a stem, or a module with no tensor output: the last readable block, if any
        fallback = last_spatial_block(model)
        if fallback is None:
            raise
        return fallback
    name = enclosing_block(model, name)
    problem = readable_problem(model, name)
    if problem is None:
        return name
    return _last_block_instead(model, name, problem)


def enclosing_block(model: nn.Module, name: str) -> str:
    """`name`, or the innermost module holding it that is a block: a child of the model or a member of a
    Sequential, ModuleList or ModuleDict. A conv's Mlp inside a transformer-style block (EfficientFormerV2,
    CoAtNet, PVT) is a residual branch, read before its add; its block's output is after it."""
    while "." in name:
        parent = name.rpartition(".")[0]
        if isinstance(model.get_submodule(parent), CONTAINERS):
            return name
        name = parent
    return name


def _spatial_or_refused(model: nn.Module, name: str) -> str:
    """A token model's default block, unless it cannot carry a spatial explanation (CrossViT's class-token
    projections, CoaT's final norm): then the last block a map reader can read, or a one-line refusal."""
    problem = readable_problem(model, name)
    return name if problem is None else _last_block_instead(model, name, problem)


def _last_block_instead(model: nn.Module, name: str, problem: str) -> str:
    """The rule's pick `name` has `problem`: the last block a map reader can read (the convnet rule read
    past the pooling, a zero branch, a token layer only the class token leaves), else LayerNotFound."""
    fallback = last_spatial_block(model)
    if fallback is None:
        raise LayerNotFound(f"{type(model).__name__}: the default rule picks {name}, but {problem}; and "
                            f"{_none_readable(model)}")
    return fallback


def _convnet_default(model: nn.Module) -> str:
    conv_name = last_conv_layer(model)
    refuse_a_stem(model, conv_name)
    parent_name = conv_name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential):
        rectified = rectified_output(model, conv_name)
        if rectified != conv_name:
            return rectified
        # conv + BatchNorm and no activation (RegNet's last conv): that is a residual branch, read its block
    if not parent_name or isinstance(parent, nn.ModuleList):
        return conv_name
    # Climb while the block ends its container (nothing after it but activations): a ResNet block ->
    # its stage, a RegNet branch -> its block (add, then ReLU) -> the trunk, an Inception branch -> the
    # whole Inception module (all branches), a dense layer -> its block.
    block = parent_name
    while "." in block:
        container_name, _, child_name = block.rpartition(".")
        container = model.get_submodule(container_name)
        if isinstance(container, nn.ModuleList) or not _ends(container, child_name):
            break
        block = container_name
    return block


def refuse_a_stem(model: nn.Module, conv_name: str) -> None:
    """LayerNotFound when the last Conv2d is a stem: most of the layers with weights run after it, and
    some of them are Linear layers on tokens or channels-last maps (LeViT: a conv stem, then attention
    blocks). The convnet rule would read the stem's feature map and caption it as the usual default."""
    order = _forward_order(model)
    if order is None or conv_name not in order.position:
        return
    later = [name for name in order.weighted if order.position[name] > order.position[conv_name]]
    tokens = [name for name in later if name in order.linear_on_tokens]
    if tokens and len(later) > len(order.weighted) / 2:
        raise LayerNotFound(
            f"{type(model).__name__}: its last Conv2d ({conv_name}) is a stem ({len(later)} of its "
            f"{len(order.weighted)} layers with weights run after it, {len(tokens)} of them Linear layers on "
            f"tokens), so there is no default layer for it; {readable_advice(model)}")


def refuse_a_non_tensor(model: nn.Module, name: str) -> str:
    """`name`, unless the probe pass saw it return something other than one tensor: PiT's last Conv2d
    sits in a token-pooling module that returns (tokens, class tokens), which no map reader can read.
    Refused here with a name to try, rather than failing in every plugin call."""
    order = _forward_order(model)
    if order is None or name not in order.not_tensor:
        return name
    raise LayerNotFound(
        f"{type(model).__name__}: the default rule picks {name}, which returns a {order.not_tensor[name]}, "
        f"not a tensor, so there is no default layer for it; {readable_advice(model)}")


class _ForwardOrder:
    """One probe pass's record: when each module first ran, which hold weights, which are Linear layers
    on inputs of three or more dimensions, which returned something other than a tensor (and what), and
    the last module whose output was spatial."""

    def __init__(self) -> None:
        self.position: dict[str, int] = {}
        self.weighted: list[str] = []
        self.linear_on_tokens: set[str] = set()
        self.not_tensor: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # each module's first output shape
        self.zero: set[str] = set()  # modules whose first output is zero everywhere
        self.calls: dict[str, int] = {}
        self.finished: list[str] = []  # modules with a tensor output, in the order their forward ended
        # modules with a (N, C, H, W), (N, H, W, C) or (N, T, C) output at more than one position of which
        # the top class score's gradient is non-zero; None when the probe's backward pass failed
        self.reached: set[str] | None = set()
        self.graded = False  # whether any recorded output got a non-zero gradient


_ORDER: "weakref.WeakKeyDictionary[nn.Module, _ForwardOrder | None]" = weakref.WeakKeyDictionary()


def _forward_order(model: nn.Module) -> _ForwardOrder | None:
    """The probe pass's _ForwardOrder (cached per model), or None when the model rejects the probe."""
    if model in _ORDER:
        return _ORDER[model]
    order = _ForwardOrder()
    names = {module: name for name, module in model.named_modules() if name}

    def record(module: nn.Module, args, output) -> None:
        name = names[module]
        if name not in order.position:
            order.position[name] = len(order.position)
            if next(module.parameters(recurse=False), None) is not None:
                order.weighted.append(name)
            if isinstance(module, nn.Linear) and args and getattr(args[0], "dim", lambda: 0)() >= 3:
                order.linear_on_tokens.add(name)
            if not isinstance(output, torch.Tensor):
                order.not_tensor[name] = type(output).__name__
            else:
                order.shapes[name] = tuple(output.shape)
                if not output.any():
                    order.zero.add(name)
                if output.dim() in (3, 4) and output.requires_grad:
                    output.register_hook(functools.partial(_note_reach, order, name))
        order.calls[name] = order.calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor):
            order.finished.append(name)

    handles = [module.register_forward_hook(record) for module in names]
    parameter = next(model.parameters(), None)
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        # noise, not zeros: a branch that is zero at initialization shows as zero only on its own
        with torch.inference_mode(False), torch.enable_grad():
            noise = torch.rand(1, 3, *probe_size(model), generator=torch.Generator().manual_seed(0))
            noise = noise.to(parameter.device if parameter is not None else "cpu").requires_grad_()
            _trace_reach(order, model(noise), noise)
        _ORDER[model] = order
    except Exception:  # noqa: BLE001 - an input size the model rejects: nothing known
        _ORDER[model] = None
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return _ORDER[model]


def _note_reach(order: _ForwardOrder, name: str, grad: torch.Tensor) -> None:
    """Record `name` as reached when its output's gradient is non-zero at more than one position, read
    both as (N, C, positions...) and as (N, positions..., C): a layout that is neither is never reached
    at fewer positions along both, so the smaller count errs towards "not reached"."""
    if order.reached is None:
        return
    magnitude = grad.detach().abs()
    order.graded = order.graded or bool(magnitude.any())
    along_channels_first = int((magnitude.sum(1) > 0).sum())
    along_channels_last = int((magnitude.sum(-1) > 0).sum())
    if min(along_channels_first, along_channels_last) > 1:
        order.reached.add(name)


def _trace_reach(order: _ForwardOrder, output: object, inputs: torch.Tensor) -> None:
    """Back-propagate the probe's top class score to the input (parameters keep no gradient), so that
    every recorded output notes whether that gradient reaches it (_note_reach); the probe's forward
    facts stand when the model's output holds no scores, its backward pass fails, or the score's gradient
    is zero at every module's output (a zero-initialized head, as torchvision's ViT's: nothing is reached,
    and that says nothing about the layers)."""
    from nnvis_core.models.logits import OutputError, logits_of

    try:
        scores = logits_of(output)
        score = scores.reshape(scores.shape[0], -1)[0].max()
        (gradient,) = torch.autograd.grad(score, inputs, allow_unused=True)
    except (OutputError, RuntimeError):
        gradient = None
    if gradient is None or not order.graded:
        order.reached = None


def reached(model: nn.Module, name: str) -> bool:
    """Whether the probe's top class score has a non-zero gradient at more than one position of layer
    `name`'s output (True when the probe could not tell)."""
    order = _forward_order(model)
    return order is None or order.reached is None or name not in order.shapes or name in order.reached


def _ends(container: nn.Module, child: str) -> bool:
    """Whether `child` is the last child of `container` but for activation modules after it."""
    names = list(dict(container.named_children()))
    return all(isinstance(getattr(container, name), ACTIVATIONS) for name in names[names.index(child) + 1:])


_BLOCKS: "weakref.WeakKeyDictionary[nn.Module, tuple[list[str], str]]" = weakref.WeakKeyDictionary()


INPUT_SIZE_ATTRIBUTE = "_nnvis_input_size"


def remember_input_size(model: nn.Module, size: tuple[int, int]) -> None:
    """The input size a loaded model's preprocessing gives it (load_model tells it here), which the
    layer probes use first: a 64 px model probed at 224 px may reject the probe or show other maps.
    Kept on the module itself, so that its copies (the sanity check's randomized ones) know it too."""
    setattr(model, INPUT_SIZE_ATTRIBUTE, (int(size[0]), int(size[1])))
    _ORDER.pop(model, None)
    _BLOCKS.pop(model, None)


def forget_input_size(model: nn.Module) -> None:
    """Take remember_input_size's note off a model given in memory (it goes back as it came)."""
    if INPUT_SIZE_ATTRIBUTE in vars(model):
        delattr(model, INPUT_SIZE_ATTRIBUTE)


def probe_size(model: nn.Module) -> tuple[int, int]:
    """An input size the model accepts: the size its preprocessing gives it (remember_input_size),
    torchvision ViT's image_size, the size timm's patch embedding was built for (which `img_size=` may
    have changed from the pretrained config, and which a strict one asserts), timm's configured size,
    else 224."""
    remembered = getattr(model, INPUT_SIZE_ATTRIBUTE, None)
    if remembered is not None:
        return remembered
    size = getattr(model, "image_size", None)
    if isinstance(size, int):
        return size, size
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(built, (tuple, list)) and len(built) == 2 and all(isinstance(s, int) for s in built):
        return int(built[0]), int(built[1])
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if isinstance(config, dict) and len(config.get("input_size", ())) == 3:
        return int(config["input_size"][1]), int(config["input_size"][2])
    return 224, 224


def repeated_blocks(model: nn.Module) -> tuple[list[str], str]:
    """The run of blocks a model with a patch embedding is built of, and their output kind.

    One no-grad pass at :func:`probe_size` records every module's output; the
    blocks are the same-class children of one container whose outputs are
    spatial (tokens, channels-last or feature maps) and that hold parameters, two or
    more of one class, and of all such runs the one whose last block finishes last is the model's (ViT
    encoder blocks; Swin's and ConvNeXt's stages). Cached per model.
    """
    if model in _BLOCKS:
        return _BLOCKS[model]
    height, width = probe_size(model)
    parameter = next(model.parameters(), None)
    probe = torch.zeros(1, 3, height, width, device=parameter.device if parameter is not None else "cpu")
    order: dict[str, int] = {}
    layouts: dict[str, str] = {}
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, args, output) -> None:
        name = names.get(module, "")
        # one row per image: TNT's inner blocks run on images x patches, MViT's pooling on images x heads
        if name and isinstance(output, torch.Tensor) and output.dim() in (3, 4) and len(output) == len(probe):
            try:
                layout = output_layout(model, output, (height, width))
            except LayoutError:
                return
            if layout.kind != MAP or min(output.shape[-2:]) > 1:
                order[name] = len(order)
                layouts[name] = layout.kind

    handles = [module.register_forward_hook(record) for module in names if names[module]]
    try:
        with torch.no_grad():
            model(probe)
    except Exception as error:  # noqa: BLE001 - the message below says what to do instead
        raise LayerNotFound(f"cannot pick a default layer for {type(model).__name__}: a {height}x{width} probe "
                            f"failed ({type(error).__name__}); name one (see nnvis layers)") from None
    finally:
        for handle in handles:
            handle.remove()
    runs: dict[str, list[list[str]]] = {}  # container name -> its runs of blocks
    for container_name, container in model.named_modules():
        by_class: dict[type, list[str]] = {}
        for child_name, child in container.named_children():
            name = f"{container_name}.{child_name}" if container_name else child_name
            # Parameter-free children (timm's Identity placeholders for norm_pre, patch_drop and a
            # pooled model's final norm; dropouts) can repeat too, but they are no blocks; nor are
            # single layers (an attention's k and v Linear layers, which read every token).
            if name in order and next(child.parameters(), None) is not None and next(child.children(), None):
                by_class.setdefault(type(child), []).append(name)
        runs[container_name] = [blocks for blocks in by_class.values() if len(blocks) >= 2]
    candidates = [blocks for found in runs.values() for blocks in found]
    best = max(candidates, key=lambda blocks: order[blocks[-1]], default=[])
    # A stem and a trunk of one class (timm's ConvNeXt: Sequential `stem`, Sequential `stages`)
    # form a run of two whose last "block" is the whole trunk: go down to the longer run it holds.
    while best:
        longer = [blocks for blocks in runs.get(best[-1], []) if len(blocks) > len(best)]
        if not longer:
            break
        best = max(longer, key=lambda blocks: order[blocks[-1]])
    if not best:
        raise LayerNotFound(f"{type(model).__name__} has a patch embedding but no repeated blocks with spatial "
                            "outputs to read by default")
    best = _trunk_before_class_attention(model, best, runs, order)
    _BLOCKS[model] = (best, layouts[best[-1]])
    return _BLOCKS[model]


def block_default_layer(model: nn.Module) -> str:
    """The default layer of a model built of repeated blocks after a patch embedding (see default_layer):
    the last block (:func:`repeated_blocks`), and for token models its first LayerNorm."""
    blocks, kind = repeated_blocks(model)
    block = blocks[-1]
    if kind == TOKENS:
        norms = [name for name, child in model.get_submodule(block).named_children() if isinstance(child, nn.LayerNorm)]
        block = f"{block}.{norms[0]}" if norms else block
    return block


def _trunk_before_class_attention(model: nn.Module, best: list[str], runs: dict[str, list[list[str]]],
                                  finished: dict[str, int]) -> list[str]:
    """`best`, or, when it is a short run of class-attention blocks (XCiT's: they read the class token
    joined to the patch tokens, so each outputs one token more than the trunk, and update only that
    token), the longer run that ends right before it (the trunk) followed by it: the picture-making
    plugins then spread over the trunk, not over two blocks at the end."""
    order = _forward_order(model)
    shapes = order.shapes if order is not None else {}
    before_it = [run for found in runs.values() for run in found
                 if len(run) > len(best) and finished[run[-1]] < finished[best[0]] and run[-1] in shapes]
    if not before_it or best[0] not in shapes:
        return best
    trunk = max(before_it, key=lambda run: finished[run[-1]])
    before, after = shapes[trunk[-1]], shapes[best[0]]
    return trunk + best if len(before) == len(after) == 3 and after[1] == before[1] + 1 else best


def middle_block(model: nn.Module) -> str:
    """The block halfway through a model with a patch embedding: mid-level features, as the middle
    conv of a convnet (the activations view's default)."""
    blocks = model_blocks(model)
    return blocks[len(blocks) // 2]


def model_blocks(model: nn.Module) -> list[str]:
    """The blocks the picture-making plugins spread over: the run of :func:`repeated_blocks`, or, for a
    model built of no such run (CrossViT: two branches of blocks inside each multi-scale block, which
    returns a list), every outermost block whose output a map reader can read, in forward order."""
    try:
        return repeated_blocks(model)[0]
    except LayerNotFound as refused:
        order = _forward_order(model)
        readable = [] if order is None else [
            name for name in dict.fromkeys(order.finished)
            if _is_block(model, name, strict=False) and next(model.get_submodule(name).parameters(), None) is not None
            and readable_problem(model, name, gradient=False) is None and not _is_stem(order, name)]
        outermost = [name for name in readable if not any(name.startswith(other + ".") for other in readable)]
        if not outermost:
            raise LayerNotFound(f"{error_line(refused)}; {readable_advice(model)}") from None
        return outermost


def resolve_layer_name(model: nn.Module, name: str) -> str:
    """The module name a `layer` parameter means: 'auto' and 'last_conv' resolved for this model."""
    if name == "auto":
        return default_layer(model)
    if name == "last_conv":
        return last_conv_layer(model)
    return name


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """A submodule given as itself, its named_modules() name, 'last_conv' or 'auto' (default_layer)."""
    if isinstance(layer, nn.Module):
        return layer
    return find_layer(model, resolve_layer_name(model, layer))


def feature_source(model: nn.Module, name: str) -> tuple[nn.Module, bool]:
    """(module, read_input) for a feature-space view: the module to hook, and whether its
    input (not its output) is the feature. 'penultimate' is the input of the last Linear
    layer (the last Conv2d's output when there is none)."""
    if name == PENULTIMATE:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1], True
        return find_layer(model, last_conv_layer(model)), False
    return resolve_layer(model, name), False
