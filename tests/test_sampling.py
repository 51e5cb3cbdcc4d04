"""Two-stream batch stream and augmentations: invariants, determinism, alignment, and the same batches as
the straightforward computation (whole-volume rot90/flip, np.pad, crop; scipy rotate and zoom)."""

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from ssnet.data import augment
from ssnet.data.loading import BatchStream, training_loader
from ssnet.datasets import get_dataset
from ssnet.errors import ConfigError
from ssnet.seeding import rng_for


def _stream(n_labelled=5, n_unlabelled=7, bl=2, bu=3, seed=0, iterations=20):
    # Each image is filled with its own item id so the batch reveals which items it holds.
    labelled = [(np.full((4, 4), i, np.float32), np.full((4, 4), i, np.uint8)) for i in range(n_labelled)]
    unlabelled = [np.full((4, 4), 100 + i, np.float32) for i in range(n_unlabelled)]
    identity = lambda image, label, rng: (image, label)  # noqa: E731
    return BatchStream(labelled, unlabelled, bl, bu, seed, identity, iterations)


def _ids(stream, t):
    image, label = stream[t]
    return image[:, 0, 0, 0].numpy().astype(int), label[:, 0, 0].numpy()


def test_labelled_first_then_unlabelled():
    stream = _stream()
    image, label = stream[0]
    assert image.shape == (5, 1, 4, 4) and label.shape == (2, 4, 4)
    ids, label_ids = _ids(stream, 0)
    assert all(i < 100 for i in ids[:2]) and all(i >= 100 for i in ids[2:])
    assert np.array_equal(ids[:2], label_ids)  # labels travel with their images


def test_each_epoch_visits_labelled_items_once():
    stream = _stream(n_labelled=6, bl=2)
    for epoch in range(3):
        seen = np.concatenate([_ids(stream, t)[0][:2] for t in range(epoch * 3, epoch * 3 + 3)])
        assert sorted(seen) == list(range(6))


def test_unlabelled_stream_cycles_through_permutations():
    stream = _stream(n_labelled=8, n_unlabelled=4, bl=2, bu=2)  # 4 batches/epoch -> 8 unlabelled draws
    draws = np.concatenate([_ids(stream, t)[0][2:] for t in range(4)]) - 100
    assert sorted(draws[:4]) == sorted(draws[4:]) == [0, 1, 2, 3]


def test_deterministic_and_random_access():
    a, b = _stream(seed=3), _stream(seed=3)
    forward = [_ids(a, t)[0] for t in range(10)]
    backward = [_ids(b, t)[0] for t in reversed(range(10))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(forward, backward))
    other = [_ids(_stream(seed=4), t)[0] for t in range(10)]
    assert not all(np.array_equal(x, y) for x, y in zip(forward, other))


def test_too_few_labelled_items_is_a_config_error():
    with pytest.raises(ConfigError, match="batch_labelled"):
        _stream(n_labelled=1, bl=2)


def _aligned_pair(shape, seed=0):
    label = (rng_for(seed, "label").random(shape) > 0.5).astype(np.uint8)
    return label.astype(np.float32) * 10 + 1, label


@pytest.mark.parametrize("seed", range(5))
def test_la_augmentation_keeps_image_and_label_aligned(seed):
    image, label = _aligned_pair((20, 18, 12), seed)
    out_image, out_label = augment.augment_la(image, label, rng_for(seed), patch=(16, 16, 8))
    assert out_image.shape == out_label.shape == (16, 16, 8)
    assert np.array_equal(out_image, out_label * 10 + 1)


def test_la_crop_pads_small_volumes():
    image, label = _aligned_pair((10, 30, 8))
    out_image, out_label = augment.random_crop(image, label, (16, 16, 8), rng_for(0), extra=3)
    assert out_image.shape == (16, 16, 8)
    assert augment.pad_widths(image.shape, (16, 16, 8), extra=3) == [6, 0, 3]  # (16-10)//2+3; x > patch; 0+3


@pytest.mark.parametrize("seed", range(8))
def test_acdc_augmentation_keeps_alignment_and_size(seed):
    image, label = _aligned_pair((30, 26), seed)
    out_image, out_label = augment.augment_acdc(image, label, rng_for(seed), patch=(32, 32))
    assert out_image.shape == out_label.shape == (32, 32)
    inside = out_image != 0  # rotation fills the corners with 0 in both arrays
    assert np.array_equal(out_image[inside], out_label[inside] * 10.0 + 1)
    assert not out_label[~inside].any()


def test_unlabelled_sample_needs_no_label():
    image, _ = _aligned_pair((20, 18, 12))
    out_image, out_label = augment.augment_la(image, None, rng_for(1), patch=(16, 16, 8))
    assert out_label is None and out_image.shape == (16, 16, 8)


