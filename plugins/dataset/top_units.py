"""placeholder"""
from nnvis_core import hookimpl


@hookimpl
def nnvis_register_plugins(register) -> None:
    pass
