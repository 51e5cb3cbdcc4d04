"""Generate the URPC parity vectors from the reference code (run by hand, CPU, 1 thread).

    .venv/bin/python tests/golden/make_urpc.py --reference /work/refs/SSL4MIS/code

Cases (reference HiLab-git/SSL4MIS):
- ``urpc_2d``: ``code/train_uncertainty_rectified_pyramid_consistency_2D.py`` loop body (one step) with
  ``networks/unet.py`` ``UNet_URPC`` built from its own ``Encoder`` / ``Decoder_URPC`` and parameter dict
  except ``feature_chns`` [4, 8, 16, 32, 64] (the class hard-codes [16, ..., 256]), 4 classes, 32x32,
  2 labelled + 2 unlabelled, ``iter_num`` 14999. Random draws: the global torch generator (encoder
  dropout, the 1/8 ``Dropout``, ``FeatureNoise``) and numpy's (``FeatureDropout``), both seeded with
  ``step_seed`` right before the body; the pipeline's URPC draws the same in the same order.
  Files: ``urpc_2d_state.pt`` (``weights.*`` float16-exact, ``input.*``, ``buffers_after.*``) and
  ``urpc_2d.json`` (losses, per-parameter gradient / SGD-update norms by reference key).
- ``urpc_3d``: ``code/train_uncertainty_rectified_pyramid_consistency_3D.py`` loop body (one step) with
  ``networks/unet_3D_dv_semi.py`` ``unet_3D_dv_semi(feature_scale=16, n_classes=2, in_channels=1)``,
  32x16x16, 2 + 2, ``iter_num`` 29999, ``num_classes`` 2 (the script hard-codes 3; LA has 2). The
  backbone differs from ours (V-Net), so the vectors cover the loss computation: a forward hook rounds
  the four outputs to float16 precision (stored exactly) and keeps their gradients. ``urpc_3d_state.pt``:
  ``outputs.{0..3}`` (full, 1/2, 1/4, 1/8 logits), ``input.label``; ``urpc_3d.json``: losses and
  [norm, cos-weighted sum, positive-part sum] of d loss / d output for each output, plus ``design``: the model's
  perturbations read from the running network (dropout modules, their p, where they sit and what they feed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from urpc_mcnet_reference import (ReferenceScript, bn_buffers, fingerprint, fixed_weights, grad_norms,
                                  import_reference, install_cuda_shims, loop_namespace, make_batch, scalars, sha256,
                                  software, update_norms)

HERE = Path(__file__).resolve().parent
STEP_SEED, DATA_SEED, INIT_SEED = 1337, 7, 3
SETUP = ["base_lr", "num_classes", "batch_size", "max_iterations", "ce_loss", "dice_loss", "kl_distance",
         "optimizer"]
SCRIPT_2D = "train_uncertainty_rectified_pyramid_consistency_2D.py"
SCRIPT_3D = "train_uncertainty_rectified_pyramid_consistency_3D.py"
SMALL_2D_CHANNELS = [4, 8, 16, 32, 64]
# dv_semi decoder: (scale, dropout module, decoder stage it follows, next stage (None: last), side head)
DV_SEMI_STAGES = (("1/8", "dropout1", "up_concat4", "up_concat3", "dsv4"),
                  ("1/4", "dropout2", "up_concat3", "up_concat2", "dsv3"),
                  ("1/2", "dropout3", "up_concat2", "up_concat1", "dsv2"),
                  ("1", "dropout4", "up_concat1", None, "dsv1"))


def small_unet_urpc(unet) -> nn.Module:
    model = unet.UNet_URPC.__new__(unet.UNet_URPC)
    nn.Module.__init__(model)
    params = {"in_chns": 1, "feature_chns": SMALL_2D_CHANNELS, "dropout": [0.05, 0.1, 0.2, 0.3, 0.5],
              "class_num": 4, "bilinear": False, "acti_func": "relu"}
    model.encoder = unet.Encoder(params)
    model.decoder = unet.Decoder_URPC(params)
    return model


def run_2d(code: Path, mods: dict) -> None:
    script = ReferenceScript(code / SCRIPT_2D)
    torch.manual_seed(INIT_SEED)
    model = small_unet_urpc(mods["networks.unet"])
    state_before, params_before = fixed_weights(model, INIT_SEED)
    batch = make_batch((32, 32), 4, torch.uint8, DATA_SEED)
    ns = script.prepare(loop_namespace(mods), {"labeled_bs": 2, "batch_size": 4}, ["get_current_consistency_weight"],
                        SETUP, {"model": model})
    model.train()
    ns = script.step(ns, {"image": batch["image"].clone(), "label": batch["label"].clone()}, 14999, STEP_SEED)
    tensors = {f"weights.{k}": v for k, v in state_before.items()}
    tensors.update({"input.image": batch["image"], "input.label": batch["label"]})
    tensors.update({f"buffers_after.{k}": v for k, v in bn_buffers(model).items()})
    torch.save(tensors, HERE / "urpc_2d_state.pt")
    record = {
        "reference": f"HiLab-git/SSL4MIS code/{SCRIPT_2D} (loop body), networks/unet.py UNet_URPC",
        "reference_sha256": {name: sha256(code / name) for name in (SCRIPT_2D, "networks/unet.py", "utils/losses.py")},
        "args": {k: getattr(ns["args"], k) for k in ("consistency", "consistency_rampup", "base_lr", "labeled_bs")},
        "network": {"feature_chns": SMALL_2D_CHANNELS, "dropout": [0.05, 0.1, 0.2, 0.3, 0.5]},
        "iter_num": 14999, "step_seed": STEP_SEED, "n_labelled": 2, "lr": ns["optimizer"].param_groups[0]["lr"],
        "scalars": scalars(ns, ("loss", "supervised_loss", "consistency_loss", "consistency_weight", "loss_ce",
                                   "loss_dice")),
        "grad_norms": grad_norms(model),
        "update_norms": update_norms(params_before, model),
        "software": software(),
        "shims": ".cuda() no-op; small network (see network); float16-exact weights with random BatchNorm affine",
    }
    (HERE / "urpc_2d.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print("2d", record["scalars"])


def design_of(model: nn.Module, image: torch.Tensor) -> dict:
    """The dv_semi perturbations as the running network shows them: per decoder stage, the dropout module's
    type and p, whether it takes that stage's output and whether its output feeds the next stage and the
    side head; plus the module types and the side heads' layers."""
    seen = {}
    names = {n for stage in DV_SEMI_STAGES for n in stage[1:] if n}
    handles = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i, o)))
               for n in names]
    model.train()
    with torch.no_grad():
        model(image)
    for h in handles:
        h.remove()
    stages = []
    for scale, drop, stage, following, head in DV_SEMI_STAGES:
        module, (d_in, d_out) = getattr(model, drop), seen[drop]
        stages.append({"scale": scale, "type": type(module).__name__, "p": module.p,
                       "takes_stage_output": d_in[0] is seen[stage][1],
                       "feeds_next_stage": following is None or seen[following][0][1] is d_out,
                       "feeds_side_output": seen[head][0][0] is d_out})
    heads = {head: [repr(m) for m in getattr(model, head).modules() if not list(m.children())]
             for *_, head in DV_SEMI_STAGES}
    return {"stages": stages, "module_types": sorted({type(m).__name__ for m in model.modules()}),
            "side_heads": heads}


