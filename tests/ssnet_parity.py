"""Shared by the SS-Net step parity generator (``tests/golden/make_ssnet_steps.py``) and its test (the
synthetic weights and [norm, sum] statistics are :mod:`parity_common`'s).

- :class:`DrawRecorder` / :class:`DrawReplayer`: the random draws of a training step (dropout noise of
  ``F.dropout`` / ``F.dropout3d`` and ``torch.rand``, the VAT direction), recorded on the reference side
  and replayed on ours, so that parity does not depend on the torch version's random streams.
  :func:`pack_draws` / :func:`unpack_draws` store them compactly (dropout masks as bits).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

DROPOUT_FUNCTIONS = ("dropout", "dropout3d")


# ------------------------------------------------------------------------------------ random draws
@contextlib.contextmanager
def _replaced_draws(dropout_for, rand) -> Iterator[None]:
    """``F.dropout`` / ``F.dropout3d`` replaced by ``dropout_for(name, original)`` and ``torch.rand`` by
    ``rand`` within the block; the originals restored after it."""
    originals = {name: getattr(F, name) for name in DROPOUT_FUNCTIONS}
    original_rand = torch.rand
    try:
        for name in DROPOUT_FUNCTIONS:
            setattr(F, name, dropout_for(name, originals[name]))
        torch.rand = rand
        yield
    finally:
        for name, original in originals.items():
            setattr(F, name, original)
        torch.rand = original_rand


class DrawRecorder:
    """Within :meth:`active`, dropout (p > 0, train mode) and ``torch.rand`` run as usual and are
    recorded in call order: ``events`` (kind, shape, p), ``masks`` (bool keep-masks of the dropout noise)
    and ``uniforms`` (what torch.rand drew, float32).

    The dropout output is ``input * noise`` with ``noise = dropout(ones(noise shape))``, which draws the
    same Bernoulli numbers from the same generator as the plain call and multiplies identically.
    ``torch.rand`` returns its draw converted to ``rand_dtype`` (a float64 run keeps the float32 values)."""

    def __init__(self, rand_dtype: torch.dtype = torch.float32):
        self.rand_dtype = rand_dtype
        self.events: list[dict] = []
        self.masks: list[np.ndarray] = []
        self.uniforms: list[np.ndarray] = []

    @contextlib.contextmanager
    def active(self) -> Iterator["DrawRecorder"]:
        original_rand = torch.rand

        def recording(name, original):
            def dropout(input, p=0.5, training=True, inplace=False):
                if not training or p == 0:
                    return original(input, p, training, inplace)
                shape = noise_shape(name, input)
                noise = original(torch.ones(shape, dtype=input.dtype), p, True)
                self.events.append({"kind": name, "shape": list(shape), "p": float(p)})
                self.masks.append((noise != 0).numpy())
                return input * noise

            return dropout

        def rand(*args, **kwargs):
            out = original_rand(*args, **kwargs)
            self.events.append({"kind": "rand", "shape": list(out.shape), "p": None})
            self.uniforms.append(out.numpy().copy())
            return out.to(self.rand_dtype)

        with _replaced_draws(recording, rand):
            yield self


def noise_shape(kind: str, input: torch.Tensor) -> tuple[int, ...]:
    """Element-wise dropout: the input's shape; feature dropout (3D): (B, C, 1, 1, 1)."""
    if kind == "dropout":
        return tuple(input.shape)
    return tuple(input.shape[:2]) + (1,) * (input.dim() - 2)


class DrawReplayer:
    """Within :meth:`active`, dropout and ``torch.rand`` return the recorded draws in order, checking
    that each call's kind, shape and p are the recorded ones (same draw order as the reference);
    ``torch.rand`` returns them as ``rand_dtype``."""

    def __init__(self, events: list[dict], masks: list[np.ndarray], uniforms: list[np.ndarray],
                 rand_dtype: torch.dtype = torch.float32):
        self.events, self.masks, self.uniforms = list(events), list(masks), list(uniforms)
        self.rand_dtype = rand_dtype
        self.position = 0

    def _next(self, kind: str, shape: tuple[int, ...], p: float | None) -> dict:
        assert self.position < len(self.events), f"unrecorded draw {kind} {shape}"
        event = self.events[self.position]
        self.position += 1
        assert (event["kind"], tuple(event["shape"]), event["p"]) == (kind, tuple(shape), p), (
            f"draw {self.position}: {kind} {tuple(shape)} p={p}, the reference drew {event}")
        return event

    @contextlib.contextmanager
    def active(self) -> Iterator["DrawReplayer"]:
        masks, uniforms = iter(self.masks), iter(self.uniforms)

        def replaying(name, original):
            def dropout(input, p=0.5, training=True, inplace=False):
                if not training or p == 0:
                    return original(input, p, training, inplace)
                self._next(name, noise_shape(name, input), float(p))
                noise = torch.from_numpy(next(masks)).to(input.dtype)
                noise.div_(1 - p)  # as the reference's bernoulli_(1 - p).div_(1 - p)
                return input * noise.to(input.device)

            return dropout

        def rand(*size, **kwargs):
            shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
            self._next("rand", shape, None)
            return torch.from_numpy(next(uniforms).copy()).to(self.rand_dtype)

        with _replaced_draws(replaying, rand):
            yield self
        assert self.position == len(self.events), f"{len(self.events) - self.position} recorded draws unused"


def pack_draws(recorder: DrawRecorder, prefix: str) -> dict:
    """npz arrays: ``<prefix>masks`` (all dropout masks' bits, packed) and ``<prefix>uniforms``."""
    bits = np.concatenate([m.reshape(-1) for m in recorder.masks]) if recorder.masks else np.zeros(0, bool)
    uniforms = (np.concatenate([u.reshape(-1) for u in recorder.uniforms]) if recorder.uniforms
                else np.zeros(0, np.float32))
    return {f"{prefix}masks": np.packbits(bits), f"{prefix}uniforms": uniforms}


def unpack_draws(events: list[dict], arrays, prefix: str, rand_dtype: torch.dtype = torch.float32) -> DrawReplayer:
    """The :class:`DrawReplayer` of ``events`` from :func:`pack_draws`'s arrays."""
    bits = np.unpackbits(arrays[f"{prefix}masks"]).astype(bool)
    uniforms = arrays[f"{prefix}uniforms"]
    masks, draws, at_bit, at_u = [], [], 0, 0
    for event in events:
        n = int(np.prod(event["shape"]))
        if event["kind"] == "rand":
            draws.append(uniforms[at_u:at_u + n].reshape(event["shape"]))
            at_u += n
        else:
            masks.append(bits[at_bit:at_bit + n].reshape(event["shape"]))
            at_bit += n
    assert at_u == uniforms.size and len(bits) - at_bit < 8, "draw arrays do not match the events"
    return DrawReplayer(events, masks, draws, rand_dtype)
