"""The class activation map family beyond Grad-CAM: one small module per method, on the toolkit's CAM parts."""
