"""Run one iteration of a reference training script's own loop body (used by make_urpc.py / make_mcnet.py).

Nothing of the reference is copied here: the script's source is parsed with ``ast`` at run time and
its statements are executed unchanged:

- ``args``: the script's ``parser = ...`` / ``parser.add_argument(...)`` / ``args = parser.parse_args()``
  statements, run with an empty command line (the defaults), then ``overrides`` set on ``args``;
- the named top-level functions (``get_current_consistency_weight``, ``sharpening``);
- the script's assignments (anywhere in the file, in source order) of the named setup variables
  (``ce_loss``, ``dice_loss``, ``optimizer``, ...), except names the caller fixes itself;
- the body of the ``for ... in enumerate(trainloader)`` loop, from its first statement up to and
  including ``optimizer.step()``.

Environment shims: ``Tensor.cuda`` / ``Module.cuda`` return self; the model and the batch are the
caller's (small networks of the reference's classes, synthetic data: :func:`make_batch`).

The reference import, the ``.cuda`` shims, ``sha256`` and ``fingerprint`` are ``tests/parity_common.py``'s
(re-exported here; ``tests/`` is put on ``sys.path`` as the other generators do).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.optim as optim
from torch import nn
from torch.nn.modules.loss import CrossEntropyLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from parity_common import fingerprint, import_reference, install_cuda_shims, sha256  # noqa: E402,F401


def _is_parser_statement(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        return ast.unparse(node.targets[0]) in ("parser", "args")
    return isinstance(node, ast.Expr) and ast.unparse(node).startswith("parser.add_argument")


def _assigned_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _run(nodes: list[ast.stmt], path: Path, namespace: dict) -> None:
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)


class ReferenceScript:
    """One training script: ``prepare`` builds its namespace, ``step`` runs one loop-body iteration."""

    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text())

    def prepare(self, namespace: dict, overrides: dict, functions: list[str], setup: list[str],
                fixed: dict) -> dict:
        """Namespace with ``args`` (defaults + overrides), the named functions and setup variables.

        ``fixed``: variables the caller sets (e.g. ``model``); the script's own assignments of them are skipped.
        """
        ns = {"argparse": argparse, "np": np, "torch": torch, "nn": nn, **namespace}
        argv, sys.argv = sys.argv, [self.path.name]
        try:
            _run([n for n in self.tree.body if _is_parser_statement(n)], self.path, ns)
        finally:
            sys.argv = argv
        for key, value in overrides.items():
            setattr(ns["args"], key, value)
        _run([n for n in self.tree.body if isinstance(n, ast.FunctionDef) and n.name in functions], self.path, ns)
        ns.update(fixed)
        wanted = [n for n in ast.walk(self.tree) if _assigned_name(n) in set(setup) - set(fixed)]
        _run(sorted(wanted, key=lambda n: n.lineno), self.path, ns)
        return ns

    def loop_body(self) -> list[ast.stmt]:
        """The training loop's statements up to and including ``optimizer.step()``."""
        loops = [n for n in ast.walk(self.tree)
                 if isinstance(n, ast.For) and ast.unparse(n.iter) == "enumerate(trainloader)"]
        if len(loops) != 1:
            raise RuntimeError(f"{self.path}: expected one training loop, found {len(loops)}")
        body = loops[0].body
        ends = [i for i, n in enumerate(body) if ast.unparse(n) == "optimizer.step()"]
        return body[:ends[0] + 1]

    def step(self, ns: dict, sampled_batch: dict, iter_num: int, seed: int) -> dict:
        """Run the loop body once (global torch and numpy generators seeded with ``seed`` first)."""
        ns.update(sampled_batch=sampled_batch, iter_num=iter_num, epoch_num=0, i_batch=0)
        torch.manual_seed(seed)
        np.random.seed(seed)
        _run(self.loop_body(), self.path, ns)
        return ns


# ------------------------------------------------------------------------------- inputs
def make_batch(shape: tuple, n_classes: int, label_dtype: torch.dtype, seed: int) -> dict:
    """4 samples: image ~ N(0, 1); label = smoothed image bucketed into n_classes (the first 2 are labelled)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(4, 1, *shape, generator=g)
    pool = F.avg_pool3d if len(shape) == 3 else F.avg_pool2d
    smooth = pool(image, 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    edges = torch.quantile(smooth.flatten(), torch.linspace(0, 1, n_classes + 1)[1:-1])
    return {"image": image, "label": torch.bucketize(smooth, edges).to(label_dtype)}


def loop_namespace(mods: dict) -> dict:
    """The names the loop bodies use besides the script's own: the reference's losses and ramps, F, optim,
    CrossEntropyLoss."""
    return {"losses": mods["utils.losses"], "ramps": mods["utils.ramps"], "F": F, "optim": optim,
            "CrossEntropyLoss": CrossEntropyLoss}


# ------------------------------------------------------------------------------- weights and stats
def fixed_weights(model: nn.Module, seed: int) -> tuple[dict, dict]:
    """:func:`half_exact_` with ``seed``; returns (:func:`compact_state`, {parameter name: copy}) before the step."""
    half_exact_(model, seed)
    return compact_state(model), {k: p.detach().clone() for k, p in model.named_parameters()}


def half_exact_(model: nn.Module, seed: int) -> None:
    """Round every float parameter and buffer to float16 precision (so a float16 copy stores it exactly);
    BatchNorm affine parameters are first drawn from U(0.5, 1.5) (weight) and U(-0.2, 0.2) (bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.rand(module.bias.shape, generator=g) * 0.4 - 0.2)
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def compact_state(model: nn.Module) -> dict:
    """The state dict with float tensors as float16 (exact after :func:`half_exact_`)."""
    return {k: (v.half() if v.is_floating_point() else v.clone()) for k, v in model.state_dict().items()}


def grad_norms(model: nn.Module) -> dict:
    """{parameter name: L2 norm of its gradient} for every parameter that received one."""
    return {k: float(p.grad.double().norm()) for k, p in model.named_parameters() if p.grad is not None}


def update_norms(before: dict, model: nn.Module) -> dict:
    """{parameter name: L2 norm of (after - before)} for every parameter that changed."""
    out = {}
    for k, p in model.named_parameters():
        delta = float((p.detach().double() - before[k].double()).norm())
        if delta > 0:
            out[k] = delta
    return out


def bn_buffers(model: nn.Module) -> dict:
    """BatchNorm running statistics (float32) and counters after the step, by reference name."""
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def scalars(ns: dict, names: tuple[str, ...]) -> dict:
    """{name: float} of the namespace's loss tensors and Python numbers (no float32 detour for the latter)."""
    return {k: float(ns[k].detach()) if isinstance(ns[k], torch.Tensor) else float(ns[k]) for k in names}


def software() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__}