def run_3d(code: Path, mods: dict) -> None:
    script = ReferenceScript(code / SCRIPT_3D)
    torch.manual_seed(INIT_SEED)
    model = mods["networks.unet_3D_dv_semi"].unet_3D_dv_semi(feature_scale=16, n_classes=2, in_channels=1)
    batch = make_batch((32, 16, 16), 2, torch.long, DATA_SEED)
    design = design_of(model, batch["image"])
    outputs = []

    def round_and_keep(module, inputs, output):
        rounded = tuple(o.half().float() for o in output)
        for o in rounded:
            o.retain_grad()
        outputs.extend(rounded)
        return rounded

    model.register_forward_hook(round_and_keep)
    ns = script.prepare(loop_namespace(mods), {"labeled_bs": 2, "batch_size": 4},
                        ["get_current_consistency_weight"], SETUP, {"model": model, "num_classes": 2})
    model.train()
    ns = script.step(ns, {"image": batch["image"].clone(), "label": batch["label"].clone()}, 29999, STEP_SEED)
    tensors = {f"outputs.{k}": o.detach().half() for k, o in enumerate(outputs)}
    tensors["input.label"] = batch["label"].to(torch.uint8)
    torch.save(tensors, HERE / "urpc_3d_state.pt")
    record = {
        "reference": f"HiLab-git/SSL4MIS code/{SCRIPT_3D} (loop body), networks/unet_3D_dv_semi.py unet_3D_dv_semi",
        "reference_sha256": {name: sha256(code / name) for name in
                             (SCRIPT_3D, "networks/unet_3D_dv_semi.py", "networks/utils.py", "utils/losses.py")},
        "args": {k: getattr(ns["args"], k) for k in ("consistency", "consistency_rampup", "base_lr", "labeled_bs",
                                                     "max_iterations", "batch_size")},
        "num_classes": 2, "iter_num": 29999, "n_labelled": 2,
        "outputs_order": ["full", "1/2", "1/4", "1/8"],
        "scalars": scalars(ns, ("loss", "supervised_loss", "consistency_loss", "consistency_weight",
                                   "loss_ce_aux1", "loss_dice_aux1")),
        "output_grad_fingerprints": [fingerprint(o.grad) for o in outputs],
        "design": design,
        "software": software(),
        "shims": (".cuda() no-op; num_classes 2 (script: 3); feature_scale 16; outputs rounded to float16 "
                  "precision by a forward hook (gradients flow through)"),
    }
    (HERE / "urpc_3d.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print("3d", record["scalars"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="SSL4MIS checkout's code/ folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    install_cuda_shims()
    mods = import_reference(args.reference, ["networks.unet", "networks.unet_3D_dv_semi", "utils.losses",
                                             "utils.ramps"])
    run_2d(args.reference, mods)
    run_3d(args.reference, mods)


if __name__ == "__main__":
    main()
