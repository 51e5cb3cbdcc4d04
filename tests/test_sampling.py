"""Two-stream batch stream and augmentations: invariants, determinism, alignment."""

import numpy as np
import pytest

from ssnet.data import augment
from ssnet.data.loading import BatchStream
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
    padded, _ = augment.pad_for_patch(image, label, (16, 16, 8), extra=3)
    assert padded.shape == (10 + 2 * 6, 30, 8 + 2 * 3)  # (16-10)//2+3 = 6; x > patch: 0; (8-8)//2+3 = 3


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
