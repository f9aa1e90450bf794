"""Attribution methods: each a module with a Captum-like ``attribute(model, inputs, target, ...)``
and a built-in plugin registered through its own entry point.

>>> from nnvis_plugins.attribution import guided_backprop, integrated_gradients, gradcam
>>> maps = guided_backprop.attribute(model, images, target=3)

Modules: deconvnet, guided_backprop (backward rules, rules.py), smoothgrad,
integrated_gradients, gradcam, guided_gradcam, gradient_x_input; faithfulness
(deletion/insertion AUC, mask share); sanity (cascading randomization).
"""

from nnvis_core.toolkit import AttributionError, UnsupportedActivation, relu_rule  # noqa: F401 - part of this API
from nnvis_plugins.attribution import (  # noqa: F401
    deconvnet,
    gradcam,
    gradient_x_input,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    smoothgrad,
)
