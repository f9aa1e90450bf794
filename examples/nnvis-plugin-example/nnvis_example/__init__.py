"""An example nnvis plugin package.

activations: the `mean-activations` plugin, a table and a chart of each layer's
mean activation for one image. zoo: the `zoo:` model source, which loads models
from a folder that serves as a company's model registry.
"""
