"""A small, real convnet trained on procedural shapes, shipped with nnvis.

It lets every visualization be tried (and tested) without downloading a
model, and its images come with ground-truth object masks, so a report can
show whether a method points at the object.
"""

from nnvis_core.demo.model import DEMO_SPEC, DemoNet, load_demo_model
from nnvis_core.demo.shapes import CLASS_NAMES

__all__ = ["CLASS_NAMES", "DemoNet", "load_demo_model", "DEMO_SPEC"]
