"""nnvis from Python: `nnvis.run` for a whole report, `nnvis.explain` for one map (nnvis.api).

A thin facade over nnvis_core (the run) and nnvis_reports (the page); the command
line (`nnvis report`) and this API run the same code and write the same report.
"""

from nnvis.api import Explained, Run, UsageError, explain, run
from nnvis_core import __version__

__all__ = ["Explained", "Run", "UsageError", "__version__", "explain", "run"]
