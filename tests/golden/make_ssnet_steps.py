"""Generate the SS-Net two-step training parity vectors from the official code (run by hand).

    .venv/bin/python tests/golden/make_ssnet_steps.py --reference /work/refs/SS-Net/code

Runs the official training scripts themselves (ycwu1997/SS-Net ``code/train_ss_3d.py`` and
``code/train_ss_2d.py``, as ``__main__``) for two iterations on synthetic batches, and records every
loss term, the total, the gradient of every parameter, the SGD update, the BatchNorm buffers and the
prototype memory after each iteration. Two iterations cover the state carried across them: the
prototype memory (in 2D the second labelled batch has no class 3, so class 3 keeps its prototypes of
iteration 1), BatchNorm running statistics and the SGD momentum.

Cases:
- ``3d``: ``VNet(n_filters=16, has_dropout=True)`` as ``net_factory('VNet', mode='train')`` builds it (the
  heads take 16 channels, so the width cannot be smaller), 16^3 patches, 2 labelled + 2 unlabelled.
- ``2d``: ``UNet(in_chns=1, class_num=4)`` (its dropout active), 32x32 slices, 2 labelled + 2 unlabelled.
The scripts run with ``--consistency_rampup 0`` (lambda = w_max from the first iteration, so the VAT and
separation terms weigh in the gradients) and the batch sizes above; every other argument is the default.

Writes numbers only: ``tests/golden/ssnet_steps_{3d,2d}.npz`` and ``ssnet_steps_manifest.json``.
Weights are not stored: they are ``parity_common.synthetic_state`` of the recorded (name, shape) list
and seed. The random draws of each iteration (dropout noise masks, the VAT direction's ``torch.rand``)
are recorded in call order (the global generator is seeded with ``step_seeds[k]`` before iteration k)
and replayed by the test. Labels are made from a first ("probe") run's predictions so that the
prototype memory is populated: mostly the predicted class, with random flips, one class cut to fewer
than 32 correct pixels (2D, iteration 1), class 3 removed (2D, iteration 2), and pixels whose top-2
softmax margin is tiny given a third class (so that "predicted correctly" cannot flip).

Precision: the runs are in float64 (``model.double()``, the float32 batches and the VAT draw's float32
values as float64). The VAT power iteration's direction is a gradient through ReLU kinks: in 3D a 1e-7
change of the weights (float32 rounding of a differently ordered gradient sum in iteration 1) moves the
second iteration's smoothness loss by ~1e-4 relative, so float32 vectors could only check iteration 2
loosely. In float64 both iterations compare tightly.

Shims (environment only): ``.cuda()`` is a no-op; tensorboardX's ``SummaryWriter`` keeps the
``add_scalar`` values (the loss records); tqdm, torchvision, skimage and nibabel are stubbed when not
installed (the loop body uses none of them);
``shutil.copytree`` (the script copying its code folder) is a no-op; the scripts' datasets are replaced by a
loader yielding the synthetic batches; ``net_factory`` loads the synthetic state into the network it
built; ``FeatureMemory``, ``optim.SGD``, ``Tensor.backward``, ``F.dropout``/``F.dropout3d`` and
``torch.rand`` are wrapped to record (not change) what they compute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import runpy
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from parity_common import (blobs, cuda_noop, environment, purge_reference_modules, sha256,  # noqa: E402
                           synthetic_state, tensor_stats)
from ssnet_parity import DrawRecorder, pack_draws  # noqa: E402

LOGIT_SCALE = 4.0
SAFE_MARGIN = 1e-4  # labelled pixels with a smaller top-2 softmax margin get a third class as label
FULL_GRADS = ("decoder.out_conv.weight", "decoder.out_conv.bias", "projection_head.3.weight",
              "prediction_head.3.weight")

CASES = {
    "3d": {"script": "train_ss_3d.py", "dim": 3, "n_classes": 2, "spatial": (16, 16, 16), "batch": 4,
           "labeled_bs": 2, "state_seed": 31, "data_seed": 32, "label_seed": 33, "step_seeds": [1337, 1338],
           "argv": ["--max_iteration", "2", "--labeled_bs", "2", "--batch_size", "4",
                    "--consistency_rampup", "0"]},
    "2d": {"script": "train_ss_2d.py", "dim": 2, "n_classes": 4, "spatial": (32, 32), "batch": 4,
           "labeled_bs": 2, "state_seed": 41, "data_seed": 42, "label_seed": 43, "step_seeds": [1337, 1338],
           "argv": ["--max_iterations", "2", "--labeled_bs", "2", "--batch_size", "4",
                    "--consistency_rampup", "0"]},
}
REFERENCE_FILES = ("train_ss_3d.py", "train_ss_2d.py", "networks/VNet.py", "networks/unet.py",
                   "networks/net_factory.py", "utils/losses.py", "utils/feature_memory.py",
                   "utils/contrastive_losses.py", "utils/ramps.py")


# ------------------------------------------------------------------------------------ environment
def _stub(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    module.__dict__.update(attributes)
    return module


class _Writer:
    """tensorboardX.SummaryWriter stand-in: keeps the add_scalar values of the current iteration."""

    scalars: dict = {}

    def __init__(self, *args, **kwargs):
        pass

    def add_scalar(self, tag, value, step):
        _Writer.scalars[tag] = float(value.detach()) if torch.is_tensor(value) else float(value)

    def add_image(self, *args, **kwargs):
        pass

    add_images = add_image

    def close(self):
        pass


class _Tqdm:
    def __init__(self, iterable, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def close(self):
        pass


def missing_module_stubs() -> dict:
    """Stubs for the scripts' imports that are not installed (none of them is used by the loop body)."""
    stubs = {
        "tensorboardX": _stub("tensorboardX", SummaryWriter=_Writer),
        "tqdm": _stub("tqdm", tqdm=_Tqdm),
        "torchvision": _stub("torchvision"),
        "torchvision.transforms": _stub("torchvision.transforms", Compose=lambda transforms: transforms),
        "skimage": _stub("skimage"),
        "skimage.transform": _stub("skimage.transform"),
        "skimage.measure": _stub("skimage.measure", label=None),
        "nibabel": _stub("nibabel"),
    }
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]
    stubs["skimage"].transform, stubs["skimage"].measure = stubs["skimage.transform"], stubs["skimage.measure"]
    out = {"tensorboardX": stubs["tensorboardX"]}  # always: its add_scalar values are the loss records
    for name, module in stubs.items():
        root = name.split(".")[0]
        if root != "tensorboardX" and importlib_missing(root):
            out[name] = module
    return out


