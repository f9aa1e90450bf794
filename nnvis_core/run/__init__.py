"""The run's building blocks: its configuration and plan, the plugin registry, one plugin
call, the result cache and the sink protocol results go to.

`nnvis_core.runner` puts them together; the engines (`nnvis_core.engines`) use them to run
the image-scope calls here or on workers.
"""
