"""FLOP counting and peak matrix-product rate, shared by the benchmark scripts.

`count_flops(fn)` runs `fn()` once under `torch.utils.flop_counter.FlopCounterMode` and returns
its total (matrix products, convolutions and attention; elementwise work is not counted, as in
the usual MFU convention). The stock counter knows the CUDA attention kernels but not PyTorch's
CPU flash attention (`_scaled_dot_product_flash_attention_for_cpu` and its backward), so we add
formulas for those: without them every attention FLOP on CPU would be missed. Attention is
counted as dense (full T x S), also when it is causal or masked.

`peak_matmul_flops(device, dtype)` is the machine's measured matrix-product rate: a square
torch.matmul, best of several timed repeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils import flop_counter as fc

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # trainer.precision -> matmul dtype

aten = torch.ops.aten


def _cpu_sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def extra_formulas() -> dict:
    """Counter formulas for attention kernels the stock FlopCounterMode does not know."""
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_forward
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward
    return mapping


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Run fn() once under the FLOP counter -> (total FLOPs, FLOPs per aten op name)."""
    with fc.FlopCounterMode(display=False, custom_mapping=extra_formulas()) as counter:
        fn()
    per_op = {
        str(op).split(".")[-1] if "." in str(op) else str(op): n
        for op, n in counter.get_flop_counts()["Global"].items()
    }
    return counter.get_total_flops(), per_op


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one fn() call, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 8, warmup: int = 2) -> float:
    """FLOP/s of an n x n x n torch.matmul in `dtype` on `device`: the best of `repeats` timings."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = 1 if device.type == "cpu" else 10  # a GPU product is too short to time alone

    def run():
        for _ in range(inner):
            torch.matmul(a, b)

    for _ in range(warmup):
        run()
    best = min(time_call(run, device) for _ in range(repeats))
    return 2 * n**3 * inner / best