def importlib_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None


@contextlib.contextmanager
def patched(obj, name: str, value):
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


# ------------------------------------------------------------------------------------ the run
class Recording:
    """What one run of a script recorded, per iteration (index k = 0, 1)."""

    def __init__(self, n_steps: int):
        self.steps = [dict(backward=[], memory=None, sort_gaps=[], forward=None) for _ in range(n_steps)]
        self.step = -1
        self.model = None


def run_script(code_dir: Path, case: dict, images: list, labels: list, state: dict,
               recorder: DrawRecorder) -> Recording:
    """Run ``case['script']`` as ``__main__`` on the given batches; return its :class:`Recording`."""
    rec = Recording(len(images))
    purge_reference_modules()
    sys.path.insert(0, str(code_dir))
    stubs = missing_module_stubs()
    saved_modules = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    workdir = tempfile.mkdtemp(prefix="ssnet_steps_")
    cwd, argv = os.getcwd(), sys.argv
    try:
        import dataloaders.dataset as dataset_module
        import networks.net_factory as factory_module
        import utils.feature_memory as memory_module

        with contextlib.ExitStack() as stack:
            for target, name, value in [
                (dataset_module, "LAHeart", _FakeDataset), (dataset_module, "BaseDataSets", _FakeDataset),
                (torch.utils.data, "DataLoader", _loader_class(rec, case, images, labels, recorder)),
                (factory_module, "net_factory", _factory(factory_module.net_factory, state, rec)),
                (memory_module, "FeatureMemory", _memory_class(memory_module.FeatureMemory, rec)),
                (torch.optim, "SGD", _sgd_class(rec)),
                (torch.Tensor, "backward", _backward(torch.Tensor.backward, rec)),
                (torch.Tensor, "cuda", cuda_noop),
                (torch.nn.Module, "cuda", cuda_noop),
                (shutil, "copytree", lambda *a, **k: None),
            ]:
                stack.enter_context(patched(target, name, value))
            stack.enter_context(recorder.active())
            os.chdir(workdir)
            sys.argv = [case["script"], *case["argv"]]
            runpy.run_path(str(code_dir / case["script"]), run_name="__main__")
    finally:
        os.chdir(cwd)
        sys.argv = argv
        sys.path.remove(str(code_dir))
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        shutil.rmtree(workdir, ignore_errors=True)
    assert rec.step == len(images) - 1, f"the script ran {rec.step + 1} iterations"
    return rec


