"""Plugin API version 1's home of the attribution base class; it now lives in nnvis_core.toolkit.

Third-party plugins written against version 1 import it from here and keep
working; new code imports from ``nnvis_core.toolkit``.
"""

from nnvis_core.toolkit.attribution import (  # noqa: F401
    FAITHFULNESS_STEPS,
    LAYER_PARAM_HELP,
    TARGET,
    AttributionPlugin,
    Explanation,
    reduce_param,
)
