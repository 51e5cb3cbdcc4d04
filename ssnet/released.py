"""The authors' released SS-Net checkpoints as pipeline runs ("released checkpoint" rows).

The paper's authors published their trained LA VNet and ACDC UNet weights: plain PyTorch state
dicts with the reference code's parameter names (``encoder.block_one.conv.0.weight``, ...,
``contrastive_class_selector_memory1.3.weight``). :func:`import_released` loads one with
``torch.load(weights_only=True)``, maps every tensor onto this package's VNet/UNet and SS-Net heads
through the explicit name mapping of :mod:`ssnet.networks.reference_names` (strict: every reference
tensor mapped, every one of ours filled, shapes equal), and writes a ``model.pt`` + ``run_info.json``
that the ordinary evaluation and report read like those of a trained run.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from ssnet.config import config_hash
from ssnet.datasets import get_dataset
from ssnet.engine import run_info
from ssnet.engine.checkpoint import build_method, git_commit, save_model, versions
from ssnet.errors import DataError
from ssnet.io import atomic_path, sha256_file
from ssnet.methods.base import parse_params
from ssnet.networks import build_from_reference_state
from ssnet.workflow import RELEASED_METHOD, RELEASED_SEED

RELEASED_LABEL = "SS-Net (released checkpoint)"
_WRAPPERS = ("state_dict", "model", "net", "model_state_dict")


# --------------------------------------------------------------------------- import
def load_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The reference-keyed tensors of a released ``.pth`` (``weights_only=True``).

    Accepts a plain state dict or one wrapped under ``state_dict``/``model``/``net``, and strips a
    ``module.`` prefix (DataParallel) when every key has it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"released checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-tensor payloads
        raise DataError(f"unreadable released checkpoint {path} (loaded with weights_only=True): "
                        f"{str(exc).splitlines()[0][:300]}") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"released checkpoint {path} is not a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def released_method(dataset: str, state: dict[str, torch.Tensor], source: str = "state"):
    """(method, run-config fragment): our method holding the checkpoint's weights.

    SS-Net (network + heads) when the heads fit our SSNet method, otherwise the segmentation network
    alone (the heads are still mapped and shape-checked strictly). Raises DataError naming the
    checkpoint and every unmapped, missing or mis-shaped key.
    """
    data = get_dataset(dataset)
    spec, arch = data.spec, data.architectures[0]  # the first architecture is the authors' network
    try:
        network, heads = build_from_reference_state(arch, state)
    except KeyError as exc:
        raise DataError(f"released checkpoint {source} does not look like a reference {arch.upper()}: "
                        f"missing reference key {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"released checkpoint {source}: {exc}") from None
    n_classes = state["decoder.out_conv.weight"].shape[0]
    if n_classes != spec.n_classes:
        raise DataError(f"released checkpoint {source} has {n_classes} output classes; {spec.name} needs "
                        f"{spec.n_classes}")
    block = _network_block(arch, state)
    if heads is not None and heads.n_classes == spec.n_classes and heads.dim_in == _feature_channels(block):
        method_type, params = "ssnet", {"feat_dim": int(heads.feat_dim)}
    else:
        method_type, params = "supervised", {}
    params = dataclasses.asdict(parse_params(method_type, params, "released checkpoint"))
    fragment = {"dataset": spec.name, "method": RELEASED_METHOD, "method_type": method_type,
                "method_label": RELEASED_LABEL, "params": params, "network": block}
    method = build_method(fragment)
    method.network.load_state_dict(network.state_dict(), strict=True)
    if method_type == "ssnet":
        method.heads.load_state_dict(heads.state_dict(), strict=True)
    n_heads = len(heads.state_dict()) if heads is not None else 0
    return method.eval(), fragment, n_heads


def _network_block(arch: str, state: dict) -> dict[str, Any]:
    """The ``network`` config block of the checkpoint's architecture (widths read from its shapes)."""
    first_key = "encoder.block_one.conv.0.weight" if arch == "vnet" else "encoder.in_conv.conv_conv.0.weight"
    if state[first_key].shape[1] != 1:
        raise DataError(f"released checkpoint expects {state[first_key].shape[1]} input channels; the data have 1")
    if arch == "vnet":
        return {"arch": "vnet", "n_filters": int(state[first_key].shape[0]), "dropout": True}
    widths, level = [int(state[first_key].shape[0])], 1
    while f"encoder.down{level}.maxpool_conv.1.conv_conv.0.weight" in state:
        widths.append(int(state[f"encoder.down{level}.maxpool_conv.1.conv_conv.0.weight"].shape[0]))
        level += 1
    return {"arch": "unet", "channels": widths}


