"""The pluggy project name and the hook implementation marker, below every other core module."""

import pluggy

PROJECT = "nnvis"

hookimpl = pluggy.HookimplMarker(PROJECT)
