"""Hand-run generator of the SASSNet and DTC parity vectors (``tests/golden/sassnet_*``, ``dtc_*``).

Runs ONE training step of each reference script's loop body with the reference's own network
classes, losses, ramp and ``compute_sdf``, on small synthetic inputs, and writes only numbers:

- ``sassnet_3d``: kleinzcy/SASSnet ``code/train_gan_sdfloss.py`` (``networks/vnet_sdf.py`` VNet,
  ``networks/discriminator.py`` FC3DDiscriminator, ``utils/losses.py`` dice_loss, ``utils/util.py``
  compute_sdf, ``utils/ramps.py``): segmenter SGD step, then the discriminator's Adam step.
- ``dtc_3d``: HiLab-git/DTC ``code/train_la_dtc.py`` (same module names).
- ``dtc_2d``: ``code/train_dtc_sdf_soft_sig_2D.py`` of the UNMERGED SSL4MIS pull request #37
  (HiLab-git/SSL4MIS ``refs/pull/37/head``, commit 68832ad; not in SSL4MIS master): ``networks/unet.py``
  Encoder + Decoder_DTC, ``utils/util.py`` compute_sdf_multi, ``utils/losses.py`` DiceLoss.

Usage (needs scikit-image, which the reference ``compute_sdf`` imports)::

    git -C <SSL4MIS mirror> archive refs/pull/37/head code | tar -x -C /tmp/ssl4mis_pr37
    python tests/golden/make_sdf_methods.py --sassnet /work/refs/SASSnet/code \
        --dtc /work/refs/DTC/code --ssl4mis-pr37 /tmp/ssl4mis_pr37/code

Shims (environment and size only): no ``.cuda()``; the networks are narrow (VNet n_filters 2,
discriminator ndf 4, UNet channels 2-4-8-16-32 via the reference Encoder/Decoder_DTC with its params
dict); the discriminator's fixed ``AvgPool3d((7, 7, 5))`` (the 112x112x80 patch's final map) becomes
``AvgPool3d`` over this patch's final map (2x2x1), i.e. the same global average; batch 2 labelled +
2 unlabelled. Random draws (dropout masks) come from ``torch.manual_seed(dropout_seed)`` set right
before the loop body; the test replays them by seeding the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent
SEED = 0
ITERATION = 2999  # iter_num of the step: t // 150 = 19 but (t + 1) // 150 = 20 (ramp off-by-one shows); LA lr x0.1
PATCH_3D = (32, 32, 16)
PATCH_2D = (32, 32)
LABELLED_BS = 2
BATCH = 4


# ------------------------------------------------------------------------------ loading
@contextmanager
def on_path(code_dir: Path):
    """``code_dir`` first on sys.path (the reference's ``import networks``), its modules dropped after."""
    before = set(sys.modules)
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        sys.path.remove(str(code_dir))
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("networks", "utils"):
                del sys.modules[name]


def load(code_dir: Path, relative: str, alias: str):
    """Import ``code_dir/relative`` as module ``alias``."""
    with on_path(code_dir):
        spec = importlib.util.spec_from_file_location(alias, code_dir / relative)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- inputs
def ball(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Boolean ellipsoid/ellipse sum(((x - c) / r)^2) <= 1 on a grid of ``shape``."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def labels_3d() -> np.ndarray:
    """(4, 32, 32, 16) uint8: sample 0 a blob cut by the x = 0 border, sample 1 two blobs, 2-3 empty."""
    label = np.zeros((BATCH,) + PATCH_3D, dtype=np.uint8)
    label[0] = ball(PATCH_3D, (3, 14, 8), (9, 7, 5))
    label[1] = ball(PATCH_3D, (10, 10, 6), (5, 6, 4)) | ball(PATCH_3D, (23, 22, 10), (4, 5, 3))
    return label


def labels_2d() -> np.ndarray:
    """(4, 32, 32) uint8, classes 0-3: sample 0 LV (3) in myocardium (2) beside RV (1); sample 1 lacks RV."""
    label = np.zeros((BATCH,) + PATCH_2D, dtype=np.uint8)
    label[0][ball(PATCH_2D, (16, 18), (9, 8))] = 2
    label[0][ball(PATCH_2D, (16, 18), (5, 5))] = 3
    label[0][ball(PATCH_2D, (14, 5), (7, 4)) & (label[0] == 0)] = 1
    label[1][ball(PATCH_2D, (12, 20), (7, 9))] = 2
    label[1][ball(PATCH_2D, (12, 20), (4, 5))] = 3
    return label


def image_for(label: np.ndarray, seed: int) -> torch.Tensor:
    """(B, 1, *S) float32: 0.5 * label + N(0, 1) noise from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((label.shape[0], 1) + label.shape[1:], generator=g)
    return noise + 0.5 * torch.from_numpy(label.astype(np.float32)).unsqueeze(1)


def randomise_norms(model: nn.Module, seed: int) -> None:
    """BatchNorm weight ~ U(0.8, 1.2), bias ~ U(-0.1, 0.1), so a swapped affine pair shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(-0.1 + 0.2 * torch.rand(m.bias.shape, generator=g))


# ------------------------------------------------------------------------------ records
def tensors(module: nn.Module) -> dict:
    """Cloned state dict (plain tensors)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def norm_sum(named) -> dict:
    """name -> [L2 norm, sum] in float64 of the given (name, tensor) pairs."""
    return {k: [float(v.double().norm()), float(v.double().sum())] for k, v in named}


def grads(module: nn.Module) -> dict:
    return norm_sum((k, p.grad) for k, p in module.named_parameters())


def params(module: nn.Module) -> dict:
    return norm_sum((k, p.detach()) for k, p in module.named_parameters())


def dropout_hooks(model: nn.Module) -> list:
    """Records, per dropout call in ``model``, whether some sample lost every channel/element."""
    events = []

    def hook(module, inputs, output):
        if module.training:
            kept = (output != 0).flatten(1).any(dim=1)
            events.append(bool((~kept & (inputs[0] != 0).flatten(1).any(dim=1)).any()))

    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            m.register_forward_hook(hook)
    return events


def step_lr(iteration: int, base_lr: float) -> float:
    """lr_ the LA scripts use at ``iter_num = iteration`` (their 'change lr' block replayed)."""
    lr = base_lr
    for done in range(1, iteration + 1):
        if done % 2500 == 0:
            lr = base_lr * 0.1 ** (done // 2500)
    return lr


def poly_lr(iteration: int, base_lr: float, max_iterations: int) -> float:
    """lr the SSL4MIS 2D script uses at ``iter_num = iteration`` (set after each step from the old count)."""
    if iteration == 0:
        return base_lr
    return base_lr * (1.0 - (iteration - 1) / max_iterations) ** 0.9


def write(prefix: str, arrays: dict, state: dict, after: dict, record: dict) -> None:
    np.savez_compressed(OUT / f"{prefix}.npz", **arrays)
    torch.save(state, OUT / f"{prefix}_state.pt")
    if after:
        torch.save(after, OUT / f"{prefix}_after.pt")
    (OUT / f"{prefix}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def environment() -> dict:
    import scipy
    import skimage

    return {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-image": skimage.__version__, "threads": torch.get_num_threads()}


# -------------------------------------------------------------------------------- cases
def sassnet_3d(code: Path, dropout_seed: int) -> tuple[dict, dict, dict, dict, list]:
    """One iteration of train_gan_sdfloss.py (8-label setting: --consistency 0.015 of its README)."""
    vnet = load(code, "networks/vnet_sdf.py", "sassnet_vnet_sdf")
    disc = load(code, "networks/discriminator.py", "sassnet_discriminator")
    losses = load(code, "utils/losses.py", "sassnet_losses")
    ramps = load(code, "utils/ramps.py", "sassnet_ramps")
    util = load(code, "utils/util.py", "sassnet_util")
    hp = {"consistency": 0.015, "consistency_rampup": 40.0, "beta": 0.3, "base_lr": 0.01, "D_lr": 1e-4,
          "momentum": 0.9, "weight_decay": 1e-4, "D_betas": [0.9, 0.99], "n_filters": 2, "ndf": 4}

    torch.manual_seed(SEED)
    model = vnet.VNet(n_channels=1, n_classes=1, n_filters=2, normalization="batchnorm", has_dropout=True)
    randomise_norms(model, SEED + 1)
    D = disc.FC3DDiscriminator(num_classes=1, ndf=4)
    D.avgpool = nn.AvgPool3d((2, 2, 1))  # size shim: global average of this patch's final 2x2x1 map
    label_np = labels_3d()
    volume_batch, label_batch = image_for(label_np, SEED + 2), torch.from_numpy(label_np)
    state = {**{f"model.{k}": v for k, v in tensors(model).items()}, **{f"D.{k}": v for k, v in tensors(D).items()}}
    lr_ = step_lr(ITERATION, hp["base_lr"])
    Dopt = torch.optim.Adam(D.parameters(), lr=hp["D_lr"], betas=(0.9, 0.99))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_, momentum=0.9, weight_decay=0.0001)
    ce_loss, mse_loss = nn.BCEWithLogitsLoss(), nn.MSELoss()
    events = dropout_hooks(model) + dropout_hooks(D)
    labeled_bs, iter_num = LABELLED_BS, ITERATION

    torch.manual_seed(dropout_seed)
    # ---- the script's loop body
    Dtarget = torch.tensor([1, 1, 0, 0])
    model.train()
    D.eval()
    outputs_tanh, outputs = model(volume_batch)
    outputs_soft = torch.sigmoid(outputs)
    with torch.no_grad():
        gt_dis = util.compute_sdf(label_batch[:].cpu().numpy(), outputs[:labeled_bs, 0, ...].shape)
        gt_dis = torch.from_numpy(gt_dis).float()
    loss_sdf = mse_loss(outputs_tanh[:labeled_bs, 0, ...], gt_dis)
    loss_seg = ce_loss(outputs[:labeled_bs, 0, ...], label_batch[:labeled_bs].float())
    loss_seg_dice = losses.dice_loss(outputs_soft[:labeled_bs, 0, :, :, :], label_batch[:labeled_bs] == 1)
    consistency_weight = hp["consistency"] * ramps.sigmoid_rampup(iter_num // 150, hp["consistency_rampup"])
    supervised_loss = loss_seg_dice + hp["beta"] * loss_sdf
    Doutputs = D(outputs_tanh[labeled_bs:], volume_batch[labeled_bs:])
    loss_adv = F.cross_entropy(Doutputs, (Dtarget[:labeled_bs]).long())
    loss = supervised_loss + consistency_weight * loss_adv
    optimizer.zero_grad()
    loss.backward()
    model_grads = grads(model)
    optimizer.step()
    model.eval()
    D.train()
    with torch.no_grad():
        outputs_tanh_d, _ = model(volume_batch)
    Doutputs_d = D(outputs_tanh_d, volume_batch)
    D_loss = F.cross_entropy(Doutputs_d, Dtarget.long())
    Dopt.zero_grad()
    D_loss.backward()
    Dopt.step()
    # ----
    record = {"hyper_parameters": hp, "iteration": iter_num, "lr": lr_, "dropout_seed": dropout_seed,
              "losses": {"loss": loss.item(), "loss_sdf": loss_sdf.item(), "loss_seg_bce": loss_seg.item(),
                         "loss_seg_dice": float(loss_seg_dice), "loss_adv": float(loss_adv),
                         "consistency_weight": float(consistency_weight), "D_loss": float(D_loss)},
              "model_grads": model_grads, "model_after": params(model), "D_grads": grads(D)}
    arrays = {"image": volume_batch.numpy(), "label": label_np[:labeled_bs], "gt_dis": gt_dis.numpy(),
              "d_logits_generator": Doutputs.detach().numpy(), "d_logits_discriminator": Doutputs_d.detach().numpy(),
              "sdm_discriminator_input": outputs_tanh_d.numpy()}
    after = {**{f"D.{k}": v for k, v in tensors(D).items()},
             **{f"model.{k}": v for k, v in tensors(model).items() if "running" in k or "num_batches" in k}}
    return arrays, state, after, record, events


def dtc_3d(code: Path, dropout_seed: int) -> tuple[dict, dict, dict, dict, list]:
    """One iteration of train_la_dtc.py (its defaults: consistency 1.0, ramp-up 40, beta 0.3)."""
    vnet = load(code, "networks/vnet_sdf.py", "dtc_vnet_sdf")
    losses = load(code, "utils/losses.py", "dtc_losses")
    ramps = load(code, "utils/ramps.py", "dtc_ramps")
    util = load(code, "utils/util.py", "dtc_util")
    hp = {"consistency": 1.0, "consistency_rampup": 40.0, "beta": 0.3, "base_lr": 0.01, "momentum": 0.9,
          "weight_decay": 1e-4, "transform_k": 1500.0, "n_filters": 2}

    torch.manual_seed(SEED)
    model = vnet.VNet(n_channels=1, n_classes=1, n_filters=2, normalization="batchnorm", has_dropout=True)
    randomise_norms(model, SEED + 1)
    label_np = labels_3d()
    volume_batch, label_batch = image_for(label_np, SEED + 2), torch.from_numpy(label_np)
    state = {f"model.{k}": v for k, v in tensors(model).items()}
    lr_ = step_lr(ITERATION, hp["base_lr"])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_, momentum=0.9, weight_decay=0.0001)
    ce_loss, mse_loss = nn.BCEWithLogitsLoss(), nn.MSELoss()
    events = dropout_hooks(model)
    labeled_bs, iter_num = LABELLED_BS, ITERATION

    torch.manual_seed(dropout_seed)
    # ---- the script's loop body
    outputs_tanh, outputs = model(volume_batch)
    outputs_soft = torch.sigmoid(outputs)
    with torch.no_grad():
        gt_dis = util.compute_sdf(label_batch[:].cpu().numpy(), outputs[:labeled_bs, 0, ...].shape)
        gt_dis = torch.from_numpy(gt_dis).float()
    loss_sdf = mse_loss(outputs_tanh[:labeled_bs, 0, ...], gt_dis)
    loss_seg = ce_loss(outputs[:labeled_bs, 0, ...], label_batch[:labeled_bs].float())
    loss_seg_dice = losses.dice_loss(outputs_soft[:labeled_bs, 0, :, :, :], label_batch[:labeled_bs] == 1)
    dis_to_mask = torch.sigmoid(-1500 * outputs_tanh)
    consistency_loss = torch.mean((dis_to_mask - outputs_soft) ** 2)
    supervised_loss = loss_seg_dice + hp["beta"] * loss_sdf
    consistency_weight = hp["consistency"] * ramps.sigmoid_rampup(iter_num // 150, hp["consistency_rampup"])
    loss = supervised_loss + consistency_weight * consistency_loss
    optimizer.zero_grad()
    loss.backward()
    model_grads = grads(model)
    optimizer.step()
    # ----
    record = {"hyper_parameters": hp, "iteration": iter_num, "lr": lr_, "dropout_seed": dropout_seed,
              "losses": {"loss": loss.item(), "loss_sdf": loss_sdf.item(), "loss_seg_bce": loss_seg.item(),
                         "loss_seg_dice": float(loss_seg_dice), "consistency_loss": float(consistency_loss),
                         "consistency_weight": float(consistency_weight)},
              "model_grads": model_grads, "model_after": params(model)}
    arrays = {"image": volume_batch.numpy(), "label": label_np[:labeled_bs], "gt_dis": gt_dis.numpy()}
    after = {f"model.{k}": v for k, v in tensors(model).items() if "running" in k or "num_batches" in k}
    return arrays, state, after, record, events


def dtc_2d(code: Path, dropout_seed: int) -> tuple[dict, dict, dict, dict, list]:
    """One iteration of SSL4MIS PR #37 train_dtc_sdf_soft_sig_2D.py (consistency 0.1, ramp-up 200)."""
    unet = load(code, "networks/unet.py", "pr37_unet")
    losses = load(code, "utils/losses.py", "pr37_losses")
    ramps = load(code, "utils/ramps.py", "pr37_ramps")
    util = load(code, "utils/util.py", "pr37_util")
    num_classes, max_iterations = 4, 30000
    hp = {"consistency": 0.1, "consistency_rampup": 200.0, "beta": 0.3, "base_lr": 0.01, "momentum": 0.9,
          "weight_decay": 1e-4, "transform_k": 1500.0, "max_iterations": max_iterations,
          "channels": [2, 4, 8, 16, 32], "dropout": [0.05, 0.1, 0.2, 0.3, 0.5]}

    torch.manual_seed(SEED)
    model = unet.UNet_DTC(in_chns=1, class_num=num_classes)
    small = {"in_chns": 1, "feature_chns": hp["channels"], "dropout": hp["dropout"], "class_num": num_classes,
             "bilinear": False, "acti_func": "relu"}  # size shim: UNet_DTC's params dict, narrow channels
    model.encoder, model.decoder = unet.Encoder(small), unet.Decoder_DTC(small)
    randomise_norms(model, SEED + 1)
    label_np = labels_2d()
    volume_batch, label_batch = image_for(label_np, SEED + 2), torch.from_numpy(label_np)
    state = {f"model.{k}": v for k, v in tensors(model).items()}
    lr_ = poly_lr(ITERATION, hp["base_lr"], max_iterations)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_, momentum=0.9, weight_decay=0.0001)
    ce_loss, dice_loss, mse_loss = nn.CrossEntropyLoss(), losses.DiceLoss(num_classes), nn.MSELoss()
    events = dropout_hooks(model)
    labeled_bs, iter_num = LABELLED_BS, ITERATION

    torch.manual_seed(dropout_seed)
    model.train()
    # ---- the script's loop body
    outputs_tanh, outputs = model(volume_batch)
    outputs_soft = torch.softmax(outputs, dim=1)
    with torch.no_grad():
        gt_dis = util.compute_sdf_multi(label_batch[:].cpu().numpy(), outputs[:labeled_bs].shape)
        gt_dis = torch.from_numpy(gt_dis).float()
    loss_sdf = mse_loss(outputs_tanh[:labeled_bs], gt_dis)
    loss_ce = ce_loss(outputs[:labeled_bs], label_batch[:][:labeled_bs].long())
    loss_dice = dice_loss(outputs_soft[:labeled_bs], label_batch[:labeled_bs].unsqueeze(1))
    supervised_loss = loss_dice + hp["beta"] * loss_sdf
    consistency_weight = hp["consistency"] * ramps.sigmoid_rampup(iter_num // 150, hp["consistency_rampup"])
    dis_to_mask = torch.sigmoid(-1500 * outputs_tanh)
    consistency_loss = torch.mean((dis_to_mask - outputs_soft) ** 2)
    loss = supervised_loss + consistency_weight * consistency_loss
    optimizer.zero_grad()
    loss.backward()
    model_grads = grads(model)
    optimizer.step()
    # ----
    record = {"hyper_parameters": hp, "iteration": iter_num, "lr": lr_, "dropout_seed": dropout_seed,
              "losses": {"loss": loss.item(), "loss_sdf": loss_sdf.item(), "loss_ce": loss_ce.item(),
                         "loss_dice": float(loss_dice), "consistency_loss": float(consistency_loss),
                         "consistency_weight": float(consistency_weight)},
              "model_grads": model_grads}
    arrays = {"image": volume_batch.numpy(), "label": label_np[:labeled_bs], "gt_dis": gt_dis.numpy()}
    return arrays, state, {}, record, events


def generate(prefix: str, case, code: Path, source: dict) -> None:
    """Run ``case`` with the first dropout seed that drops no sample's whole feature map; write its files."""
    for dropout_seed in range(100):
        arrays, state, after, record, events = case(code, dropout_seed)
        if not any(events):
            break
    record.update(source=source, environment=environment(), seed=SEED)
    write(prefix, arrays, state, after, record)
    print(f"{prefix}: dropout seed {dropout_seed}, loss {record['losses']['loss']:.8f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sassnet", type=Path, required=True, help="kleinzcy/SASSnet code/ folder")
    parser.add_argument("--dtc", type=Path, required=True, help="HiLab-git/DTC code/ folder")
    parser.add_argument("--ssl4mis-pr37", type=Path, required=True,
                        help="code/ of HiLab-git/SSL4MIS refs/pull/37/head (git archive)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    generate("sassnet_3d", sassnet_3d, args.sassnet,
             {"repo": "kleinzcy/SASSnet", "file": "code/train_gan_sdfloss.py"})
    generate("dtc_3d", dtc_3d, args.dtc, {"repo": "HiLab-git/DTC", "file": "code/train_la_dtc.py"})
    generate("dtc_2d", dtc_2d, args.ssl4mis_pr37,
             {"repo": "HiLab-git/SSL4MIS", "ref": "refs/pull/37/head (unmerged PR #37, commit 68832ad)",
              "file": "code/train_dtc_sdf_soft_sig_2D.py"})


if __name__ == "__main__":
    main()