def _feature_channels(block: dict) -> int:
    return int(block["n_filters"]) if block["arch"] == "vnet" else int(block["channels"][0])


def import_released(checkpoint: str | Path, dataset: str, labelled: str, data_root: str | Path,
                    model_out: str | Path, info_out: str | Path, inference: dict, device: str,
                    train_log_out: str | Path | None = None, val_log_out: str | Path | None = None) -> run_info.RunInfo:
    """Import one released checkpoint as the run ``released/<labelled>/seed0``; return its run record.

    ``labelled`` is the labelled count the authors trained with (``all`` = full supervision); the
    labelled/unlabelled scan counts are read from the preprocessed split lists in ``data_root``.
    ``inference`` and ``device`` are stored in the run config the evaluation reads.
    ``train_log_out``/``val_log_out``: header-only logs, so the run folder has every file of a trained
    run (there was no training here).
    """
    from ssnet.data.loading import training_split

    data = get_dataset(dataset)
    checkpoint = Path(checkpoint)
    state = load_reference_checkpoint(checkpoint)
    method, fragment, n_heads = released_method(data.name, state, str(checkpoint))
    split = training_split(data_root, data, str(labelled), {"mode": "last"})
    run_cfg = released_run_config(fragment, str(labelled), data.released_selection, inference, device, checkpoint)
    save_model(model_out, method, run_cfg, RELEASED_SEED, 0)
    info = run_info.RunInfo(
        dataset=data.name, method=RELEASED_METHOD, method_type=RELEASED_METHOD, labelled=str(labelled),
        seed=RELEASED_SEED, config_hash=config_hash(run_cfg), git_commit=git_commit(), versions=versions(),
        device="cpu", selection=data.released_selection, test_set_selection=data.released_selection == "best_test",
        selected_iteration=None, best_val_dice=None, n_labelled=len(split.labelled),
        n_labelled_scans=split.labelled_scans, n_unlabelled=len(split.unlabelled),
        n_unlabelled_scans=split.unlabelled_scans, n_validation=0, labelled_items=split.labelled,
        validation_items=[], train_seconds=None, run_config=run_cfg, released_checkpoint=str(checkpoint),
        released_sha256=run_cfg["released_sha256"], reference_tensors=len(state), head_tensors=n_heads,
        imported_as=fragment["method_type"])
    run_info.write(info_out, info)
    for path, header in ((train_log_out, "iteration,lr,loss\n"), (val_log_out, "iteration,val_dice\n")):
        if path:
            with atomic_path(path) as tmp:
                tmp.write_text(header)
    print(f"[released {data.name}/{labelled}] {checkpoint}: {len(state)} reference tensors mapped "
          f"({n_heads} in the SS-Net heads), imported as {fragment['method_type']} "
          f"{fragment['network']}", file=sys.stderr, flush=True)
    return info


def released_run_config(fragment: dict, labelled: str, selection: str, inference: dict, device: str,
                        checkpoint: Path) -> dict:
    """The run config stored with an imported checkpoint: the blocks evaluation and the report index
    (no training; the authors' own schedule, hence the ``reference`` profile)."""
    return {**fragment, "labelled": labelled, "training": {}, "schedule_profile": "reference",
            "selection": {"mode": selection}, "inference": inference, "device": device, "amp": False,
            "cudnn_benchmark": False, "deterministic": True, "channels_last": False,
            "cpu_allocator": {"library": "glibc", "jemalloc_path": None, "jemalloc_decay_ms": -1,
                              "mmap_threshold_mb": None, "trim_threshold_mb": None},
            "released_checkpoint": str(checkpoint), "released_sha256": sha256_file(checkpoint)}
