"""The SS-Net method: loss composition, reference quirks, BatchNorm bookkeeping, short training runs."""

import dataclasses

import pytest
import torch

from ssnet.config.params import complete, method_fragment
from ssnet.engine.checkpoint import load_torch, save_torch
from ssnet.errors import ConfigError
from ssnet.losses import binary_dice_loss, dice_loss
from ssnet.methods import get_method_class, parse_params
from ssnet.methods.base import Batch, DatasetSpec, StepContext
from ssnet.ramps import consistency_weight

TINY = {
    3: ({"arch": "vnet", "n_filters": 2, "dropout": False}, (16, 16, 16), 2),
    2: ({"arch": "unet", "channels": (4, 8, 16), "dropout": (0.0, 0.0, 0.0)}, (16, 16), 4),
}
ACDC_PARAMS = {"consistency": 0.1, "consistency_rampup": 200.0, "vat_eps": 6.0, "rampup_iteration_offset": 0}


def make_method(dim, network=None, **params):
    net_cfg, _, n_classes = TINY[dim]
    cls = get_method_class("ssnet")
    defaults = ACDC_PARAMS if dim == 2 else {}
    return cls(cls.Params(**{**defaults, **params}), DatasetSpec(f"tiny{dim}d", dim, n_classes),
               network or net_cfg)


def make_batch(dim, n_labelled=2, n_unlabelled=2, seed=0):
    _, shape, n_classes = TINY[dim]
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n_labelled + n_unlabelled, 1, *shape, generator=g)
    # labels correlated with the image so the network can fit them
    label = (image[:n_labelled, 0] > 0).long() * (1 + (image[:n_labelled, 0] > 1).long() * (n_classes - 2))
    return Batch(image, label.clamp(max=n_classes - 1))


def step_with_backward(method, batch, iteration, max_iterations):
    """One training step and the backward of all of its loss; returns (StepOutput, total loss value)."""
    ctx = StepContext(iteration, max_iterations)
    out = method.training_step(batch, ctx)
    ctx.backward(out.loss)
    return out, ctx.backpropagated


def bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_registered_params_and_heads():
    method = make_method(3)
    assert type(method).type_name == "ssnet"
    assert method.heads.dim_in == method.network.feature_channels
    assert len(method.heads.selectors) == 2 and len(method.heads.memory_selectors) == 2
    params = parse_params("ssnet", {"consistency": 0.1, "smoothness": False}, "methods.ssnet.params.ACDC")
    assert params.consistency == 0.1 and params.smoothness is False
    with pytest.raises(ConfigError):
        parse_params("ssnet", {"lambda": 1.0}, "methods.ssnet.params.LA")
    # choices and ranges are validated from ssnet.yaml by the config layer, before a method is built
    declared = method_fragment("ssnet")["params"]
    for key, value in {"vat_target": "sometimes", "recompute": "everything", "smoothness_distance": "kl",
                       "supervised_dice": "binary", "power_iterations": 0, "vat_eps": 0.0}.items():
        with pytest.raises(ConfigError, match=key):
            complete(declared, {key: value}, "methods.ssnet.params.LA")
    with pytest.raises(ConfigError, match="supervised_dice"):  # dataset-dependent: checked when built
        make_method(2, supervised_dice="binary_foreground")
    assert {f.name for f in dataclasses.fields(params)} >= {
        "consistency", "consistency_rampup", "rampup_iteration_offset", "separation_weight", "vat_xi",
        "vat_eps", "power_iterations", "elements_per_class", "keep_highest_ranked", "smoothness",
        "separation", "ce_weight"}


@pytest.mark.parametrize("dim", [3, 2])
def test_supervised_loss_is_the_reference_dice(dim):
    torch.manual_seed(0)
    method = make_method(dim, smoothness=False, separation=False)
    batch = make_batch(dim)
    out = method.training_step(batch, StepContext(0, 10))
    with torch.no_grad():  # no dropout, BN on batch statistics: the same logits again
        probs = torch.softmax(method.network(batch.image)[0][: batch.n_labelled], dim=1)
    if dim == 3:  # foreground channel only, binary Dice
        expected = binary_dice_loss(probs[:, 1], batch.label == 1)
    else:  # all classes, squared soft Dice
        expected = dice_loss(probs, batch.label, 4)
    assert out.logs["loss_sup"] == pytest.approx(expected.item(), abs=1e-6)
    assert out.logs["loss_smooth"] == 0 and out.logs["loss_sep_l"] == 0 and out.logs["loss_sep_u"] == 0
    # CE is logged but not added: the loss is the Dice alone
    assert out.logs["loss_ce"] > 0
    assert out.loss.item() == pytest.approx(out.logs["loss_sup"], abs=1e-7)
    with_ce = make_method(dim, smoothness=False, separation=False, ce_weight=0.5)
    out = with_ce.training_step(batch, StepContext(0, 10))
    assert out.loss.item() == pytest.approx(out.logs["loss_sup"] + 0.5 * out.logs["loss_ce"], rel=1e-6)


