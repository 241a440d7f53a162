"""Cost of a network: multiply-adds of one forward pass and parameter counts, so U-Net and DiT variants
can be compared at roughly equal compute (DiT, Peebles & Xie 2023, sec. 4, compares models by Gflops)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # the 2 matmuls Q K^T and A V


# torch counts SDPA only for its GPU kernels; the CPU flash kernel costs the same.
_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


def count_macs(net: nn.Module, *inputs, **kw_inputs) -> int:
    """Multiply-adds of one forward pass `net(*inputs, **kw_inputs)` on this input (the whole batch; for a
    denoiser `count_macs(net, x, t, cond)`), counted by
    torch's FlopCounterMode: matmuls, linears, convolutions and attention (SDPA); elementwise ops (norms,
    activations, additions) are not counted, as in the papers' Gflops. FlopCounterMode counts a
    multiply-add as 2 flops, so this returns flops / 2."""
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
    with torch.no_grad(), counter:
        net(*inputs, **kw_inputs)
    return counter.get_total_flops() // 2


def count_params(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
