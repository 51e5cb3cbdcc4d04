"""Generate the UA-MT and supervised (labelled-only) parity vectors from the reference code (run by hand).

    .venv/bin/python tests/golden/make_uamt.py --ua-mt /work/refs/UA-MT/code --ssl4mis /work/refs/SSL4MIS/code

Cases (one training step each, at iteration ``t`` of a fresh SGD optimiser, CPU, 1 thread):
- ``uamt_3d``: yulequan/UA-MT ``code/train_LA_meanteacher_certainty_unlabel.py`` loop body, its ``VNet``
  (n_filters 4), 16^3 patch, 2 labelled + 2 unlabelled, then ``update_ema_variables``.
- ``uamt_2d``: HiLab-git/SSL4MIS ``code/train_uncertainty_aware_mean_teacher_2D.py`` loop body, its ``UNet``
  (what ``net_factory('unet')`` builds), 32x32, 2 + 2, then ``update_ema_variables``.
- ``supervised_3d``: UA-MT ``code/train_LA.py`` loop body, its ``VNet`` (n_filters 4), 16^3, batch 4.
- ``supervised_2d``: SSL4MIS ``code/train_fully_supervised_2D.py`` loop body, its ``UNet``, 32x32, batch 4.

Writes numbers only: ``tests/golden/uamt_{3d,2d}.npz`` + ``uamt_manifest.json`` and
``supervised_{3d,2d}.npz`` + ``supervised_manifest.json``. Weights are not stored: they are
``parity_common.synthetic_state`` of the recorded (name, shape) list and seeds. The reference's random
draws (input noise, dropout masks) come from the global torch generator seeded with ``step_seed`` right
before the loop body; a method that draws in the same order with the same modules replays them.

Shims (environment only): the loop bodies are transcribed here line by line (they sit inside
``__main__`` / ``train()``) calling the reference's own classes and functions; ``.cuda()`` dropped; the 3D
script's hard-coded ``preds`` shape (112, 112, 80) is the patch shape; the scripts' ``args``,
``get_current_consistency_weight`` and ``update_ema_variables`` are executed from the scripts' source
(argparse with the default values) without their imports of tensorboardX/torchvision/tqdm.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
import torch.optim as optim

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from parity_common import blobs, environment, import_reference, sha256, synthetic_state, tensor_stats  # noqa: E402

STEP_SEED = 1337
DATA_SEED = 7
STUDENT_SEED, TEACHER_SEED = 11, 12
LOGIT_SCALE = 4.0
FULL_GRADS = ("out_conv.weight", "out_conv.bias")  # stored in full (suffix match)


# ------------------------------------------------------------------------------ reference loading
def script_parts(path: Path, functions: list[str], namespace: dict) -> SimpleNamespace:
    """The script's argparse ``args`` (defaults) and the named top-level functions, run from its source."""
    tree = ast.parse(path.read_text())
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in functions:
            keep.append(node)
        elif isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) in ("parser", "args"):
            keep.append(node)
        elif isinstance(node, ast.Expr) and ast.unparse(node).startswith("parser.add_argument"):
            keep.append(node)
    ns = {"argparse": argparse, "np": np, "torch": torch, **namespace}
    argv, sys.argv = sys.argv, [path.name]
    try:
        exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)
    finally:
        sys.argv = argv
    return SimpleNamespace(**{k: ns[k] for k in ["args", *functions]})


