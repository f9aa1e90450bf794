"""Fresh random initializations of a loaded model's architecture, as parameter dicts.

Distillation trains the architecture, not the loaded weights: a deep copy of
the model is re-initialized module by module, and the weights are handed to
`torch.func.functional_call` as a dict, so inner training steps stay inside
the autograd graph and the loaded model is never touched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

INITS = ("kaiming", "default")


def why_not_reinitializable(model: nn.Module) -> str | None:
    """One line saying why `model`'s architecture cannot be re-initialized, or None when it can."""
    if isinstance(model, torch.jit.ScriptModule):
        return "a TorchScript model cannot be re-initialized: load the architecture as Python code (--arch)"
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            return f"module {name or type(module).__name__} is TorchScript and cannot be re-initialized"
        if list(module.parameters(recurse=False)) and not _resets(module):
            where = f"'{name}'" if name else "the top module"
            return (f"{where} ({type(module).__name__}) holds parameters but has no reset_parameters(), "
                    "so its architecture cannot be re-initialized")
    if not any(True for _ in model.parameters()):
        return f"{type(model).__name__} has no parameters to train"
    return None


def _resets(module: nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None)) or callable(getattr(module, "_reset_parameters", None))


def output_layer(model: nn.Module) -> nn.Module | None:
    """The last Linear layer in definition order: the classifier that produces the logits."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def _reinitialize(module: nn.Module, scheme: str, output: nn.Module | None = None) -> None:
    """Draw `module`'s own parameters again (from torch's global generator)."""
    if scheme == "kaiming" and module is output:
        # A zero classifier starts every fresh network at uniform predictions (as torchvision's ViT
        # head does): a few inner steps then only have to build a readout of the random features,
        # instead of first undoing random logits of large spread.
        nn.init.zeros_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif scheme == "kaiming" and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        # He initialization: PyTorch's default shrinks the signal through deep plain ReLU stacks,
        # and a few inner steps from such a start barely move the output.
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif callable(getattr(module, "reset_parameters", None)):
        module.reset_parameters()
    elif callable(getattr(module, "_reset_parameters", None)):
        module._reset_parameters()


class Architecture:
    """The model's architecture with fresh weights on demand.

    `fresh(seed)` returns a new {name: tensor} dict drawn from the init scheme;
    `forward(params, images)` runs the architecture with those weights. The copy
    stays in eval mode: no dropout noise and no BatchNorm statistics updated
    in place, so a training run is a deterministic function of its inputs.
    """

    def __init__(self, model: nn.Module, device: torch.device, scheme: str = "kaiming",
                 dtype: torch.dtype = torch.float32) -> None:
        reason = why_not_reinitializable(model)
        if reason:
            raise ValueError(reason)
        if scheme not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
        self.scheme, self.device, self.dtype = scheme, device, dtype
        self.template = copy.deepcopy(model).cpu().to(dtype).eval()
        for parameter in self.template.parameters():
            parameter.requires_grad_(False)
        self.names = [name for name, _ in self.template.named_parameters()]
        self.module = copy.deepcopy(self.template).to(device)  # runs every forward pass

    def fresh(self, seed: int) -> dict[str, torch.Tensor]:
        """New weights, drawn on the CPU from `seed` (the same on every device)."""
        output = output_layer(self.template)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.template.modules():
                if list(module.parameters(recurse=False)):
                    _reinitialize(module, self.scheme, output)
        return {name: parameter.detach().clone().to(self.device)
                for name, parameter in self.template.named_parameters()}

    def forward(self, params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, params, (images,))

    def embed(self, params: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """(B, D) features that feed the last Linear layer (the classifier), with those weights."""
        head = output_layer(self.module)
        if head is None:
            raise ValueError(f"{type(self.module).__name__} has no Linear output layer whose input to embed")
        captured = []
        handle = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.forward(params, images)
        finally:
            handle.remove()
        return captured[-1].flatten(1)