def test_supervised_dice_form_by_dimension():
    assert make_method(3).supervised_dice == "binary_foreground"
    assert make_method(2).supervised_dice == "multiclass"
    assert make_method(3).smoothness_distance == "binary_dice"
    assert make_method(2).smoothness_distance == "soft_dice"


@pytest.mark.parametrize("dim,offset", [(3, 1), (2, 0)])
def test_consistency_weight_uses_reference_iteration_offset(dim, offset):
    method = make_method(dim)
    p = method.params
    assert p.rampup_iteration_offset == offset
    out = method.training_step(make_batch(dim), StepContext(149, 1000))
    expected = consistency_weight(149 + offset, p.consistency, p.consistency_rampup)
    assert out.logs["consistency_weight"] == expected
    assert (149 + offset) // 150 == (1 if dim == 3 else 0)


@pytest.mark.parametrize("dim", [3, 2])
def test_total_loss_composition(dim):
    method = make_method(dim)
    out, total = step_with_backward(method, make_batch(dim), 7000, 30000)
    logs = out.logs
    expected = logs["loss_sup"] + logs["consistency_weight"] * (
        logs["loss_smooth"] + 0.1 * (logs["loss_sep_l"] + logs["loss_sep_u"]))
    assert total == pytest.approx(expected, rel=1e-5)
    # staged: the supervised and separation part was back-propagated in the step, the rest is returned
    assert out.loss.item() == pytest.approx(logs["consistency_weight"] * logs["loss_smooth"], rel=1e-5)
    assert logs["loss_smooth"] > 0 and logs["loss_sep_l"] > 0 and logs["loss_sep_u"] > 0


@pytest.mark.parametrize("dim", [3, 2])
def test_reused_target_equals_second_clean_forward(dim):
    """Without dropout, reusing the training forward gives the reference's loss and BN statistics."""
    results = {}
    for target in ("separate", "auto"):
        torch.manual_seed(0)
        method = make_method(dim, vat_target=target)
        assert method.vat_target_mode() == ("reuse" if target == "auto" else "separate")
        torch.manual_seed(1)
        _, total = step_with_backward(method, make_batch(dim), 3000, 30000)
        grads = [p.grad.clone() for p in method.network.parameters()]
        results[target] = (torch.tensor(total), bn_buffers(method.network), grads)
    (loss_s, bn_s, grads_s), (loss_a, bn_a, grads_a) = results["separate"], results["auto"]
    torch.testing.assert_close(loss_a, loss_s, rtol=1e-5, atol=1e-6)
    for key in bn_s:
        torch.testing.assert_close(bn_a[key], bn_s[key], rtol=1e-5, atol=1e-6)
        if "num_batches" in key:
            assert int(bn_a[key]) == 2  # the training forward + the VAT clean pass
    for a, b in zip(grads_a, grads_s):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


DROPOUT_NETS = {3: {"arch": "vnet", "n_filters": 2, "dropout": True},
                2: {"arch": "unet", "channels": (4, 8, 16), "dropout": (0.1, 0.2, 0.5)}}


def seeded_step(dim, network, **options):
    """One step with backward of a method seeded as every equivalence test seeds it: (total loss, logs,
    BN buffers, parameter gradients, the global random state after it)."""
    torch.manual_seed(0)
    method = make_method(dim, network=network, **options)
    torch.manual_seed(1)
    out, total = step_with_backward(method, make_batch(dim), 3000, 30000)
    grads = [p.grad.clone() for p in method.parameters() if p.grad is not None]
    return total, out.logs, bn_buffers(method), grads, torch.get_rng_state()


