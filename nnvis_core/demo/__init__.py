"""Small, real models trained on procedural shapes, shipped with nnvis.

They let every visualization be tried (and tested) without downloading a
model, and their images come with ground-truth object masks, so a report can
show whether a method points at the object.  The convnet (`--model demo`)
serves the gradient and feature methods; the ViT (`--model demo-vit`,
torchvision's VisionTransformer) serves the transformer methods.
"""

from nnvis_core.demo.model import DEMO_SPEC, DemoNet, load_demo_model
from nnvis_core.demo.shapes import CLASS_NAMES
from nnvis_core.demo.vit import build_demo_vit, load_demo_vit

__all__ = ["CLASS_NAMES", "DEMO_SPEC", "DemoNet", "build_demo_vit", "load_demo_model", "load_demo_vit"]
