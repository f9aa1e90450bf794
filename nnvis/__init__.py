"""nnvis from Python: `nnvis.run` for a whole report, `nnvis.explain` for one map.

A thin facade over nnvis_core (the run) and nnvis_reports (the page); the command
line (`nnvis report`) and this API run the same code and write the same report.

    import nnvis
    run = nnvis.run("examples/demo/images", "demo", plugins=["gradcam", "occlusion"], occlusion={"window": 16})
    run                      # in Jupyter: the report inline (leaderboard, matrix, maps)
    run.leaderboard          # the method leaderboard rows
    run.result("circle/circle_00.png", "gradcam").artifacts[0].values   # the map as an array
    run.save("out")          # the report the CLI writes, to out/index.html
    nnvis.explain("demo", "examples/demo/images/circle/circle_00.png", "gradcam").map   # one map, a tensor

The modules, by job: running (nnvis.run), results (the Run it returns), explaining
(nnvis.explain), models (nn.Module objects as a model source), images (files, PIL images,
arrays and tensors as images) and notebook (what Jupyter shows).
"""

from nnvis.explaining import Explained, ExplainedBatch, explain
from nnvis.results import Run
from nnvis.running import run
from nnvis_core import __version__
from nnvis_core.run.plan import UsageError
from nnvis_core.torchvision_compat import install_import_hook

install_import_hook()  # a later `import torchvision` works beside a CPU-only torch (README: From Python)

__all__ = ["Explained", "ExplainedBatch", "Run", "UsageError", "__version__", "explain", "run"]