class _FakeDataset:
    """Stands for LAHeart / BaseDataSets: only its length is used (by the samplers)."""

    def __init__(self, *args, **kwargs):
        pass

    def __len__(self):
        return 1000


def _loader_class(rec: Recording, case: dict, images: list, labels: list, recorder: DrawRecorder):
    class Loader:
        """The training loader yields the synthetic batches, seeding torch before each; others are empty."""

        def __init__(self, dataset, batch_sampler=None, **kwargs):
            self.training = batch_sampler is not None

        def __len__(self):
            return len(images) if self.training else 0

        def __iter__(self):
            if not self.training:
                return
            for k, (image, label) in enumerate(zip(images, labels)):
                rec.step = k
                recorder.events, recorder.masks, recorder.uniforms = [], [], []  # this iteration's draws
                rec.steps[k]["draws"] = (recorder.events, recorder.masks, recorder.uniforms)
                _Writer.scalars = {}
                rec.steps[k]["scalars"] = _Writer.scalars
                torch.manual_seed(case["step_seeds"][k])
                yield {"image": image.double(), "label": label.clone()}

    return Loader


def _factory(original, state: dict, rec: Recording):
    def net_factory(*args, **kwargs):
        model = original(*args, **kwargs)
        model.load_state_dict(state, strict=True)
        model.double()
        rec.model = model

        def first_forward(module, inputs, output):
            step = rec.steps[rec.step]
            if step["forward"] is None:  # the training forward opens each iteration
                step["forward"] = output[0].detach().clone()

        model.register_forward_hook(first_forward)
        return model

    return net_factory


def _memory_class(base, rec: Recording):
    class RecordingMemory(base):
        """Records the memory after each update and the gaps between the sorted selector scores."""

        def add_features_from_sample_learned(self, model, features, class_labels):
            original_sort = torch.sort
            gaps = rec.steps[rec.step]["sort_gaps"]

            def sort(values, *args, **kwargs):
                result = original_sort(values, *args, **kwargs)
                head = result[0][: self.elements_per_class + 1].double()
                gaps.append(float((head[1:] - head[:-1]).min()))
                return result

            with patched(torch, "sort", sort):
                super().add_features_from_sample_learned(model, features, class_labels)
            rec.steps[rec.step]["memory"] = [None if m is None else np.array(m) for m in self.memory]

    return RecordingMemory


def _sgd_class(rec: Recording):
    class RecordingSGD(torch.optim.SGD):
        """Records gradients before and weights / buffers after each step."""

        def step(self, closure=None):
            model, step = rec.model, rec.steps[rec.step]
            params = list(model.named_parameters())
            step["grad_stats"] = tensor_stats([p.grad for _, p in params])
            step["full_grads"] = {n: p.grad.detach().numpy().copy() for n, p in params
                                  if n in FULL_GRADS and p.grad is not None}
            before = [p.detach().clone() for _, p in params]
            out = super().step(closure)
            step["param_after_stats"] = tensor_stats([p for _, p in params])
            step["update_stats"] = tensor_stats([p.detach() - b for (_, p), b in zip(params, before)])
            step["buffers"] = {n: b.detach().numpy().copy() for n, b in model.named_buffers()}
            return out

    return RecordingSGD


