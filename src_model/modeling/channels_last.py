"""SAM's convolutional stacks around the decoder, run on channels-last pixel rows, with their
own parameters.

The mask decoder's transformer holds its image as (B, HW, C) rows. Its ``output_upscaling`` is
two ConvTranspose2d with stride = kernel (each input pixel gets its own k x k output patch),
SAM's LayerNorm2d and GELUs: on rows that is a matrix product to k·k·C_out, a layer norm over
the last axis, and placing the patches. The prompt encoder's dense mask prompt ends with a 1x1
convolution, a matrix product on rows. Computing them so skips the (B, C, H, W) round trip
(a 0.4 ms transposing copy of the image per decode on the tiny preset), ``conv_transpose2d``'s
col2im and LayerNorm2d's five elementwise passes: the CPU re-propagation step is dominated by
such fixed costs. Same parameters, same state dict, same result to float rounding; gradients flow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _is_patch_conv(module: nn.Module) -> bool:
    """A Conv2d/ConvTranspose2d over non-overlapping patches: stride = kernel, no padding."""
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return False
    plain = module.groups == 1 and tuple(module.dilation) == (1, 1) and tuple(module.padding) == (0, 0)
    if isinstance(module, nn.ConvTranspose2d):
        plain = plain and tuple(module.output_padding) == (0, 0)
    return plain and tuple(module.stride) == tuple(module.kernel_size)


def patch_conv_transpose_unplaced(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """ConvTranspose2d with stride = kernel k on x (B, H, W, C) -> (B, H, W, kh, kw, C_out),
    each input pixel's output patch not yet placed in the (kh·H, kw·W) grid."""
    kh, kw = conv.kernel_size
    # weight (C, C_out, kh, kw) -> (kh·kw·C_out, C); the bias repeats for every patch position.
    weight = conv.weight.permute(2, 3, 1, 0).reshape(-1, conv.in_channels)
    bias = None if conv.bias is None else conv.bias.repeat(kh * kw)
    return F.linear(x, weight, bias).unflatten(-1, (kh, kw, conv.out_channels))


def place_patches(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, kh, kw, ...) -> (B, kh·H, kw·W, ...): pixel (y, x) patch offset (i, j) lands at
    (kh·y + i, kw·x + j)."""
    b, h, w, kh, kw = x.shape[:5]
    rest = x.shape[5:]
    order = (0, 1, 3, 2, 4, *range(5, x.dim()))
    return x.permute(order).reshape(b, h * kh, w * kw, *rest)


def run_layer(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One layer of a SAM conv stack on channels-last x (B, H, W, C)."""
    if isinstance(module, nn.ConvTranspose2d) and _is_patch_conv(module):
        return place_patches(patch_conv_transpose_unplaced(x, module))
    if type(module).__name__ == "LayerNorm2d":  # SAM's (and HDA's): over channels, biased variance
        return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)
    if isinstance(module, (nn.GELU, nn.ReLU, nn.SiLU, nn.Identity)):
        return module(x)
    raise TypeError(f"no channels-last form for {type(module).__name__} {module}")


def mask_prompt_factors(prompt_encoder: nn.Module, masks: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM's dense mask prompt before its last layer, a 1x1 convolution from r to C channels.

    masks (B, 1, 4h, 4w) logits -> hidden (B, h·w, r) rows, weight (C, r), bias (C,): the prompt
    is ``F.linear(hidden, weight, bias)``. The layers before the last run
    as SAM's modules: with 4 and 16 channels they are cheapest channels-first.
    """
    *body, last = prompt_encoder.mask_downscaling
    if not isinstance(last, nn.Conv2d) or tuple(last.kernel_size) != (1, 1) or not _is_patch_conv(last):
        raise TypeError(f"expected SAM's mask embedding to end with a 1x1 Conv2d, got {last}")
    hidden = masks
    for layer in body:
        hidden = layer(hidden)
    return hidden.flatten(2).transpose(1, 2), last.weight.flatten(1), last.bias


def upscaled_mask_logits(output_upscaling: nn.Sequential, image: torch.Tensor, size: tuple[int, int],
                         hyper: torch.Tensor) -> torch.Tensor:
    """SAM's mask from the decoder's image rows: upscale, then dot with the hypernetwork output.

    image (B, h·w, C) rows; size (h, w); hyper (B, C_up) -> low-res logits (B, 1, 4h, 4w).
    The last transposed convolution and its activation stay per input pixel, and only the
    one-channel logits are placed in the grid: nothing of C_up channels is moved.
    """
    *body, last_conv, last_act = output_upscaling
    if not _is_patch_conv(last_conv) or not isinstance(last_conv, nn.ConvTranspose2d):
        raise TypeError(f"expected a stride-equals-kernel ConvTranspose2d before the last activation, got {last_conv}")
    b = image.shape[0]
    x = image.reshape(b, *size, -1)
    for layer in body:
        x = run_layer(layer, x)
    y = last_act(patch_conv_transpose_unplaced(x, last_conv))  # (B, H, W, kh, kw, C_up)
    logits = torch.matmul(y.reshape(b, -1, y.shape[-1]), hyper.unsqueeze(-1))  # (B, H·W·kh·kw, 1)
    logits = place_patches(logits.view(y.shape[:5]))
    return logits.unsqueeze(1)
