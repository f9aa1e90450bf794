"""The plugin contract: what a plugin declares, receives and returns.

A plugin author needs only this room (and `nnvis_core.toolkit` for the method
helpers): the Plugin base class and its parameters, the hooks it implements, the
run context and image stream it is given, and the artifacts it returns.
"""