# ------------------------------------------------------------------ same numbers as the direct computation
def _direct_la(image, label, rng, patch, extra):
    """The LA pipeline on whole arrays: rot90 + flip copies, np.pad, then the crop."""
    k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
    arrays = [np.ascontiguousarray(np.flip(np.rot90(a, k), axis=axis)) for a in (image, label) if a is not None]
    if not all(s > p for s, p in zip(arrays[0].shape, patch)):
        widths = [(w, w) for w in (max((p - s) // 2 + extra, 0) for s, p in zip(arrays[0].shape, patch))]
        arrays = [np.pad(a, widths) for a in arrays]
    starts = [int(rng.integers(0, s - p)) if s > p else 0 for s, p in zip(arrays[0].shape, patch)]
    arrays = [a[tuple(slice(o, o + p) for o, p in zip(starts, patch))] for a in arrays]
    return arrays[0], (arrays[1] if label is not None else None)


def _direct_acdc(image, label, rng, patch):
    """The ACDC pipeline with scipy on whole arrays: rot90 + flip or rotate, then zoom (order 0)."""
    arrays = [image, label]
    if rng.random() > 0.5:
        k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        arrays = [np.flip(np.rot90(a, k), axis=axis) for a in arrays]
    elif rng.random() > 0.5:
        angle = int(rng.integers(-20, 20))
        arrays = [ndimage.rotate(a, angle, order=0, reshape=False) for a in arrays]
    return tuple(ndimage.zoom(a, [t / s for t, s in zip(patch, a.shape)], order=0) for a in arrays)


@pytest.mark.parametrize("seed", range(40))
def test_la_augmentation_equals_direct_computation(seed):
    rng = rng_for(seed, "shape")
    shape, patch = tuple(rng.integers(14, 40, 3)), tuple(rng.integers(12, 32, 3))
    image = rng.standard_normal(shape).astype(np.float32)
    label = rng.integers(0, 2, shape).astype(np.uint8)
    extra = int(rng.integers(0, 4))  # 0 keeps the reference's short crops of odd deficits
    for lab in (label, None):
        expected = _direct_la(image, lab, rng_for(seed), patch, extra)
        got = augment.augment_la(image, lab, rng_for(seed), patch, extra)
        assert np.array_equal(got[0], expected[0])
        assert (got[1] is None) if lab is None else np.array_equal(got[1], expected[1])


@pytest.mark.parametrize("seed", range(60))
def test_acdc_augmentation_equals_direct_computation(seed):
    rng = rng_for(seed, "shape")
    shape = tuple(rng.integers(20, 80, 2))
    patch = (32, 32) if seed % 2 else tuple(rng.integers(10, 90, 2))
    image = rng.standard_normal(shape).astype(np.float32)
    label = rng.integers(0, 4, shape).astype(np.uint8)
    expected = _direct_acdc(image, label, rng_for(seed), patch)
    got = augment.augment_acdc(image, label, rng_for(seed), patch)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and np.array_equal(g, e)


def test_zoom_keeps_scipys_zero_border():
    """scipy's order-0 zoom writes 0 where its coordinate falls just outside the input (here: the last row)."""
    image = np.arange(1, 372 * 303 + 1, dtype=np.float32).reshape(372, 303)
    expected = ndimage.zoom(image, (180 / 372, 104 / 303), order=0)
    assert not expected[-1].any()
    assert np.array_equal(augment.zoom_to(image, None, (180, 104))[0], expected)


def _items(shapes, classes):
    out = []
    for i, shape in enumerate(shapes):
        rng = rng_for(7, "item", i)
        out.append((rng.standard_normal(shape).astype(np.float32), rng.integers(0, classes, shape).astype(np.uint8)))
    return out


def _digest(batch):
    digest = hashlib.sha256()
    for tensor in batch:
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


# Batches of iterations 0..11 of the streams below, computed before the loader was optimised.
FROZEN = {
    "LA": ["b055d9955bf7a4c2", "583119d265588e37", "aec42439684d1830", "ef280e962637235c", "c53df8ac9490b13d",
           "45bd0d8b248cad06", "ee36a7bafb637ede", "11da138bc6af10c8", "7081cb23c6298e3a", "8eec9d28252d1e7a",
           "6ba13718bcbf2efa", "3c49e664dd9b1888"],
    "ACDC": ["ad6c83c8b1fd9555", "106c3fd9dd6e7424", "878a0c565b5d42d8", "d1cc7d5bad584bb5", "cb61234e034e3239",
             "8a23971dd55d761a", "b8b07cbd24270c2d", "2fd98ce8a8682100", "4c907f525370f5d6", "0ff46304213e510d",
             "cd86b57bdabcafbd", "616aa2ad34fc9f6d"],
}
STREAMS = {  # item shapes (the first 4 labelled), patch, classes, labelled + unlabelled batch
    "LA": ([(36, 40, 20), (40, 34, 22), (30, 44, 16), (38, 38, 18), (33, 36, 17), (42, 31, 20)], (32, 32, 16), 2, 2, 2),
    "ACDC": ([(40, 34), (34, 40), (36, 36), (44, 30), (30, 28), (38, 42), (32, 46), (41, 37)], (32, 32), 4, 3, 3),
}


def _dataset_stream(name):
    shapes, patch, classes, bl, bu = STREAMS[name]
    items, dataset = _items(shapes, classes), get_dataset(name)
    return BatchStream(items[:4], [image for image, _ in items[4:]], bl, bu, 11,
                       lambda image, label, rng: dataset.augment(image, label, rng, patch, 3), 40)


@pytest.mark.parametrize("name", ["LA", "ACDC"])
def test_batches_equal_frozen_checksums(name):
    stream = _dataset_stream(name)
    assert [_digest(stream[t]) for t in range(12)] == FROZEN[name]


@pytest.mark.parametrize("name", ["LA", "ACDC"])
def test_loader_batches_do_not_depend_on_workers(name):
    stream = _dataset_stream(name)
    serial = [_digest(batch) for batch in training_loader(stream, 0, pin_memory=False)]
    parallel = [_digest(batch) for batch in training_loader(stream, 2, pin_memory=False)]
    assert serial == parallel and len(serial) == 40 and serial[:12] == FROZEN[name]
