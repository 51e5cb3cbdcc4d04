"""Shared by the UA-MT / supervised parity generator (``tests/golden/make_uamt.py``) and tests.

- :func:`synthetic_state`: the weights of a case, regenerated from (tensor names and shapes, seed) so the
  vectors need not store them: a deterministic draw per tensor in reference state-dict order.
- :func:`ssnet_name` / :func:`to_ssnet_names`: UA-MT's flat VNet keys (``block_one.conv.0.weight``) to
  the SS-Net reference keys that :func:`ssnet.networks.load_reference_state` maps
  (``encoder.block_one.conv.0.weight``); SSL4MIS's UNet keys already are SS-Net's.
- :func:`tensor_stats`: per-tensor [L2 norm, sum] in float64, the form gradients and updated weights
  are compared in.
- Test side: :func:`load_case`, :func:`case_method` (our method from config.yaml with the case's
  weights), :func:`engine_step` (one ``Trainer.step``), :func:`ordered`, :func:`assert_stats`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

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


def _draw(name: str, shape: tuple[int, ...], u: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Map uniform [0, 1) draws ``u`` (float64) to a value range suited to the tensor's role."""
    kind = name.rsplit(".", 1)[-1]
    if len(shape) > 1:  # conv / transposed-conv weight: uniform with variance 1 / fan
        bound = math.sqrt(3.0 / int(np.prod(shape[1:])))
        return (2 * u - 1) * bound * (logit_scale if "out_conv" in name else 1.0)
    if kind == "weight":  # BatchNorm scale
        return 0.5 + u
    if kind == "running_var":
        return 0.5 + u
    return 0.2 * u - 0.1  # biases, running means


def synthetic_state(entries: list[tuple[str, list[int]]], seed: int, logit_scale: float) -> dict:
    """A state dict for the (name, shape) ``entries`` in order: one float64 draw from a generator seeded
    with ``seed`` per tensor, mapped by :func:`_draw` and cast to float32; ``num_batches_tracked`` = 0.

    ``logit_scale`` widens the output conv so that some pixels are confident (entropy below the UA-MT
    threshold) and others are not.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in entries:
        shape = tuple(shape)
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=torch.int64)
            continue
        u = torch.rand(shape, generator=g, dtype=torch.float64)
        state[name] = _draw(name, shape, u, logit_scale).to(torch.float32)
    return state


def ssnet_name(key: str) -> str:
    """A UA-MT VNet key -> the SS-Net VNet key (``encoder.`` / ``decoder.`` prefix); SS-Net-style keys
    (SSL4MIS UNet, already ``encoder.*`` / ``decoder.*``) are returned unchanged."""
    if key.startswith(("encoder.", "decoder.")):
        return key
    return f"decoder.{key}" if key.split(".")[0] in UAMT_DECODER_BLOCKS else f"encoder.{key}"


def to_ssnet_names(state: dict) -> dict:
    """:func:`ssnet_name` applied to every key of a state dict."""
    return {ssnet_name(k): v for k, v in state.items()}


def tensor_stats(tensors: list[torch.Tensor]) -> np.ndarray:
    """(N, 2) float64: [L2 norm, sum] of each tensor, computed in float64."""
    return np.array([[float(t.detach().double().norm()), float(t.detach().double().sum())] for t in tensors],
                    dtype=np.float64)


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


def assert_stats(ours: np.ndarray, ref: np.ndarray, names: list[str], what: str, rtol: float, atol: float) -> None:
    """Per-tensor [L2 norm, sum]: |a - b| <= rtol * |b| + atol * (1 + norm_b)."""
    bound = rtol * np.abs(ref) + atol * (1.0 + ref[:, :1])
    bad = np.argwhere(np.abs(ours - ref) > bound)
    detail = [f"{names[i]} {['norm', 'sum'][j]}: ours {ours[i, j]:.9g} ref {ref[i, j]:.9g}" for i, j in bad[:8]]
    assert not len(bad), f"{what}: {len(bad)} mismatches\n" + "\n".join(detail)
