"""Prototype memory and separation loss: parity with the official code, plus hand-checkable cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssnet.networks import SSNetHeads, build_from_reference_state
from ssnet.networks.reference_names import heads_key_pairs, to_reference_state
from ssnet.separation import (PrototypeMemory, build_prototype_memory, class_separation_term,
                              correct_foreground_mask, flatten_pixels, mean_one_weights,
                              separation_loss)


def load_case_heads(golden_dir, case: dict):
    """(network, heads) of a manifest case, built from its ``model_state`` file, heads in train mode."""
    state = torch.load(golden_dir / case["files"]["model_state"], weights_only=True)
    arch = "vnet" if "encoder.block_one.conv.0.weight" in state else "unet"
    network, heads = build_from_reference_state(arch, state)
    return network, heads.train()


def assert_grad_close(actual: torch.Tensor | None, expected: torch.Tensor, name: str) -> None:
    """The golden README's gradient check: max|a - b| <= 1e-6 + 1e-3 * max|b| per tensor."""
    actual = torch.zeros_like(expected) if actual is None else actual.detach()
    bound = 1e-6 + 1e-3 * expected.abs().max().item()
    err = (actual.to(expected.dtype) - expected).abs().max().item()
    assert err <= bound, f"{name}: max |a - b| = {err:.3g} > {bound:.3g}"


def assert_memory_matches(memory: PrototypeMemory, arrays, tol: dict) -> None:
    for c in range(memory.n_classes):
        if f"memory_{c}" not in arrays:
            assert memory.prototypes[c] is None, f"class {c} should have no memory"
            continue
        np.testing.assert_array_equal(memory.source_rows[c].numpy(), arrays[f"kept_in_input_{c}"])
        np.testing.assert_allclose(memory.prototypes[c].numpy(), arrays[f"memory_{c}"], **tol)


def assert_heads_grads(heads: SSNetHeads, expected: dict) -> None:
    ours = dict(heads.named_parameters())
    name_of = dict(heads_key_pairs(heads))
    for key, value in expected.items():
        assert_grad_close(ours[name_of[key]].grad, value, key)


