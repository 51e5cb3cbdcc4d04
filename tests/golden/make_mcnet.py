"""Generate the MC-Net parity vectors from the reference code (run by hand, CPU, 1 thread).

    .venv/bin/python tests/golden/make_mcnet.py --reference /work/refs/MC-Net/code

Cases (one training step each, reference ycwu1997/MC-Net):
- ``mcnet_3d``: ``code/train_mcnet_3d.py`` loop body with ``networks/VNet.py`` ``MCNet3d_v1(n_channels=1,
  n_classes=2, n_filters=2, normalization='batchnorm', has_dropout=True)``, 16^3 patch, 2 labelled +
  2 unlabelled, ``iter_num`` 2999 (the body increments it first: lambda uses 3000 // 150).
- ``mcnet_2d``: ``code/train_mcnet_2d.py`` loop body with ``networks/unet.py`` ``MCNet2d_v1`` built from
  the same ``Encoder`` / ``Decoder`` classes and parameter dicts except ``feature_chns`` [4, 8, 16, 32, 64]
  (the class hard-codes [16, ..., 256]), 4 classes, 32x32, 2 + 2, ``iter_num`` 14999.

Per case: ``mcnet_<case>_state.pt`` (``weights.<reference key>`` float16-exact weights, ``input.image``,
``input.label``, ``buffers_after.<key>`` BatchNorm statistics after the step) and ``mcnet_<case>.json``
(losses, consistency weight, per-parameter gradient and SGD-update norms by reference key, provenance).
The loop body runs from the script's own source (see ``urpc_mcnet_reference.py``), the global torch and
numpy generators seeded with ``step_seed`` right before it: the dropout masks are those of the modules'
forward order (encoder, decoder 1, decoder 2), which the pipeline's MC-Net replays with the same seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from urpc_mcnet_reference import (ReferenceScript, bn_buffers, fixed_weights, grad_norms, import_reference,
                                  install_cuda_shims, loop_namespace, make_batch, scalars, sha256, software,
                                  update_norms)

HERE = Path(__file__).resolve().parent
STEP_SEED, DATA_SEED, INIT_SEED = 1337, 7, 3
SETUP = ["labeled_bs", "num_classes", "base_lr", "max_iterations", "ce_loss", "consistency_criterion",
         "dice_loss", "optimizer"]
CASES = {
    "3d": {"script": "train_mcnet_3d.py", "shape": (16, 16, 16), "n_classes": 2, "iter_num": 2999,
           "label_dtype": torch.long},
    "2d": {"script": "train_mcnet_2d.py", "shape": (32, 32), "n_classes": 4, "iter_num": 14999,
           "label_dtype": torch.uint8},
}
SMALL_2D_CHANNELS = [4, 8, 16, 32, 64]


def build_model(case: str, mods: dict) -> torch.nn.Module:
    if case == "3d":
        return mods["networks.VNet"].MCNet3d_v1(n_channels=1, n_classes=2, n_filters=2, normalization="batchnorm",
                                               has_dropout=True)
    unet = mods["networks.unet"]
    model = unet.MCNet2d_v1.__new__(unet.MCNet2d_v1)
    torch.nn.Module.__init__(model)
    params = {"in_chns": 1, "feature_chns": SMALL_2D_CHANNELS, "dropout": [0.05, 0.1, 0.2, 0.3, 0.5],
              "class_num": 4, "acti_func": "relu"}
    model.encoder = unet.Encoder({**params, "up_type": 1})
    model.decoder1 = unet.Decoder({**params, "up_type": 1})
    model.decoder2 = unet.Decoder({**params, "up_type": 0})
    return model


def run_case(case: str, code: Path, mods: dict) -> None:
    spec = CASES[case]
    script = ReferenceScript(code / spec["script"])
    torch.manual_seed(INIT_SEED)
    model = build_model(case, mods)
    state_before, params_before = fixed_weights(model, INIT_SEED)
    batch = make_batch(spec["shape"], spec["n_classes"], spec["label_dtype"], DATA_SEED)
    ns = script.prepare(loop_namespace(mods), {"labeled_bs": 2, "batch_size": 4}, ["get_current_consistency_weight", "sharpening"],
                        SETUP, {"model": model})
    model.train()
    sampled = {"image": batch["image"].clone(), "label": batch["label"].clone()}
    ns = script.step(ns, sampled, spec["iter_num"], STEP_SEED)
    values = scalars(ns, ("loss", "loss_seg_dice", "loss_seg", "loss_consist", "consistency_weight"))
    tensors = {f"weights.{k}": v for k, v in state_before.items()}
    tensors.update({"input.image": batch["image"], "input.label": batch["label"].to(torch.uint8)})
    tensors.update({f"buffers_after.{k}": v for k, v in bn_buffers(model).items()})
    torch.save(tensors, HERE / f"mcnet_{case}_state.pt")
    record = {
        "reference": f"ycwu1997/MC-Net code/{spec['script']} (loop body), "
                     + ("networks/VNet.py MCNet3d_v1" if case == "3d" else "networks/unet.py MCNet2d_v1"),
        "reference_sha256": {spec["script"]: sha256(code / spec["script"]),
                             "utils/losses.py": sha256(code / "utils/losses.py")},
        "args": {k: getattr(ns["args"], k) for k in ("consistency", "consistency_rampup", "temperature", "lamda",
                                                     "base_lr", "labeled_bs", "batch_size")},
        "network": ({"n_filters": 2, "has_dropout": True} if case == "3d"
                    else {"feature_chns": SMALL_2D_CHANNELS, "dropout": [0.05, 0.1, 0.2, 0.3, 0.5]}),
        "iter_num_before_step": spec["iter_num"], "step_seed": STEP_SEED, "n_labelled": 2,
        "lr": ns["optimizer"].param_groups[0]["lr"],
        "scalars": values,
        "grad_norms": grad_norms(model),
        "update_norms": update_norms(params_before, model),
        "software": software(),
        "shims": ".cuda() no-op; small network (see network); float16-exact weights with random BatchNorm affine",
    }
    (HERE / f"mcnet_{case}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(case, values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="MC-Net checkout's code/ folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    install_cuda_shims()
    mods = import_reference(args.reference, ["networks.VNet", "networks.unet", "utils.losses", "utils.ramps"])
    for case in CASES:
        run_case(case, args.reference, mods)


if __name__ == "__main__":
    main()
