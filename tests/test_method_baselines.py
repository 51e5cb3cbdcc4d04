"""The comparison methods (UA-MT, SASSNet, DTC, URPC, MC-Net): loss properties, networks, test-time
network, short engine runs in 2D and 3D, and exact resume with method-owned state."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import KilledAt, kill_at, tiny_run_config
from ssnet.config.params import complete, defaults, method_fragment, method_types
from ssnet.engine.checkpoint import load_model, load_torch
from ssnet.engine.trainer import RunOutputs, Trainer, train
from ssnet.errors import ConfigError
from ssnet.evaluation.predict import predict_case
from ssnet.methods import METHODS as REGISTERED
from ssnet.methods import get_method_class, parse_params
from ssnet.methods.base import Batch, DatasetSpec, StepContext
from ssnet.methods.dtc import dtc_transform
from ssnet.methods.mcnet import mutual_consistency, sharpen
from ssnet.methods.uamt import ema_alpha, uncertainty_mask
from ssnet.methods.urpc import rectified_consistency
from ssnet.networks import Discriminator, DualHeadNet, MCNet, URPCNet, signed_distance_map

METHODS = ["uamt", "sassnet", "dtc", "urpc", "mcnet"]
TINY = {
    3: ({"arch": "vnet", "n_filters": 2, "dropout": True}, (32, 32, 16), 2),
    2: ({"arch": "unet", "channels": [2, 4, 8, 16, 32]}, (32, 32), 4),
}
# A small discriminator keeps the tests fast (the protocol's is ndf 64).
SMALL = {"sassnet": {"disc_filters": 8}}
# The protocol's ACDC values (config.yaml carries them; the defaults in ssnet/methods/<type>.yaml are LA's).
ACDC_PARAMS = {
    "uamt": {"consistency": 0.1, "consistency_rampup": 200.0},
    "sassnet": {"consistency": 0.01, "consistency_rampup": 200.0},
    "dtc": {"consistency": 0.1, "consistency_rampup": 200.0},
    "urpc": {"consistency": 0.1, "consistency_rampup": 200.0},
    "mcnet": {"consistency": 0.1, "consistency_rampup": 200.0, "dice_weight": 1.0},
}


def make_method(name, dim, **params):
    net, _, n_classes = TINY[dim]
    cls = get_method_class(name)
    protocol = {**SMALL.get(name, {}), **(ACDC_PARAMS.get(name, {}) if dim == 2 else {})}
    return cls(cls.Params(**{**protocol, **params}), DatasetSpec(f"tiny{dim}d", dim, n_classes), net)


def make_batch(dim, n_labelled=2, n_unlabelled=2, seed=0):
    _, shape, n_classes = TINY[dim]
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n_labelled + n_unlabelled, 1, *shape, generator=g)
    label = torch.bucketize(image[:n_labelled, 0], torch.linspace(-0.5, 0.5, n_classes - 1))
    return Batch(image, label)


# ------------------------------------------------------------------------------- registration
def test_registered_with_every_number_a_param():
    for name in METHODS:
        cls = get_method_class(name)
        assert cls.type_name == name and dataclasses.is_dataclass(cls.Params)
        with pytest.raises(ConfigError):
            parse_params(name, {"not_a_key": 1}, f"methods.{name}.params.LA")
    assert get_method_class("uamt").Params().uncertainty_passes == 8
    assert get_method_class("mcnet").Params().temperature == 0.1
    assert get_method_class("dtc").Params().transform_k == 1500.0
    with pytest.raises(ConfigError, match="uncertainty_passes = 3 is not allowed: .*a multiple of 2"):
        parse_params("uamt", {"uncertainty_passes": 3}, "methods.uamt.params.LA")
    with pytest.raises(ConfigError, match="seg_output"):
        make_method("dtc", 2, seg_output="sigmoid")  # 4 classes
    with pytest.raises(ConfigError, match="aux_upsample"):
        make_method("urpc", 2, aux_upsample="trilinear")


PARAM_TYPES = {"number": float, "integer": int, "boolean": bool, "string": str}


def test_every_method_type_declares_its_parameters():
    """ssnet/methods/<type>.yaml exists exactly for the registered types; every parameter has a default and
    a description, each default satisfies its own declaration and keeps its Python type (1.0 for a number),
    and the generated ``Params`` dataclass has those fields and defaults."""
    assert method_types() == sorted(REGISTERED)
    for name in method_types():
        fragment = method_fragment(name)
        params = fragment["params"]
        assert fragment.get("description") and params, name
        for key, declaration in params.items():
            where = f"{name}.{key}"
            assert "default" in declaration and declaration.get("description"), where
            assert ("enum" in declaration) != ("type" in declaration), where  # enum: string choices, no type
            if "enum" in declaration:
                assert all(isinstance(v, str) for v in declaration["enum"]), where
            else:
                assert type(declaration["default"]) is PARAM_TYPES[declaration["type"]], where
        values = defaults(params)
        assert complete(params, values, f"methods.{name}.params") == values  # validates every default
        cls = get_method_class(name)
        assert dataclasses.is_dataclass(cls.Params)
        assert dataclasses.asdict(cls.Params()) == values
        for key, choices in fragment["binary_only"].items():
            assert key in params and set(choices) <= set(params[key]["enum"]), f"{name}.{key}"
            for choice in choices:  # the code agrees: those values need a two-class dataset
                with pytest.raises(ConfigError, match=key):
                    make_method(name, 2, **{key: choice})  # 4 classes


# -------------------------------------------------------------------------------------- UA-MT
def test_ema_update_formula():
    method = make_method("uamt", 2)
    assert ema_alpha(0, 0.99) == 0.0 and ema_alpha(5, 0.99) == pytest.approx(5 / 6) and ema_alpha(1000, 0.99) == 0.99
    teacher, student = method.teacher, method.network
    assert not any(q.requires_grad for q in teacher.parameters())
    assert {id(q) for q in method.optimised_parameters()}.isdisjoint({id(q) for q in teacher.parameters()})
    with torch.no_grad():
        for q in student.parameters():
            q.add_(torch.randn_like(q))
    method.after_optimizer_step(StepContext(0, 10))  # alpha 0: the teacher becomes the student
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)
    old = [t.clone() for t in teacher.parameters()]
    with torch.no_grad():
        for q in student.parameters():
            q.mul_(2.0)
    method.after_optimizer_step(StepContext(5, 10))
    for t, o, s in zip(teacher.parameters(), old, student.parameters()):
        torch.testing.assert_close(t, (5 / 6) * o + (1 / 6) * s)


def test_uncertainty_mask_at_known_entropy():
    ln2 = math.log(2)
    entropy = torch.tensor([0.0, 0.5 * ln2, 0.8 * ln2, 0.999 * ln2, 1.2 * ln2])
    start = uncertainty_mask(entropy, 0, 6000, 0.75, 0.25)  # threshold (0.75 + 0.25 e^-5) ln 2
    end = uncertainty_mask(entropy, 6000, 6000, 0.75, 0.25)  # threshold ln 2
    assert start.tolist() == [1, 1, 0, 0, 0]
    assert end.tolist() == [1, 1, 1, 1, 0]


def test_uamt_teacher_entropy_and_masked_consistency():
    torch.manual_seed(0)
    method = make_method("uamt", 3)
    x_u = torch.randn(2, 1, 32, 32, 16)
    with torch.no_grad():  # a teacher that predicts exactly 50/50 everywhere has entropy ln 2
        method.teacher.out_conv.weight.zero_()
        method.teacher.out_conv.bias.zero_()
    u = method.teacher_uncertainty(x_u)
    assert u.shape == (2, 1, 32, 32, 16)
    torch.testing.assert_close(u, torch.full_like(u, -math.log(0.5 + 1e-6)))
    out = method.training_step(make_batch(3), StepContext(5999, 6000))
    # late in training the threshold is ln 2 > u: every unlabelled pixel counts
    assert out.logs["mask_share"] == 1.0 and out.logs["loss_consistency"] > 0
    logs = out.logs
    expected = 0.5 * (logs["loss_ce"] + logs["loss_dice"]) + logs["consistency_weight"] * logs["loss_consistency"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------ SASSNet / DTC
def test_signed_distance_target_on_a_disk():
    yy, xx = np.mgrid[:33, :33]
    disk = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 8 ** 2).astype(np.uint8)
    sdm = signed_distance_map(disk[None], [1])[0, 0]
    inside, outside = disk == 1, disk == 0
    assert sdm.min() == -1.0 and sdm.max() == 1.0
    assert sdm[16, 16] == -1.0  # the centre is the deepest point
    assert sdm[0, 0] == 1.0 and sdm[32, 32] == 1.0  # the corners are the farthest
    assert (sdm[outside] > 0).all()
    assert (sdm[inside] <= 0).all()
    boundary = inside & ~np.pad(inside, 1)[2:, 1:-1] | inside & ~np.pad(inside, 1)[:-2, 1:-1] \
        | inside & ~np.pad(inside, 1)[1:-1, 2:] | inside & ~np.pad(inside, 1)[1:-1, :-2]
    assert (sdm[boundary] == 0).all() and (sdm[inside & ~boundary] < 0).all()
    # absent class -> zeros; class 0 of the same map is the mirror image (up to the boundary)
    both = signed_distance_map(np.stack([disk, np.zeros_like(disk)]), [0, 1])
    assert not both[1].any()
    assert both[0, 0, 16, 16] == 1.0 and both[0, 0, 0, 0] == -1.0
    volume = np.zeros((1, 12, 12, 8), np.uint8)
    volume[0, 3:9, 3:9, 2:6] = 1
    sdm3 = signed_distance_map(volume, [1])
    assert sdm3.shape == (1, 1, 12, 12, 8) and sdm3.min() == -1 and sdm3.max() == 1


def test_dtc_transform_and_consistency():
    assert dtc_transform(torch.tensor(0.0), 1500.0).item() == 0.5
    assert dtc_transform(torch.tensor(-0.01), 1500.0).item() == pytest.approx(1.0)  # inside -> foreground
    assert dtc_transform(torch.tensor(0.01), 1500.0).item() == pytest.approx(0.0, abs=1e-6)
    method = make_method("dtc", 3)
    assert method.network.binary_sigmoid and method.network.head_channels == 1
    out = method.training_step(make_batch(3), StepContext(0, 6000))
    logs = out.logs
    expected = logs["loss_dice"] + 0.3 * logs["loss_sdm"] + logs["consistency_weight"] * logs["loss_consistency"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["loss_ce"] > 0  # computed, not added


def test_dual_head_sigmoid_as_two_class_logits():
    net = DualHeadNet("vnet", n_classes=2, binary_sigmoid=True, n_filters=2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    seg, sdm, _ = net.heads(x)
    logits, _ = net(x)
    assert seg.shape == sdm.shape == (1, 1, 16, 16, 16) and logits.shape == (1, 2, 16, 16, 16)
    assert sdm.abs().max() <= 1
    torch.testing.assert_close(torch.softmax(logits, 1)[:, 1:], torch.sigmoid(seg))
    net2 = DualHeadNet("unet", n_classes=4, channels=[2, 4, 8, 16, 32])
    assert net2.heads(torch.randn(2, 1, 32, 32))[1].shape == (2, 4, 32, 32)


def test_sassnet_discriminator_has_its_own_optimiser():
    torch.manual_seed(0)
    method = make_method("sassnet", 3)
    disc = list(method.discriminator.parameters())
    assert {id(q) for q in method.optimised_parameters()}.isdisjoint({id(q) for q in disc})
    before = [q.clone() for q in disc]
    out = method.training_step(make_batch(3), StepContext(0, 6000))
    out.loss.backward()
    assert all(q.grad is None for q in disc)  # the segmenter's loss leaves D alone
    method.after_optimizer_step(StepContext(0, 6000))
    assert any(not torch.equal(a, b) for a, b in zip(before, disc))
    assert "loss_disc" in out.logs and method.extra_state_dict()["disc_optimizer"]["state"]
    assert Discriminator(2, 4, ndf=4)(torch.randn(3, 4, 32, 32), torch.randn(3, 1, 32, 32)).shape == (3, 2)
    # the adversarial term asks D to call the unlabelled maps "labelled" (class 1)
    assert method.discriminator_targets(2, 4, "cpu").tolist() == [1, 1, 0, 0]


# --------------------------------------------------------------------------------------- URPC
def test_urpc_consistency_is_zero_when_all_scales_agree():
    p = torch.softmax(torch.randn(2, 4, 8, 8), dim=1)
    loss, kl = rectified_consistency([p, p.clone(), p.clone(), p.clone()])
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and kl.item() == pytest.approx(0.0, abs=1e-7)
    q = torch.softmax(torch.randn(2, 4, 8, 8), dim=1)
    assert rectified_consistency([p, q, p, q])[0].item() > 0


@pytest.mark.parametrize("dim", [3, 2])
def test_urpc_pyramid_and_test_time_output(dim):
    net_cfg, shape, n_classes = TINY[dim]
    kwargs = {k: v for k, v in net_cfg.items() if k != "arch"}
    net = URPCNet(net_cfg["arch"], n_classes=n_classes, **kwargs)
    x = torch.randn(2, 1, *shape)
    net.eval()
    outs = net.forward_pyramid(x)
    assert len(outs) == 4 and all(o.shape == (2, n_classes, *shape) for o in outs)
    torch.testing.assert_close(net(x)[0], outs[0])  # test time = the full-resolution output
    torch.testing.assert_close(net.forward_pyramid(x)[3], outs[3])  # no perturbation in eval mode
    net.train()
    torch.manual_seed(0)
    a = net.forward_pyramid(x)
    torch.manual_seed(1)
    b = net.forward_pyramid(x)
    assert not torch.equal(a[1], b[1]) or not torch.equal(a[3], b[3])  # perturbed in training


# ------------------------------------------------------------------------------------- MC-Net
def test_sharpening():
    p = torch.rand(1000)
    torch.testing.assert_close(sharpen(p, 1.0), p)
    s = sharpen(p, 0.1)
    assert sharpen(torch.tensor(0.5), 0.1).item() == pytest.approx(0.5)
    assert ((s - 0.5).abs() >= (p - 0.5).abs() - 1e-6).all()  # pushed away from 0.5
    probs = [torch.softmax(torch.randn(2, 2, 4, 4), 1) for _ in range(2)]
    expected = ((probs[0] - sharpen(probs[1], 0.1)) ** 2).mean() + ((probs[1] - sharpen(probs[0], 0.1)) ** 2).mean()
    torch.testing.assert_close(mutual_consistency(probs, 0.1), expected)
    one_hot = torch.eye(2)[None, :, :, None].expand(1, 2, 2, 3)
    assert mutual_consistency([one_hot, one_hot.clone()], 0.1).item() == 0.0


@pytest.mark.parametrize("dim", [3, 2])
def test_mcnet_decoders_and_test_time_network(dim):
    net_cfg, shape, n_classes = TINY[dim]
    kwargs = {k: v for k, v in net_cfg.items() if k != "arch"}
    net = MCNet(net_cfg["arch"], n_classes=n_classes, **kwargs).eval()
    x = torch.randn(2, 1, *shape)
    first, second = net.forward_all(x)
    torch.testing.assert_close(net(x)[0], first)  # test time = decoder 1
    assert not torch.allclose(first, second)
    kinds = lambda m: {type(k).__name__ for k in m.modules()}  # noqa: E731
    if dim == 3:  # decoder 1 transposed conv, decoder 2 trilinear
        assert "ConvTranspose3d" in kinds(net.backbone) and "ConvTranspose3d" not in kinds(net.decoder2)
        assert "Upsample" in kinds(net.decoder2)
    else:  # decoder 1 bilinear, decoder 2 transposed conv
        assert "ConvTranspose2d" not in kinds(net.backbone) and "ConvTranspose2d" in kinds(net.decoder2)


def test_test_time_networks():
    uamt = make_method("uamt", 3)
    assert uamt.inference_network() is uamt.network and uamt.inference_network() is not uamt.teacher
    mc = make_method("mcnet", 2).eval()
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(mc.inference_network()(x)[0], mc.network.forward_all(x)[0])
    urpc = make_method("urpc", 2).eval()
    torch.testing.assert_close(urpc.inference_network()(x)[0], urpc.network.forward_pyramid(x)[0])
    for name in ("sassnet", "dtc"):
        m = make_method(name, 3).eval()
        assert m.inference_network()(torch.randn(1, 1, 32, 32, 16))[0].shape[1] == 2


# ------------------------------------------------------------------------------- engine runs
def baseline_run_config(dataset, method, **training):
    cfg = tiny_run_config(dataset, "supervised", **training)
    params = {**SMALL.get(method, {}), **(ACDC_PARAMS[method] if dataset == "ACDC" else {})}
    cfg.update(method=method, method_type=method, method_label=method,
               params=dataclasses.asdict(parse_params(method, params, f"methods.{method}.params.{dataset}")))
    return cfg


def _outputs(path):
    return RunOutputs(path / "model.pt", path / "train_log.csv", path / "val_log.csv", path / "run_info.json")


@pytest.mark.parametrize("dataset", ["LA", "ACDC"])
@pytest.mark.parametrize("method", METHODS)
def test_two_step_training_run(preprocessed, tmp_path, dataset, method):
    from ssnet.data.loading import read_sample
    from ssnet.datasets import get_dataset

    cfg = baseline_run_config(dataset, method, iterations=2, checkpoint_every=2)
    train(cfg, 3, preprocessed[dataset], _outputs(tmp_path), tmp_path / "ckpt")
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["iteration"]) == [1, 2] and np.isfinite(log["loss"]).all()
    model, saved = load_model(tmp_path / "model.pt")
    assert type(model).type_name == method and saved["run_config"]["method_type"] == method
    data = get_dataset(dataset)
    test_case = data.read_splits(preprocessed[dataset] / "splits")["test"][0]
    image, label = read_sample(data.case_path(preprocessed[dataset], test_case))
    prediction = predict_case(model.inference_network(), image, data, cfg["inference"], "cpu")
    assert prediction.shape == label.shape and prediction.max() < model.spec.n_classes


@pytest.mark.parametrize("method", ["sassnet", "uamt"])
def test_resume_equals_uninterrupted(preprocessed, tmp_path, method):
    """Method-owned state (SASSNet's discriminator Adam, UA-MT's EMA teacher) survives a kill."""
    cfg = baseline_run_config("LA", method, iterations=4, checkpoint_every=2)
    train(cfg, 5, preprocessed["LA"], _outputs(tmp_path / "full"), tmp_path / "ckpt_full")

    with pytest.raises(KilledAt):
        Trainer(cfg, 5, preprocessed["LA"], tmp_path / "ckpt").fit(on_iteration_end=kill_at(3))
    train(cfg, 5, preprocessed["LA"], _outputs(tmp_path / "resumed"), tmp_path / "ckpt")
    full = load_torch(tmp_path / "full" / "model.pt")["state_dict"]
    resumed = load_torch(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert full.keys() == resumed.keys()
    assert any(k.startswith("discriminator." if method == "sassnet" else "teacher.") for k in full)
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "train_log.csv"),
                                  pd.read_csv(tmp_path / "resumed" / "train_log.csv"))
