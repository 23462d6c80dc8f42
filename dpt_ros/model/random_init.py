"""Deterministic, non-trivial random weights for DPT models built without a checkpoint.

timm's and PyTorch's own initializations are meant for training: in an untrained DPT they leave
the depth head's output constant (often clamped to zero everywhere by the final ReLU), which
makes random-weight runs (tests, demos, CI) meaningless.  :func:`randomize_` gives every tensor
a value drawn from a seeded generator instead, scaled so activations and outputs stay of order
one and vary across the image.
"""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic a random, non-trivial value, in place.

    Nothing is left zero or identity (normalization scales ~1 +- 0.2, shifts and biases
    ~0.1, running variances in [0.5, 1.5]); weights are scaled by 1/sqrt(fan-in) so activations
    stay of order one through any depth, and the last layer of each head by a further 1/4 so the
    outputs are of order one too (in a depth head, that layer's weights are non-negative, so the
    final ReLU clamps only a minority of pixels).  Deterministic for a given seed and parameter set.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor, std, mean=0.0):
        values = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * std + mean
        tensor.copy_(values.to(tensor.dtype))

    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    # the output layer of each head (the last conv of a module named *head, ours or transformers')
    last_layers = set()
    for name, module in model.named_modules():
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)] if name.endswith("head") else []
        if convs:
            last_layers.add(convs[-1])
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is None:
                continue
            if name == "num_batches_tracked":
                tensor.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif name == "running_var":
                values = torch.rand(tensor.shape, generator=generator, dtype=torch.float32) + 0.5
                tensor.copy_(values.to(tensor.dtype))
            elif isinstance(module, norm_types) and name == "weight":
                normal(tensor, 0.2, 1.0)
            elif name in ("bias", "running_mean") or tensor.dim() <= 1:
                normal(tensor, 0.1)
            elif name in ("pos_embed", "cls_token", "position_embeddings", "mask_token"):
                # ours, timm's and transformers' names: a weak position embedding would leave its
                # resizing untested
                normal(tensor, 0.5)
            else:
                fan_in = tensor[0].numel()
                if isinstance(module, nn.ConvTranspose2d):  # (in, out, k, k): in * (k/s)^2 taps
                    fan_in = tensor.shape[0] * max(1, tensor[0, 0].numel() // math.prod(module.stride))
                gain = 0.25 if module in last_layers else 1.0
                normal(tensor, gain / math.sqrt(fan_in))
                if module in last_layers and module.out_channels == 1:
                    # a depth head: relu(conv) >= 0 -> conv with weights >= 0 -> ReLU, so that
                    # most outputs are positive (only the bias clamps some) whatever the seed
                    tensor.abs_()
    return model
