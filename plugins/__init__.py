"""nnvis's built-in visualization plugins.

Each module is registered through the `nnvis` entry-point group in
pyproject.toml, exactly as a third-party plugin would be.
"""