# ------------------------------------------------------------------------------------ inputs
def labels_from(image: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Integer labels (B, *S) by thresholding the image at n_classes - 1 levels."""
    levels = torch.linspace(-0.6, 0.6, n_classes - 1)
    return torch.bucketize(image[:, 0], levels).long()


def make_inputs(n: int, spatial: tuple[int, ...], n_classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    image = blobs((n, 1, *spatial), g)
    return image, labels_from(image, n_classes)


# ------------------------------------------------------------------------------- networks / state
def state_entries(model: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def load_synthetic(model: torch.nn.Module, seed: int) -> None:
    model.load_state_dict(synthetic_state(state_entries(model), seed, LOGIT_SCALE), strict=True)


def param_names(model):
    return [k for k, _ in model.named_parameters()]


def buffer_names(model):
    return [k for k, _ in model.named_buffers()]


def snapshot(model, prefix: str, out: dict) -> None:
    """Per-tensor stats of ``model``'s parameters and buffers into ``out``."""
    out[f"{prefix}_param_stats"] = tensor_stats([p for _, p in model.named_parameters()])
    out[f"{prefix}_buffer_stats"] = tensor_stats([b.double() for _, b in model.named_buffers()])


def record_grads(model, out: dict) -> None:
    out["grad_stats"] = tensor_stats([p.grad for _, p in model.named_parameters()])
    for name, p in model.named_parameters():
        if name.endswith(FULL_GRADS):
            out[f"grad_full/{name}"] = p.grad.detach().numpy().copy()


# ------------------------------------------------------------------------------------ UA-MT step
def uamt_step(case: dict, ref: dict, model, ema_model, volume_batch, label_batch) -> dict:
    """The UA-MT loop body (3D: train_LA_meanteacher_certainty_unlabel.py, 2D: SSL4MIS 2D script)."""
    losses, ramps, script = ref["losses"], ref["ramps"], ref["script"]
    args, iter_num, labeled_bs = script.args, case["iteration"], case["labeled_bs"]
    max_iterations, num_classes = args.max_iterations, case["n_classes"]
    spatial = tuple(volume_batch.shape[2:])
    model.train()
    ema_model.train()
    optimizer = optim.SGD(model.parameters(), lr=case["lr"], momentum=0.9, weight_decay=0.0001)
    torch.manual_seed(STEP_SEED)
    # ---- reference loop body
    unlabeled_volume_batch = volume_batch[labeled_bs:]
    noise = torch.clamp(torch.randn_like(unlabeled_volume_batch) * 0.1, -0.2, 0.2)
    ema_inputs = unlabeled_volume_batch + noise
    outputs = model(volume_batch)
    outputs_soft = torch.softmax(outputs, dim=1)
    with torch.no_grad():
        ema_output = ema_model(ema_inputs)
    T = 8
    volume_batch_r = unlabeled_volume_batch.repeat(2, *([1] * (volume_batch.dim() - 1)))
    stride = volume_batch_r.shape[0] // 2
    preds = torch.zeros([stride * T, num_classes, *spatial])  # 3D script: [.., 2, 112, 112, 80]
    for i in range(T // 2):
        ema_inputs = volume_batch_r + torch.clamp(torch.randn_like(volume_batch_r) * 0.1, -0.2, 0.2)
        with torch.no_grad():
            preds[2 * stride * i:2 * stride * (i + 1)] = ema_model(ema_inputs)
    preds = F.softmax(preds, dim=1)
    preds = preds.reshape(T, stride, num_classes, *spatial)
    preds = torch.mean(preds, dim=0)
    uncertainty = -1.0 * torch.sum(preds * torch.log(preds + 1e-6), dim=1, keepdim=True)
    if case["dim"] == 3:
        loss_ce = F.cross_entropy(outputs[:labeled_bs], label_batch[:labeled_bs])
        loss_dice = losses.dice_loss(outputs_soft[:labeled_bs, 1, :, :, :], label_batch[:labeled_bs] == 1)
    else:
        loss_ce = torch.nn.CrossEntropyLoss()(outputs[:labeled_bs], label_batch[:labeled_bs][:].long())
        loss_dice = losses.DiceLoss(num_classes)(outputs_soft[:labeled_bs], label_batch[:labeled_bs].unsqueeze(1))
    supervised_loss = 0.5 * (loss_dice + loss_ce)
    consistency_weight = script.get_current_consistency_weight(iter_num // 150)
    consistency_dist = losses.softmax_mse_loss(outputs[labeled_bs:], ema_output)
    threshold = (0.75 + 0.25 * ramps.sigmoid_rampup(iter_num, max_iterations)) * np.log(2)
    mask = (uncertainty < threshold).float()
    consistency_dist = torch.sum(mask * consistency_dist) / (2 * torch.sum(mask) + 1e-16)
    loss = supervised_loss + consistency_weight * consistency_dist
    optimizer.zero_grad()
    loss.backward()
    out = {}
    record_grads(model, out)
    optimizer.step()
    script.update_ema_variables(model, ema_model, args.ema_decay, iter_num)
    # ---- end of the loop body
    snapshot(model, "student_after", out)
    snapshot(ema_model, "teacher_after", out)
    out.update(noise=noise.numpy(), uncertainty=uncertainty.numpy(), mask=mask.numpy().astype(np.uint8))
    scalars = {"loss_ce": loss_ce.item(), "loss_dice": loss_dice.item(), "supervised_loss": supervised_loss.item(),
               "consistency_weight": float(consistency_weight), "consistency_dist": consistency_dist.item(),
               "threshold": float(threshold), "mask_sum": mask.sum().item(), "mask_share": mask.mean().item(),
               "loss": loss.item(), "max_iterations": max_iterations, "ema_decay": args.ema_decay,
               "min_gap_to_threshold": float((uncertainty - threshold).abs().min())}
    return out, scalars


# ------------------------------------------------------------------------------- supervised step
def supervised_step(case: dict, ref: dict, net, volume_batch, label_batch) -> dict:
    """The labelled-only loop body (3D: UA-MT train_LA.py, 2D: SSL4MIS train_fully_supervised_2D.py)."""
    losses = ref["losses"]
    net.train()
    optimizer = optim.SGD(net.parameters(), lr=case["lr"], momentum=0.9, weight_decay=0.0001)
    torch.manual_seed(STEP_SEED)
    # ---- reference loop body
    outputs = net(volume_batch)
    if case["dim"] == 3:
        loss_ce = F.cross_entropy(outputs, label_batch)
        outputs_soft = F.softmax(outputs, dim=1)
        loss_dice = losses.dice_loss(outputs_soft[:, 1, :, :, :], label_batch == 1)
        loss = 0.5 * (loss_ce + loss_dice)
    else:
        outputs_soft = torch.softmax(outputs, dim=1)
        loss_ce = torch.nn.CrossEntropyLoss()(outputs, label_batch[:].long())
        loss_dice = losses.DiceLoss(case["n_classes"])(outputs_soft, label_batch.unsqueeze(1))
        loss = 0.5 * (loss_dice + loss_ce)
    optimizer.zero_grad()
    loss.backward()
    out = {}
    record_grads(net, out)
    optimizer.step()
    # ---- end of the loop body
    snapshot(net, "student_after", out)
    scalars = {"loss_ce": loss_ce.item(), "loss_dice": loss_dice.item(), "loss": loss.item()}
    return out, scalars


# ------------------------------------------------------------------------------------ cases
def reference_lr(case: dict) -> float:
    """The lr the reference's iteration ``t`` uses (set at the end of iteration t - 1)."""
    t = case["iteration"]
    if case["dim"] == 3:  # if iter_num % 2500 == 0: lr_ = base_lr * 0.1 ** (iter_num // 2500)
        return 0.01 * 0.1 ** (t // 2500)
    return 0.01 * (1.0 - (t - 1) / case["max_iterations"]) ** 0.9  # lr_ after iteration t - 1


def build_vnet(ref):
    return ref["networks.vnet"].VNet(n_channels=1, n_classes=2, n_filters=4, normalization="batchnorm",
                                     has_dropout=True)


def build_unet(ref):
    return ref["networks.unet"].UNet(in_chns=1, class_num=4)  # net_factory(net_type="unet", ...)


CASES = {
    "uamt_3d": {"dim": 3, "n_classes": 2, "spatial": (16, 16, 16), "batch": 4, "labeled_bs": 2,
                "iteration": 3000, "max_iterations": 6000, "repo": "ua-mt",
                "script": "train_LA_meanteacher_certainty_unlabel.py"},
    "uamt_2d": {"dim": 2, "n_classes": 4, "spatial": (32, 32), "batch": 4, "labeled_bs": 2,
                "iteration": 12000, "max_iterations": 30000, "repo": "ssl4mis",
                "script": "train_uncertainty_aware_mean_teacher_2D.py"},
    "supervised_3d": {"dim": 3, "n_classes": 2, "spatial": (16, 16, 16), "batch": 4, "labeled_bs": 4,
                      "iteration": 3000, "max_iterations": 6000, "repo": "ua-mt", "script": "train_LA.py"},
    "supervised_2d": {"dim": 2, "n_classes": 4, "spatial": (32, 32), "batch": 4, "labeled_bs": 4,
                      "iteration": 12000, "max_iterations": 30000, "repo": "ssl4mis",
                      "script": "train_fully_supervised_2D.py"},
}


def run_case(name: str, case: dict, code_dir: Path) -> tuple[dict, dict]:
    ref = import_reference(code_dir, ["networks.vnet" if case["dim"] == 3 else "networks.unet",
                                      "utils.losses", "utils.ramps"])
    ref["losses"], ref["ramps"] = ref["utils.losses"], ref["utils.ramps"]
    script_path = code_dir / case["script"]
    case = {**case, "lr": reference_lr(case)}
    image, label = make_inputs(case["batch"], case["spatial"], case["n_classes"], DATA_SEED + case["dim"])
    build = build_vnet if case["dim"] == 3 else build_unet
    torch.manual_seed(0)  # the reference's own initialisations are overwritten by synthetic states
    model = build(ref)
    load_synthetic(model, STUDENT_SEED)
    out = {"image": image.numpy(), "label": label.numpy().astype(np.uint8)}
    meta = {**{k: v for k, v in case.items() if k != "repo"}, "step_seed": STEP_SEED,
            "student_seed": STUDENT_SEED, "logit_scale": LOGIT_SCALE, "state_entries": state_entries(model),
            "parameters": param_names(model), "buffers": buffer_names(model),
            "reference_sha256": {case["script"]: sha256(script_path),
                                 "utils/losses.py": sha256(code_dir / "utils/losses.py"),
                                 "utils/ramps.py": sha256(code_dir / "utils/ramps.py")}}
    meta["reference_sha256"]["networks"] = sha256(code_dir / ("networks/vnet.py" if case["dim"] == 3
                                                              else "networks/unet.py"))
    if name.startswith("uamt"):
        ref["script"] = script_parts(script_path, ["get_current_consistency_weight", "update_ema_variables"],
                                     {"ramps": ref["ramps"]})
        ema_model = build(ref)
        for param in ema_model.parameters():  # create_model(ema=True)
            param.detach_()
        load_synthetic(ema_model, TEACHER_SEED)
        meta["teacher_seed"] = TEACHER_SEED
        arrays, scalars = uamt_step(case, ref, model, ema_model, image, label)
    else:
        arrays, scalars = supervised_step(case, ref, model, image, label)
    out.update(arrays)
    meta["scalars"] = scalars
    meta["full_grads"] = sorted(k.split("/", 1)[1] for k in arrays if k.startswith("grad_full/"))
    return out, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ua-mt", type=Path, required=True, help="yulequan/UA-MT code/ folder")
    parser.add_argument("--ssl4mis", type=Path, required=True, help="HiLab-git/SSL4MIS code/ folder")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dirs = {"ua-mt": args.ua_mt.resolve(), "ssl4mis": args.ssl4mis.resolve()}
    manifests = {"uamt": {}, "supervised": {}}
    for name, case in CASES.items():
        arrays, meta = run_case(name, case, dirs[case["repo"]])
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        manifests[name.split("_")[0]][name] = meta
        print(name, json.dumps(meta["scalars"]))
    for method, cases in manifests.items():
        doc = {"generator": "tests/golden/make_uamt.py", "environment": environment(), "cases": cases}
        (args.out / f"{method}_manifest.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
