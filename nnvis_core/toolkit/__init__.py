"""The method toolkit: what the built-in methods are made of, public for plugin authors.

Everything here takes a model and a normalized ``(N, C, H, W)`` batch (or a
plugin's ``ctx`` and ``item``) and leaves the model as it found it. The
built-in plugin families use only this toolkit and import nothing from one
another, so a third-party method gets exactly what a built-in gets.
docs/plugins.md (plugin API version 2) walks through it.

- attribution: :class:`AttributionPlugin`, :class:`Explanation`, :data:`TARGET`,
  :data:`FAITHFULNESS_STEPS`, :func:`reduce_param`
- targets: :data:`Target`, :func:`target_scores`, :func:`resolve_target` (predicted/true/index/name)
- layers: :func:`resolve_layer`, :func:`default_layer`, :func:`feature_source`, :func:`find_layer`, ...
- layer outputs: :func:`output_layout` (feature maps, tokens with prefix tokens and a patch grid,
  channels-last), :class:`Layout` with ``to_map``, :func:`as_map`
- hooks: :func:`captured_output`, :func:`forward_until`, :func:`captured`
- attention: :func:`captured_attention` (weights even from fused kernels), :func:`global_attention`
- the guard: :func:`preserved`, :func:`frozen` (eval mode, frozen weights), :func:`guarded_state`
- gradients and backward rules: :func:`gradient`, :func:`relu_rule`
- images: :func:`model_baseline` (black, grey, blur, noise), :func:`gaussian_blur`, :func:`rgb_view`
- scoring: :func:`target_probabilities` (chunked by a memory budget), :func:`chunk_size`
- faithfulness: :func:`deletion_insertion`, :func:`mask_share`
- precision: :func:`exact_float32` (no TF32, deterministic cuDNN: what a run uses on a GPU)
- featvis (a subpackage, imported on its own): the feature-visualization renderer: objectives (channel,
  direction, class, ...), parameterizations, transforms and the optimization loop
- cue conflict: :func:`cue_conflict_name`, :func:`parse_cue_conflict_name`, :func:`read_cue_conflict_csv`,
  :func:`write_cue_conflict_csv` (the labels of shape-vs-texture images)
"""

from nnvis_core.contract.targets import TargetError, resolve_target
from nnvis_core.models.layers import (
    ACTIVATIONS,
    LAYER_KEYWORDS,
    PENULTIMATE,
    RECTIFIERS,
    LayerNotFound,
    conv_layers,
    default_layer,
    error_line,
    feature_source,
    find_layer,
    first_conv,
    folds_the_batch,
    is_stem,
    last_conv_layer,
    middle_block,
    model_blocks,
    preactivation,
    readable_advice,
    readable_problem,
    rectified_output,
    repeated_blocks,
    resolve_layer,
    resolve_layer_name,
    tensor_output,
    zero_output,
)
from nnvis_core.models.outputs import Layout, LayoutError, output_layout, patch_size, token_layout
from nnvis_core.toolkit.attention import Attention, captured_attention, global_attention
from nnvis_core.toolkit.attribution import (
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionPlugin,
    Explanation,
    layer_name,
    reduce_param,
)
from nnvis_core.toolkit.cue_conflict_labels import (
    CUE_CONFLICT_CSV,
    CueConflictError,
    cue_conflict_name,
    parse_cue_conflict_name,
    read_cue_conflict_csv,
    write_cue_conflict_csv,
)
from nnvis_core.toolkit.faithfulness import Curves, deletion_insertion, mask_share, pixel_order
from nnvis_core.toolkit.gradients import fresh_input_gradient, gradient, reduce_channels
from nnvis_core.toolkit.guard import frozen, guarded_state, model_state, preserved
from nnvis_core.toolkit.hooks import captured, captured_output, forward_until
from nnvis_core.toolkit.imaging import (
    BASELINES,
    gaussian_blur,
    model_baseline,
    normalizer,
    pixel_baseline,
    rgb_view,
    to_numpy,
)
from nnvis_core.toolkit.maps import as_map, upsample_to_input
from nnvis_core.toolkit.precision import exact_float32
from nnvis_core.toolkit.rules import UnsupportedActivation, relu_rule
from nnvis_core.toolkit.scoring import (
    MEMORY_MB,
    bytes_per_image,
    chunk_size,
    in_chunks,
    inference_bytes,
    leaf_output_sizes,
    output_and_bytes,
    target_probabilities,
)
from nnvis_core.toolkit.targets import (
    AttributionError,
    Target,
    check_target_count,
    chunk_target,
    repeat_target,
    select_target,
    target_scores,
)

__all__ = [
    "exact_float32",
    "CUE_CONFLICT_CSV", "CueConflictError", "cue_conflict_name", "parse_cue_conflict_name", "read_cue_conflict_csv",
    "write_cue_conflict_csv",
    "ACTIVATIONS", "as_map", "upsample_to_input", "Attention", "AttributionError", "AttributionPlugin", "BASELINES",
    "bytes_per_image",
    "captured", "captured_attention", "captured_output", "check_target_count", "chunk_size", "chunk_target",
    "conv_layers", "Curves", "default_layer", "deletion_insertion", "error_line", "Explanation", "FAITHFULNESS_STEPS",
    "feature_source", "find_layer", "first_conv", "folds_the_batch", "forward_until", "fresh_input_gradient",
    "frozen", "gaussian_blur", "in_chunks", "is_stem",
    "global_attention", "gradient", "guarded_state", "inference_bytes", "last_conv_layer", "LAYER_KEYWORDS",
    "layer_name",
    "LAYER_PARAM_HELP", "LayerNotFound", "Layout", "LayoutError", "leaf_output_sizes", "mask_share", "middle_block",
    "model_blocks",
    "MEMORY_MB", "model_baseline", "model_state", "normalizer", "output_and_bytes", "output_layout", "patch_size",
    "PENULTIMATE",
    "pixel_baseline", "pixel_order", "preactivation", "preserved", "readable_advice", "readable_problem",
    "rectified_output", "repeated_blocks", "RECTIFIERS",
    "reduce_channels", "reduce_param", "relu_rule", "repeat_target", "resolve_layer", "resolve_layer_name",
    "resolve_target", "rgb_view", "select_target", "Target", "TARGET", "target_probabilities", "target_scores",
    "TargetError", "tensor_output", "to_numpy", "token_layout", "UnsupportedActivation", "zero_output",
]