@pytest.mark.parametrize("dim", [3, 2])
@pytest.mark.parametrize("staged_backward,recompute", [(True, "none"), (True, "heads"), (False, "all"), (True, "all")])
def test_memory_saving_modes_are_the_same_computation(dim, staged_backward, recompute):
    """Back-propagating the training graph before the VAT passes, and recomputing the forward and the
    heads in backward, change nothing against one joint backward: loss, gradients, BN statistics
    (a network with active dropout: the same masks must be drawn in the same order)."""
    results = []
    for options in ({"staged_backward": False, "recompute": "none"},
                    {"staged_backward": staged_backward, "recompute": recompute}):
        total, logs, bn, grads, _ = seeded_step(dim, DROPOUT_NETS[dim], **options)
        assert logs["loss_smooth"] > 0 and logs["loss_sep_u"] > 0
        results.append((total, logs, bn, grads))
    (loss_a, logs_a, bn_a, grads_a), (loss_b, logs_b, bn_b, grads_b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    assert logs_b == pytest.approx(logs_a, rel=1e-6)
    assert bn_a.keys() == bn_b.keys()
    for key in bn_a:
        torch.testing.assert_close(bn_b[key], bn_a[key])
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dim,mode", [(3, "prefix"), (2, "separate")])
def test_dropout_target_reuses_the_deterministic_prefix_only(dim, mode):
    """With active dropout the clean pass is the VNet's decoder after the training forward's encoder
    (prefix) or a whole second forward (the UNet drops out in its first block); every BatchNorm layer
    is updated twice either way."""
    method = make_method(dim, network=DROPOUT_NETS[dim])
    assert method.vat_target_mode() == mode
    method.training_step(make_batch(dim), StepContext(0, 10))
    counts = {int(v) for k, v in bn_buffers(method.network).items() if "num_batches" in k}
    assert counts == {2}


def test_prefix_target_needs_a_network_with_a_prefix():
    with pytest.raises(ConfigError, match="vat_target prefix.*UNet"):
        make_method(2, vat_target="prefix")


@pytest.mark.parametrize("staged_backward,recompute", [(False, "none"), (True, "heads"), (True, "all")])
def test_prefix_target_equals_second_clean_forward(staged_backward, recompute):
    """A VNet with dropout: the clean pass from the training forward's encoder outputs draws the same
    masks, in the same order, as the reference's second clean forward: same loss, gradients and BN
    statistics (the encoder's running statistics updated once with momentum 1 - (1 - m)^2)."""
    results = [seeded_step(3, DROPOUT_NETS[3], vat_target=target, staged_backward=staged_backward,
                           recompute=recompute) for target in ("separate", "prefix")]
    assert all(logs["loss_smooth"] > 0 for _, logs, *_ in results)
    (loss_s, logs_s, bn_s, grads_s, rng_s), (loss_p, logs_p, bn_p, grads_p, rng_p) = results
    assert torch.equal(rng_p, rng_s)  # the same number of draws
    assert loss_p == pytest.approx(loss_s, rel=1e-6)
    assert logs_p == pytest.approx(logs_s, rel=1e-6)
    for key in bn_s:
        torch.testing.assert_close(bn_p[key], bn_s[key], rtol=1e-5, atol=1e-6)
    assert len(grads_p) == len(grads_s)
    for a, b in zip(grads_p, grads_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dim", [3, 2])
def test_ablation_switches(dim):
    torch.manual_seed(0)  # the tiny network must predict some labelled pixel right
    no_smooth = make_method(dim, smoothness=False).training_step(make_batch(dim), StepContext(9000, 30000))
    assert no_smooth.logs["loss_smooth"] == 0 and no_smooth.logs["loss_sep_l"] > 0
    no_sep = make_method(dim, separation=False).training_step(make_batch(dim), StepContext(9000, 30000))
    assert no_sep.logs["loss_sep_l"] == 0 and no_sep.logs["loss_sep_u"] == 0 and no_sep.logs["loss_smooth"] > 0


def _sgd(method):
    return torch.optim.SGD(method.optimised_parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


@pytest.mark.parametrize("dim", [3, 2])
def test_two_sgd_steps_change_weights(dim):
    torch.manual_seed(0)
    method = make_method(dim)
    optimiser = _sgd(method)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    batch = make_batch(dim)
    for iteration in range(2):
        optimiser.zero_grad()
        out, _ = step_with_backward(method, batch, iteration, 2)
        optimiser.step()
        assert set(out.logs) >= {"loss_sup", "loss_smooth", "loss_sep_l", "loss_sep_u", "consistency_weight"}
        assert all(torch.isfinite(torch.tensor(v)) for v in out.logs.values())
    after = method.state_dict()
    assert not torch.equal(before["network.out_conv.weight"], after["network.out_conv.weight"])
    assert not torch.equal(before["heads.prediction_head.fc_out.weight"], after["heads.prediction_head.fc_out.weight"])
    assert method.heads.projection_head.training and method.network.training


@pytest.mark.parametrize("dim", [3, 2])
def test_loss_decreases_on_a_fixed_batch(dim):
    torch.manual_seed(0)
    method = make_method(dim)
    optimiser = _sgd(method)
    batch = make_batch(dim, seed=5)
    losses = []
    for _ in range(50):
        optimiser.zero_grad()
        _, total = step_with_backward(method, batch, 20000, 30000)  # constant lambda
        optimiser.step()
        losses.append(total)
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


# ------------------------------------------------------------------------- prototype memory
def _memory_step(method, label):
    """One step with a fixed image and the given labelled batch; returns the method's memory."""
    g = torch.Generator().manual_seed(11)
    image = torch.randn(2 * label.shape[0], 1, *label.shape[1:], generator=g)
    method.training_step(Batch(image, label), StepContext(0, 10))
    return method.memory


def test_absent_class_keeps_its_prototypes_across_iterations():
    """utils/feature_memory.py: a class with no correct labelled pixel keeps its previous prototypes;
    ``persistent_memory: false`` rebuilds the memory (no prototypes for that class)."""
    torch.manual_seed(0)
    persistent = make_method(2, smoothness=False)
    torch.manual_seed(0)
    per_step = make_method(2, smoothness=False, persistent_memory=False)
    with torch.no_grad():  # predict class 3 everywhere: every class-3 label is a correct prediction
        for method in (persistent, per_step):
            method.network.out_conv.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0]))
    full = torch.full((2, 16, 16), 3, dtype=torch.long)
    first = _memory_step(persistent, full)
    kept = first.prototypes[3].clone()
    assert kept.shape[0] == 32 and first.prototypes[1] is None
    second = _memory_step(persistent, torch.zeros_like(full))  # class 3 absent from the labels
    torch.testing.assert_close(second.prototypes[3], kept, rtol=0, atol=0)
    _memory_step(per_step, full)
    assert per_step.memory is None and per_step.extra_state_dict() == {}