@pytest.mark.parametrize("name", ["prototypes_c2", "prototypes_c4"])
def test_training_loop_steps_match_reference(golden_dir, manifest, name):
    case = manifest["cases"][name]
    tol = case["tolerance"]
    network, heads = load_case_heads(golden_dir, case)
    arrays = np.load(golden_dir / case["files"]["arrays"])
    t = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    n_classes = heads.n_classes

    mask = correct_foreground_mask(t["predictions"], t["labels"])
    np.testing.assert_array_equal(mask.numpy(), arrays["correct_fg_mask"])
    heads.eval()
    with torch.no_grad():
        projected = heads.project(t["embedding"][mask])
    heads.train()
    np.testing.assert_allclose(projected.numpy(), arrays["projected_correct"], **tol["features"])

    memory = build_prototype_memory(heads, projected, t["labels"][mask], n_classes)
    assert_memory_matches(memory, arrays, tol["features"])

    predicted_l = heads.predict(heads.project(t["embedding"]))
    predicted_u = heads.predict(heads.project(t["embedding_unlabelled"]))
    np.testing.assert_allclose(predicted_l.detach().numpy(), arrays["predicted_features_labelled"], **tol["features"])
    np.testing.assert_allclose(predicted_u.detach().numpy(), arrays["predicted_features_unlabelled"], **tol["features"])
    loss_l = separation_loss(heads, predicted_l, t["labels"], memory)
    loss_u = separation_loss(heads, predicted_u, t["pseudo_labels"], memory)
    assert abs(loss_l.item() - case["scalars"]["loss_labelled"]) <= tol["losses"]["atol"]
    assert abs(loss_u.item() - case["scalars"]["loss_unlabelled"]) <= tol["losses"]["atol"]

    (loss_l + loss_u).backward()
    assert_heads_grads(heads, torch.load(golden_dir / case["files"]["grads"], weights_only=True))
    after = torch.load(golden_dir / case["files"]["heads_after"], weights_only=True)
    ours = to_reference_state(network, heads)
    for key, value in after.items():
        if value.dtype == torch.int64:
            assert int(ours[key]) == int(value), key
        else:
            np.testing.assert_allclose(ours[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=key)


def _direct_case(golden_dir, manifest):
    case = manifest["cases"]["prototypes_direct"]
    _, heads = load_case_heads(golden_dir, case)
    arrays = np.load(golden_dir / case["files"]["arrays"])
    return case, heads, arrays


def test_direct_memory_and_loss_match_reference(golden_dir, manifest):
    case, heads, arrays = _direct_case(golden_dir, manifest)
    tol = case["tolerance"]
    n_classes = heads.n_classes
    memory = build_prototype_memory(heads, torch.from_numpy(arrays["memory_input"]),
                                    torch.from_numpy(arrays["memory_labels"]), n_classes)
    assert_memory_matches(memory, arrays, tol["features"])
    query = torch.from_numpy(arrays["query"]).requires_grad_(True)
    loss = separation_loss(heads, query, torch.from_numpy(arrays["query_labels"]), memory)
    assert abs(loss.item() - case["scalars"]["loss"]) <= tol["losses"]["atol"]
    loss.backward()
    assert_grad_close(query.grad, torch.from_numpy(arrays["query_grad"]), "query")
    assert_heads_grads(heads, torch.load(golden_dir / case["files"]["grads"], weights_only=True))


def test_ranking_quirk_and_intended_switch(golden_dir, manifest):
    """Over-full classes: reference keeps the lowest scores ascending; the switch the highest descending."""
    case, heads, arrays = _direct_case(golden_dir, manifest)
    labels = torch.from_numpy(arrays["memory_labels"])
    for keep_highest in (False, True):
        _, heads = load_case_heads(golden_dir, case)  # fresh BN statistics: same scores each time
        memory = build_prototype_memory(heads, torch.from_numpy(arrays["memory_input"]), labels,
                                        heads.n_classes, keep_highest_ranked=keep_highest)
        for c in range(heads.n_classes):
            rows_c = torch.nonzero(labels == c).reshape(-1)
            score = arrays[f"selector_score_{c}"]
            if len(rows_c) <= 32:
                expected = rows_c.numpy()  # all, input order
            else:
                order = np.argsort(-score if keep_highest else score, kind="stable")[:32]
                expected = rows_c.numpy()[order]
            np.testing.assert_array_equal(memory.source_rows[c].numpy(), expected)


def test_loss_is_zero_when_features_equal_their_prototypes():
    torch.manual_seed(0)
    heads = SSNetHeads(3, dim_in=4, feat_dim=8).train()
    direction = torch.randn(8)
    rows = direction * torch.rand(40, 1).add(0.5)  # all parallel: cosine 1 everywhere
    labels = torch.tensor([1] * 20 + [2] * 20)
    memory = build_prototype_memory(heads, rows, labels, 3, elements_per_class=8)
    for weight_prototypes in (False, True):
        loss = separation_loss(heads, rows, labels, memory, weight_prototypes=weight_prototypes)
        assert abs(loss.item()) < 1e-6


def test_weights_have_mean_one_and_factorised_term_equals_matrix_form():
    torch.manual_seed(1)
    heads = SSNetHeads(2, dim_in=4, feat_dim=8).double().train()
    f, m = torch.randn(50, 8, dtype=torch.float64), torch.randn(7, 8, dtype=torch.float64)
    w = mean_one_weights(heads.selector(1), f)
    v = mean_one_weights(heads.memory_selector(1), m)
    assert abs(w.mean().item() - 1) < 1e-12 and abs(v.mean().item() - 1) < 1e-12
    matrix = w[:, None] * v[None, :] * (1 - F.normalize(f, dim=1) @ F.normalize(m, dim=1).T)
    torch.testing.assert_close(class_separation_term(f, m, w, v), matrix.mean())


def test_no_gradient_reaches_prototypes():
    torch.manual_seed(2)
    heads = SSNetHeads(2, dim_in=4, feat_dim=8).train()
    prototypes = torch.randn(5, 8, requires_grad=True)
    memory = PrototypeMemory([None, prototypes], [None, torch.arange(5)])
    features = torch.randn(30, 8, requires_grad=True)
    labels = torch.ones(30, dtype=torch.long)
    for weight_prototypes in (False, True):
        separation_loss(heads, features, labels, memory, weight_prototypes=weight_prototypes).backward()
    assert prototypes.grad is None and features.grad is not None
    built = build_prototype_memory(heads, prototypes, torch.ones(5, dtype=torch.long), 2)
    assert not built.prototypes[1].requires_grad and built.prototypes[0] is None


def test_small_classes_add_nothing_and_sum_is_divided_by_classes():
    torch.manual_seed(3)
    heads = SSNetHeads(4, dim_in=4, feat_dim=8).train()
    proto = torch.randn(6, 8)
    memory = PrototypeMemory([None, proto[:1], proto[1:4], proto[4:]], [None] * 4)
    features = torch.randn(12, 8)
    # class 0: no memory; class 1: one prototype; class 2: one feature; class 3: counted
    labels = torch.tensor([0] * 5 + [1] * 4 + [2] + [3] * 2)
    loss = separation_loss(heads, features, labels, memory)
    w = mean_one_weights(heads.selector(3), features[10:])
    v = torch.ones(2)
    expected = class_separation_term(features[10:], proto[4:], w, v) / 4
    torch.testing.assert_close(loss, expected)


def test_flatten_pixels_follows_reference_order():
    x = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(flatten_pixels(x), x.permute(0, 2, 3, 4, 1).reshape(-1, 3))
