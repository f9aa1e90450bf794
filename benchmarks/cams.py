"""Time each CAM against pytorch-grad-cam and LRP against Zennit, for the same map, side by side.

    python benchmarks/cams.py                          # resnet50, one 224-pixel image
    python benchmarks/cams.py --perturbation           # also Score-CAM and Ablation-CAM (minutes each)
    python benchmarks/cams.py --only-perturbation --size 112   # only those, at a quarter of the cost
    python benchmarks/cams.py --model resnet18 --size 112 --repeats 3

Each contender produces the map a user looks at: nnvis's unrectified map at the
layer, rectified and upsampled to the image; pytorch-grad-cam's `cam(input, targets)`
(which also min-max scales and resizes with OpenCV). Score-CAM and Ablation-CAM run
one forward pass per channel (2,048 at resnet50's layer4): each side at its batched
best, pytorch-grad-cam with `batch_size` chosen from --batches by timing, nnvis with
`memory_mb` chosen from --budgets the same way (on a CPU, chunks that fit its caches
run faster per image than larger ones). LRP: nnvis's composite against Zennit's, both canonized
per call. Best of --repeats after one warm-up, the contenders interleaved. The ratio
is nnvis's time over the reference's. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import warnings
from contextlib import redirect_stderr

import torch
from common import best_times, load_model

from nnvis_core.toolkit.cams import upsample
from nnvis_plugins.attribution import gradcam
from nnvis_plugins.cams import ablationcam, eigencam, gradcam_plusplus, hirescam, layercam, scorecam, xgradcam

GRADIENT = {  # nnvis's map, pytorch-grad-cam's class name
    "gradcam": (lambda m, x, t, layer: gradcam.layer_attribute(m, x, t, layer, relu=False), "GradCAM"),
    "gradcam_plusplus": (lambda m, x, t, layer: gradcam_plusplus.layer_attribute(m, x, t, layer)[0],
                         "GradCAMPlusPlus"),
    "xgradcam": (lambda m, x, t, layer: xgradcam.layer_attribute(m, x, t, layer)[0], "XGradCAM"),
    "hirescam": (lambda m, x, t, layer: hirescam.layer_attribute(m, x, t, layer)[0], "HiResCAM"),
    "gradcam_elementwise": (lambda m, x, t, layer: hirescam.layer_attribute(m, x, t, layer, True)[0],
                            "GradCAMElementWise"),
    "layercam": (lambda m, x, t, layer: layercam.layer_attribute(m, x, t, layer)[0], "LayerCAM"),
    "eigencam": (lambda m, x, t, layer: eigencam.layer_attribute(m, x, t, layer, center=True)[0], "EigenCAM"),
    "eigen_gradcam": (lambda m, x, t, layer: eigencam.layer_attribute(m, x, t, layer, center=True,
                                                                      gradients=True)[0], "EigenGradCAM"),
}
PERTURBATION = {  # nnvis's map at a memory budget (MiB), pytorch-grad-cam's class name
    "scorecam": (lambda mb: lambda m, x, t, layer: scorecam.layer_attribute(m, x, t, layer, mb)[0], "ScoreCAM"),
    "ablationcam": (lambda mb: lambda m, x, t, layer: ablationcam.layer_attribute(m, x, t, layer, mb)[0],
                    "AblationCAM"),
}
LRP = {"epsilon-plus": "EpsilonPlus", "epsilon-gamma-box": "EpsilonGammaBox",
       "epsilon-alpha2-beta1": "EpsilonAlpha2Beta1"}


def ours(method, model, x, target, layer):
    def run():
        cam = method(model, x, target, layer).relu()
        return upsample(cam, tuple(x.shape[-2:]))
    return run


def theirs(pgc, name, model, x, target, layer, batch_size=None):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = getattr(pgc, name)(model=model, target_layers=[layer])
    if batch_size is not None:
        cam.batch_size = batch_size

    def run():
        with redirect_stderr(io.StringIO()):  # its progress bars
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return run


def lrp_contenders(model, x, target, composite):
    from zennit import composites as zennit_composites
    from zennit import torchvision as zennit_torchvision
    from zennit.attribution import Gradient

    from nnvis_core.models.loaded import IMAGENET_MEAN, IMAGENET_STD
    from nnvis_plugins.lrp import attribute, box_bounds

    low, high = box_bounds(IMAGENET_MEAN, IMAGENET_STD)
    canonizers = [zennit_torchvision.ResNetCanonizer()]
    kwargs = {"low": low, "high": high} if composite == "epsilon-gamma-box" else {}

    def nnvis_run():
        return attribute(model, x, target, composite=composite, bounds=(low, high))

    def zennit_run():
        chosen = getattr(zennit_composites, LRP[composite])(canonizers=canonizers, **kwargs)
        with Gradient(model=model, composite=chosen) as attributor:
            output = model(x)
            one_hot = torch.zeros_like(output)
            one_hot[:, target] = output[:, target]
            return attributor(x, one_hot)[1]
    return nnvis_run, zennit_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="a torchvision name (random weights)")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--perturbation", action="store_true", help="also Score-CAM and Ablation-CAM")
    parser.add_argument("--only-perturbation", action="store_true", help="only Score-CAM and Ablation-CAM")
    parser.add_argument("--batches", default="16,32,64", help="pytorch-grad-cam batch sizes tried for those")
    parser.add_argument("--budgets", default="16,32,128", help="nnvis memory_mb tried for those")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    model = load_model(args.model).eval()
    import pytorch_grad_cam as pgc  # after load_model: torchvision through nnvis's import workaround

    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    target = 3
    layer = model.get_submodule(args.layer)
    print(f"{args.model} at {args.size} px, layer {args.layer}, {torch.get_num_threads()} threads")
    print(f"{'method':<22}{'nnvis (s)':>11}{'reference (s)':>15}{'ratio':>8}")
    rows = [(name, ours(method, model, x, target, layer), theirs(pgc, cls, model, x, target, layer))
            for name, (method, cls) in GRADIENT.items() if not args.only_perturbation]
    for name, (method, cls) in PERTURBATION.items() if args.perturbation or args.only_perturbation else ():
        candidates = [theirs(pgc, cls, model, x, target, layer, int(b)) for b in args.batches.split(",")]
        timed = best_times(candidates, 1, warm_up=False)
        mine = [ours(method(float(mb)), model, x, target, layer) for mb in args.budgets.split(",")]
        mine_timed = best_times(mine, 1, warm_up=False)
        print(f"{name}: pytorch-grad-cam batch {args.batches.split(',')[timed.index(min(timed))]}, "
              f"nnvis memory_mb {args.budgets.split(',')[mine_timed.index(min(mine_timed))]}", flush=True)
        rows.append((name, mine[mine_timed.index(min(mine_timed))], candidates[timed.index(min(timed))]))
    for name in LRP if not args.only_perturbation else ():
        rows.append((f"lrp {name}", *lrp_contenders(model, x, target, name)))
    for name, mine, reference in rows:
        slow = name in PERTURBATION
        a, b = best_times([mine, reference], 1 if slow else args.repeats, warm_up=not slow)
        print(f"{name:<22}{a:>11.3f}{b:>15.3f}{a / b:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