def _backward(original, rec: Recording):
    def backward(self, *args, **kwargs):
        rec.steps[rec.step]["backward"].append(float(self.detach()))
        return original(self, *args, **kwargs)

    return backward


# ------------------------------------------------------------------------------------ inputs
def margins(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 softmax probability per pixel: (B, C, *S) -> (B, *S)."""
    top = torch.softmax(logits.double(), dim=1).topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def design_labels(case: dict, k: int, logits: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
    """Labels (labelled samples) from the probe's training-forward logits of iteration k (see module doc)."""
    n_l, n_classes = case["labeled_bs"], case["n_classes"]
    logits = logits[:n_l].double()
    pred = logits.argmax(1).numpy()
    label = pred.copy()
    flip = rng.random_sample(label.shape) < 0.25
    label[flip] = rng.randint(0, n_classes, size=int(flip.sum()))
    if case["dim"] == 2 and k == 0:  # class 2: fewer correct pixels than the memory holds
        correct_2 = np.flatnonzero((label == 2) & (pred == 2))
        label.reshape(-1)[correct_2[20:]] = 0
    if case["dim"] == 2 and k == 1:  # class 3 absent from the labelled batch
        label[label == 3] = 0
    if n_classes > 2:  # ambiguous pixels: a label that is neither of the top-2 classes (nor 3 in 2D, k = 1)
        order = logits.argsort(1, descending=True).numpy()
        third = order[:, 2]
        if case["dim"] == 2 and k == 1:
            third = np.where(third == 3, order[:, 3], third)
        ambiguous = margins(logits).numpy() < SAFE_MARGIN
        label[ambiguous] = third[ambiguous]
    dtype = torch.uint8 if case["dim"] == 2 else torch.int64  # RandomGenerator / ToTensor dtypes
    return torch.from_numpy(label).to(dtype)


# ------------------------------------------------------------------------------------ one case
def build_reference_state(code_dir: Path, case: dict) -> tuple[list, dict]:
    """(state entries [name, shape], synthetic state) of the network the script builds."""
    sys.path.insert(0, str(code_dir))
    try:
        purge_reference_modules(("networks",))
        from networks.unet import UNet
        from networks.VNet import VNet

        model = (VNet(n_channels=1, n_classes=2, normalization="batchnorm", has_dropout=True) if case["dim"] == 3
                 else UNet(in_chns=1, class_num=4))
    finally:
        sys.path.remove(str(code_dir))
    entries = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    return entries, synthetic_state(entries, case["state_seed"], LOGIT_SCALE)


def run_case(code_dir: Path, case: dict) -> tuple[dict, dict]:
    entries, state = build_reference_state(code_dir, case)
    g = torch.Generator().manual_seed(case["data_seed"])
    images = [blobs((case["batch"], 1, *case["spatial"]), g) for _ in case["step_seeds"]]
    shape = (case["batch"], *case["spatial"])
    dtype = torch.uint8 if case["dim"] == 2 else torch.int64
    labels = [torch.zeros(shape, dtype=dtype) for _ in images]
    probe = run_script(code_dir, case, images, labels, state, DrawRecorder(torch.float64))
    rng = np.random.RandomState(case["label_seed"])
    for k, step in enumerate(probe.steps):
        labels[k][: case["labeled_bs"]] = design_labels(case, k, step["forward"], rng)
    rec = run_script(code_dir, case, images, labels, state, DrawRecorder(torch.float64))
    return package(case, entries, rec, images, labels)


def package(case: dict, entries: list, rec: Recording, images, labels):
    """(npz arrays, manifest entry) of a recorded run; checks the conditions the module doc promises."""
    n_l = case["labeled_bs"]
    arrays, steps = {}, []
    params = [n for n, _ in rec.model.named_parameters()]
    for k, step in enumerate(rec.steps):
        p = f"step{k}/"
        part = DrawRecorder()
        part.events, part.masks, part.uniforms = step["draws"]
        arrays.update(pack_draws(part, p))
        arrays[p + "image"] = images[k].numpy()
        arrays[p + "label"] = labels[k][:n_l].numpy()
        arrays[p + "grad_stats"] = step["grad_stats"]
        arrays[p + "update_stats"] = step["update_stats"]
        arrays[p + "param_after_stats"] = step["param_after_stats"]
        for name, value in step["full_grads"].items():
            arrays[p + "grad/" + name] = value
        for name, value in step["buffers"].items():
            if value.dtype != np.int64:
                arrays[p + "buffer/" + name] = value
        memory_classes = []
        for c, m in enumerate(step["memory"]):
            if m is not None:
                arrays[p + f"memory_{c}"] = m
                memory_classes.append(c)
        logits = step["forward"]
        pred = logits.argmax(1)
        label = labels[k][:n_l].long()
        correct = (pred[:n_l] == label) & (pred[:n_l] > 0)
        margin = margins(logits)
        ambiguous = margin[:n_l] < SAFE_MARGIN
        scalars = dict(step["scalars"])
        scalars["adv_distance"], scalars["total"] = step["backward"]
        steps.append({
            "scalars": scalars,
            "events": part.events,
            "num_batches_tracked": {n: int(b) for n, b in step["buffers"].items() if b.dtype == np.int64},
            "memory_classes": memory_classes,
            "memory_rows": {c: int(step["memory"][c].shape[0]) for c in memory_classes},
            "correct_per_class": [int((correct & (label == c)).sum()) for c in range(case["n_classes"])],
            "labelled_classes": sorted(int(c) for c in label.unique()),
            "pseudo_label_counts": [int((pred[n_l:] == c).sum()) for c in range(case["n_classes"])],
            "min_margin_unlabelled": float(margin[n_l:].min()),
            "min_margin_labelled_unambiguous": float(margin[:n_l][~ambiguous].min()),
            "min_sorted_score_gap": min(step["sort_gaps"]) if step["sort_gaps"] else None,
        })
    check(case, steps)
    meta = {**{k: v for k, v in case.items() if k != "argv"}, "argv": case["argv"], "logit_scale": LOGIT_SCALE,
            "safe_margin": SAFE_MARGIN, "state_entries": entries, "parameters": params,
            "buffers": [n for n, _ in rec.model.named_buffers()], "full_grads": sorted(rec.steps[0]["full_grads"]),
            "steps": steps}
    return arrays, meta


def check(case: dict, steps: list) -> None:
    """The vectors exercise what they are meant to (raises AssertionError otherwise)."""
    first, second = steps
    prefix = "1_Loss/loss_cl_" if case["dim"] == 3 else "info/loss_cl_"
    for step in steps:
        assert step["min_margin_unlabelled"] > 1e-5, step["min_margin_unlabelled"]
        assert step["min_margin_labelled_unambiguous"] > 1e-5, step["min_margin_labelled_unambiguous"]
        assert step["min_sorted_score_gap"] is None or step["min_sorted_score_gap"] > 1e-6
        assert step["scalars"][prefix + "l"] > 0 and step["scalars"][prefix + "u"] > 0
    if case["dim"] == 3:
        assert first["correct_per_class"][1] > 32 and second["correct_per_class"][1] > 32
    else:
        counts = first["correct_per_class"][1:]
        assert max(counts) > 32 and any(2 <= n <= 32 for n in counts)  # ranked and unranked classes
        assert first["memory_rows"][3] >= 2 and 3 not in second["labelled_classes"]
        assert second["pseudo_label_counts"][3] >= 2 and second["correct_per_class"][3] == 0


# ------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="ycwu1997/SS-Net code/ folder")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    code_dir = args.reference.resolve()
    cases = {}
    for name, case in CASES.items():
        arrays, meta = run_case(code_dir, case)
        np.savez_compressed(args.out / f"ssnet_steps_{name}.npz", **arrays)
        cases[name] = meta
        print(name, json.dumps([s["scalars"] for s in meta["steps"]]))
    doc = {"generator": "tests/golden/make_ssnet_steps.py", "reference": "ycwu1997/SS-Net code/",
           "reference_sha256": {f: sha256(code_dir / f) for f in REFERENCE_FILES},
           "environment": environment(), "cases": cases}
    (args.out / "ssnet_steps_manifest.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
