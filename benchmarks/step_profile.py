"""Where one SS-Net training iteration's time goes on the CPU (torch profiler), next to the machine's peak.

Runs ``step_time.py``'s SS-Net step (``config.yaml``'s settings, the ``tuned`` runtime: channels-last, and
the allocator the process was started with) for one configuration, then prints:

- the operators by self time (one profiled iteration after ``--warmup`` unprofiled ones);
- the forward convolutions' rate (2 x output elements x input channels x kernel taps of every
  ``nn.Conv2d`` / ``nn.Conv3d`` call - transposed ones excluded - counted by forward hooks, over
  ``aten::mkldnn_convolution``'s time; CPU with oneDNN) and a
  float32 matrix product's rate (4096 x 4096, same threads): how close the convolutions already run to what
  the cores can do;
- the convolution (forward + backward) and dropout-noise (``aten::bernoulli_``, a serial kernel) shares of
  the step (operator self times: elapsed on the calling thread, whose worker threads run inside them);
- what bounds the memory-bound rest: the elements entering the BatchNorm layers (the network's and the SS-Net
  heads') and the active dropout layers in one iteration (forward hooks; every forward of the step) and the
  best rate of a plain copy with the same threads (read + write bytes per second, at 25 and 100 MB).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \\
        .venv/bin/python benchmarks/step_profile.py --config acdc-small [--threads 2] [--warmup 2] [--rows 25]
        [--amp]

``--amp`` runs the iterations under autocast, bfloat16 on the CPU (``step_time.timed_steps(amp=True)``): other
numerics than the protocol's float32, which the engine keeps on the CPU (its ``amp`` acts on CUDA only); a
measure of what the cores' bfloat16 units would give, not a setting of the pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time  # noqa: E402  (benchmarks/ is not a package)

# aten::_convolution's self time is the transposed convolutions' forward (the others run in mkldnn_convolution)
CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution_backward")


def count_convolution_flop(module) -> list[float]:
    """Forward hooks on every Conv2d / Conv3d under ``module`` adding each call's FLOP to the returned list's
    only element: 2 * output elements * (input channels / groups) * kernel taps."""
    from math import prod

    from torch import nn

    total = [0.0]

    def hook(conv, inputs, output):
        total[0] += 2.0 * output.numel() * conv.in_channels // conv.groups * prod(conv.kernel_size)

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.register_forward_hook(hook)
    return total


def count_layer_inputs(module) -> dict[str, list[float]]:
    """Forward hooks on the BatchNorm (1d / 2d / 3d: the network's and the SS-Net heads') and dropout layers
    under ``module`` adding each call's input elements to the returned ``{"batchnorm": [n], "dropout": [n]}``
    (dropout only where it is active)."""
    from torch import nn

    counts = {"batchnorm": [0.0], "dropout": [0.0]}

    def hook(kind):
        def add(layer, inputs, output):
            if kind == "batchnorm" or (layer.training and layer.p > 0):
                counts[kind][0] += inputs[0].numel()
        return add

    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(hook("batchnorm"))
        elif isinstance(m, nn.modules.dropout._DropoutNd):
            m.register_forward_hook(hook("dropout"))
    return counts


def copy_gbps(threads: int, megabytes: int, repeats: int = 20) -> float:
    """Best rate of a float32 tensor copy of ``megabytes`` (read + write bytes per second, GB/s)."""
    import torch

    torch.set_num_threads(threads)
    source = torch.randn(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(_seconds(lambda: target.copy_(source)) for _ in range(repeats))
    return 2 * source.numel() * 4 / best / 1e9


def matmul_gflops(threads: int, n: int = 4096, repeats: int = 5) -> float:
    """Best rate of an n x n float32 matrix product (2 n^3 FLOP) over ``repeats``."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="acdc-small", choices=sorted(step_time.CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--amp", action="store_true", help="iterations under autocast (bfloat16 on the CPU)")
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from ssnet.allocator import describe_allocator

    _, method, batch = step_time.setup_variant(args.config, "ssnet", args.threads, "tuned")
    plain, _ = step_time.timed_steps(method, batch, args.warmup, 2, 100, 30000, amp=args.amp)
    flop = count_convolution_flop(method)
    layer_inputs = count_layer_inputs(method)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled, _ = step_time.timed_steps(method, batch, 0, 1, 200, 30000, amp=args.amp)
    events = prof.key_averages()
    print(f"{args.config}, {args.threads} threads, malloc {describe_allocator()}"
          + (", autocast (bfloat16 on the CPU)" if args.amp else ""))
    unprofiled = ", ".join(f"{step['total']:.2f}" for step in plain)
    print(f"iteration: {unprofiled} s unprofiled; "
          f"{profiled[0]['total']:.2f} s profiled")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    # self time = the operator's elapsed time on the calling thread (its worker threads run inside it)
    self_seconds = {e.key: e.self_cpu_time_total / 1e6 for e in events}
    total = sum(self_seconds.values())
    convolutions = sum(self_seconds.get(k, 0.0) for k in CONVOLUTION_OPS)
    masks = self_seconds.get("aten::bernoulli_", 0.0)  # a serial kernel (one thread)
    forward_seconds = self_seconds.get("aten::mkldnn_convolution", 0.0)
    if forward_seconds > 0:
        print(f"forward convolutions (transposed ones excluded): {flop[0] / 1e9:.1f} GFLOP in {forward_seconds:.3f} s"
              f" = {flop[0] / 1e9 / forward_seconds:.0f} GFLOP/s; float32 matrix product: "
              f"{matmul_gflops(args.threads):.0f} GFLOP/s")
    print(f"of {total:.2f} s of operator time: convolutions (forward + backward) {convolutions:.2f} s, "
          f"dropout noise {masks:.2f} s, the rest {total - convolutions - masks:.2f} s")
    print(f"inputs in the iteration's forwards: BatchNorm {layer_inputs['batchnorm'][0] / 1e6:.1f}M elements, "
          f"active dropout {layer_inputs['dropout'][0] / 1e6:.1f}M; copy: "
          f"{copy_gbps(args.threads, 25):.0f} GB/s at 25 MB, {copy_gbps(args.threads, 100):.0f} GB/s at 100 MB")


if __name__ == "__main__":
    main()
