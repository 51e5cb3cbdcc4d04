"""Test-side helpers of the UA-MT / supervised parity vectors (``tests/golden/make_uamt.py``); the
synthetic weights and [norm, sum] statistics are :mod:`parity_common`'s.

- :func:`ssnet_name` / :func:`to_ssnet_names`: UA-MT's flat VNet keys (``block_one.conv.0.weight``) to
  the SS-Net reference keys that :func:`ssnet.networks.load_reference_state` maps
  (``encoder.block_one.conv.0.weight``); SSL4MIS's UNet keys already are SS-Net's.
- Test side: :func:`load_case`, :func:`case_method` (our method from config.yaml with the case's
  weights), :func:`engine_step` (one ``Trainer.step``), :func:`ordered`, :func:`assert_student_step`,
  :func:`assert_buffer_stats`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from parity_common import assert_stats, synthetic_state, tensor_stats
from ssnet.config import labelled_values, load_config, run_config
from ssnet.datasets import get_dataset
from ssnet.engine import trainer as trainer_module
from ssnet.engine.trainer import Trainer
from ssnet.methods import get_method_class, parse_params
from ssnet.networks import load_reference_state
from ssnet.networks.reference_names import network_key_pairs

ROOT = Path(__file__).resolve().parents[1]

# UA-MT VNet blocks on the decoder side (every other block, with a ``_dw`` twin, is the encoder's).
UAMT_DECODER_BLOCKS = ("block_five_up", "block_six", "block_six_up", "block_seven", "block_seven_up",
                       "block_eight", "block_eight_up", "block_nine", "out_conv")


def ssnet_name(key: str) -> str:
    """A UA-MT VNet key -> the SS-Net VNet key (``encoder.`` / ``decoder.`` prefix); SS-Net-style keys
    (SSL4MIS UNet, already ``encoder.*`` / ``decoder.*``) are returned unchanged."""
    if key.startswith(("encoder.", "decoder.")):
        return key
    return f"decoder.{key}" if key.split(".")[0] in UAMT_DECODER_BLOCKS else f"encoder.{key}"


def to_ssnet_names(state: dict) -> dict:
    """:func:`ssnet_name` applied to every key of a state dict."""
    return {ssnet_name(k): v for k, v in state.items()}


# ------------------------------------------------------------------------------- test side
DATASETS = {3: "LA", 2: "ACDC"}


def load_case(golden_dir: Path, method: str, case: str) -> tuple[dict, dict]:
    """(manifest entry, arrays) of one committed case."""
    meta = json.loads((golden_dir / f"{method}_manifest.json").read_text())["cases"][case]
    with np.load(golden_dir / f"{case}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def case_method(meta: dict, method: str, **overrides):
    """(our method with the case's weights loaded, the run's training block) for a case.

    Parameters and training block come from ``config.yaml`` (``methods.<method>`` on LA in 3D, ACDC in
    2D); the network is the dataset's, at the case's width (3D: n_filters from the weights).
    """
    dataset = DATASETS[meta["dim"]]
    config = load_config([ROOT / "config.yaml"])
    run = run_config(config, dataset, method, labelled_values(config, dataset, method)[0])
    params = parse_params(method, {**run["params"], **overrides}, f"methods.{method}.params.{dataset}")
    network = dict(run["network"])
    if network["arch"] == "vnet":
        network["n_filters"] = dict(meta["state_entries"])["block_one.conv.0.weight"][0]
    built = get_method_class(method)(params, get_dataset(dataset).spec, network)
    load_reference_state(built.network, to_ssnet_names(case_state(meta, "student_seed")))
    if "teacher_seed" in meta:
        load_reference_state(built.teacher, to_ssnet_names(case_state(meta, "teacher_seed")))
    return built, run["training"]


def case_state(meta: dict, seed_key: str) -> dict:
    return synthetic_state([tuple(e) for e in meta["state_entries"]], meta[seed_key], meta["logit_scale"])


def engine_step(method, training: dict, meta: dict, arrays: dict, monkeypatch) -> dict:
    """One :meth:`Trainer.step` of the engine (fresh SGD as the trainer builds it) at the case's
    iteration and reference lr, with the global torch generator seeded with the case's ``step_seed``
    (the reference seeds it once; the engine's per-iteration reseeding is replaced for this call)."""
    training = {**training, "lr": meta["lr"], "lr_policy": "constant", "iterations": meta["max_iterations"]}
    optimizer = torch.optim.SGD(method.optimised_parameters(), lr=training["lr"], momentum=training["momentum"],
                                weight_decay=training["weight_decay"])
    stub = SimpleNamespace(seed=meta["step_seed"], training=training, method=method, optimizer=optimizer,
                           device=torch.device("cpu"), memory_format=torch.contiguous_format, amp=False,
                           scaler=torch.amp.GradScaler("cuda", enabled=False))
    monkeypatch.setattr(trainer_module, "seed_iteration", lambda seed, _t: torch.manual_seed(seed))
    image = torch.from_numpy(arrays["image"])
    label = torch.from_numpy(arrays["label"][:meta["labeled_bs"]]).long()  # unlabelled labels never reach a method
    return Trainer.step(stub, meta["iteration"], image, label)


def ordered(network, names: list[str], buffers: bool = False) -> list[torch.Tensor]:
    """Our tensors of ``network`` for reference ``names`` (reference order)."""
    ours = dict(network.named_buffers() if buffers else network.named_parameters())
    mapping = dict(network_key_pairs(network))
    return [ours[mapping[ssnet_name(n)]] for n in names]


def assert_student_step(network, meta: dict, arrays: dict, what: str, grad_tol: dict, weight_tol: dict) -> None:
    """The student's gradients ([norm, sum] per parameter; the output conv's in full) and its weights after
    the SGD step (``what``: their name in failure messages) against the case's arrays."""
    params = ordered(network, meta["parameters"])
    assert_stats(tensor_stats([p.grad for p in params]), arrays["grad_stats"], meta["parameters"], "gradients",
                 **grad_tol)
    for name in meta["full_grads"]:
        ours = ordered(network, [name])[0].grad.numpy()
        np.testing.assert_allclose(ours, arrays[f"grad_full/{name}"], rtol=1e-5, atol=1e-8, err_msg=name)
    assert_stats(tensor_stats(params), arrays["student_after_param_stats"], meta["parameters"], what, **weight_tol)


def assert_buffer_stats(network, meta: dict, arrays: dict, prefix: str, what: str) -> None:
    """BatchNorm buffers' [norm, sum] against ``arrays[prefix + '_buffer_stats']`` (rtol 1e-5, atol 1e-6)."""
    buffers = [b.double() for b in ordered(network, meta["buffers"], buffers=True)]
    assert_stats(tensor_stats(buffers), arrays[f"{prefix}_buffer_stats"], meta["buffers"], what, rtol=1e-5, atol=1e-6)