def test_memory_is_resume_state(tmp_path):
    torch.manual_seed(0)
    method = make_method(3)
    method.training_step(make_batch(3), StepContext(0, 10))
    assert method.memory.prototypes[1] is not None and method.memory.prototypes[0] is None
    save_torch(tmp_path / "last.pt", {"extra": method.extra_state_dict()})
    restored = make_method(3)
    restored.load_extra_state_dict(load_torch(tmp_path / "last.pt")["extra"])
    for mine, saved in zip(restored.memory.prototypes + restored.memory.source_rows,
                           method.memory.prototypes + method.memory.source_rows):
        assert (mine is None and saved is None) or torch.equal(mine, saved)


def test_resume_equals_uninterrupted(preprocessed, tmp_path):
    """A run killed after its checkpoint and resumed has the prototype memory of the checkpointed
    iteration and ends with the uninterrupted run's weights and log."""
    import copy

    import pandas as pd

    from conftest import KilledAt, kill_at, tiny_run_config
    from ssnet.engine.trainer import RunOutputs, Trainer, train

    def outputs(path):
        return RunOutputs(path / "model.pt", path / "train_log.csv", path / "val_log.csv", path / "run_info.json")

    cfg = tiny_run_config("ACDC", "ssnet", iterations=4, checkpoint_every=2)  # LA's tiny net predicts no foreground yet
    train(cfg, 5, preprocessed["ACDC"], outputs(tmp_path / "full"), tmp_path / "ckpt_full")

    killed = Trainer(cfg, 5, preprocessed["ACDC"], tmp_path / "ckpt")
    at_checkpoint = {}

    def keep_memory_at_checkpoint(done):
        if done == 2:
            at_checkpoint["memory"] = copy.deepcopy(killed.method.memory)

    with pytest.raises(KilledAt):
        killed.fit(on_iteration_end=kill_at(3, each=keep_memory_at_checkpoint))
    resuming = Trainer(cfg, 5, preprocessed["ACDC"], tmp_path / "ckpt")
    resuming.try_resume()
    expected = at_checkpoint["memory"]
    assert resuming.start == 2 and any(p is not None for p in expected.prototypes)
    for mine, saved in zip(resuming.method.memory.prototypes + resuming.method.memory.source_rows,
                           expected.prototypes + expected.source_rows):
        assert (mine is None and saved is None) or torch.equal(mine, saved)
    train(cfg, 5, preprocessed["ACDC"], outputs(tmp_path / "resumed"), tmp_path / "ckpt")
    full = load_torch(tmp_path / "full" / "model.pt")["state_dict"]
    resumed = load_torch(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "train_log.csv"),
                                  pd.read_csv(tmp_path / "resumed" / "train_log.csv"))
