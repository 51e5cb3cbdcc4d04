"""The method interface: what a segmentation method supplies to the one training engine.

A method is an ``nn.Module`` that owns its networks (so ``state_dict``/``to(device)`` cover them),
declares its hyper-parameters in ``ssnet/methods/<type>.yaml`` (type, range or choices, default and
description of each; read by the torch-free config resolution), computes the loss of one training
step, and names the network used at test time. The engine owns everything else: iterations, LR
schedule, sampling, validation, checkpoints, resume, logging.

Adding a method = ``ssnet/methods/<type>.py`` with a ``@register_method("<type>")`` class, its
parameter declaration ``ssnet/methods/<type>.yaml``, plus a config block
``methods.<name>: {type: <type>, params: {<dataset>: {...}}}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import nn

from ssnet.config.params import complete, method_fragment
from ssnet.datasets import DatasetSpec
from ssnet.errors import ConfigError
from ssnet.networks import build_network

METHODS: dict[str, type["Method"]] = {}


def register_method(name: str):
    """Class decorator: make a method available to the config as ``type: <name>``.

    Sets ``cls.Params``: a dataclass of the parameters declared in ``ssnet/methods/<name>.yaml``.
    """

    def decorate(cls: type["Method"]) -> type["Method"]:
        cls.type_name = name
        cls.Params = params_class(name)
        METHODS[name] = cls
        return cls

    return decorate


def params_class(method_type: str) -> type:
    """A dataclass with one field per declared parameter of ``method_type``, defaulting as declared."""
    declared = method_fragment(method_type)["params"]
    fields = [(name, object, field(default=prop["default"])) for name, prop in declared.items()]
    return dataclasses.make_dataclass(f"{method_type}_params", fields)


@dataclass
class Batch:
    """One training batch, labelled samples first.

    image: (B_l + B_u, C, *S) float; label: (B_l, *S) long - unlabelled labels never reach a method.
    """

    image: torch.Tensor
    label: torch.Tensor

    @property
    def n_labelled(self) -> int:
        return self.label.shape[0]

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> "Batch":
        image = self.image.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        return Batch(image, self.label.to(device, non_blocking=True))


@dataclass
class StepContext:
    """Where training stands (0-based ``iteration`` out of ``max_iterations``) and how to back-propagate.

    A method may back-propagate part of its loss inside ``training_step`` with :meth:`backward`
    (freeing that part's graph before it builds the next one) and return the rest; the step's loss
    is the sum, and the gradients are those of the sum. ``scale`` is the engine's loss scaling (AMP).
    """

    iteration: int
    max_iterations: int
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None
    backpropagated: float = 0.0  # value of the loss back-propagated so far in this step

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of ``loss`` (a scalar) now and add its value to ``backpropagated``."""
        with torch.autocast(loss.device.type, enabled=False):
            (self.scale(loss) if self.scale is not None else loss).backward()
        self.backpropagated += float(loss.detach())


@dataclass
class StepOutput:
    """The loss still to back-propagate (see :meth:`StepContext.backward`) and named scalars to log."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    """Base class; subclasses set ``Params`` and implement :meth:`training_step`."""

    type_name: ClassVar[str] = ""
    Params: ClassVar[type]  # set by @register_method from ssnet/methods/<type>.yaml
    uses_unlabelled: ClassVar[bool] = True

    def __init__(self, params: Any, spec: DatasetSpec, network: dict):
        super().__init__()
        self.params = params
        self.spec = spec
        self.network_config = dict(network)
        self.network = self.build_segmenter(network)

    def build_segmenter(self, network: dict) -> nn.Module:
        """The segmentation network from the dataset's ``network`` config block."""
        kwargs = {k: v for k, v in network.items() if k != "arch"}
        return build_network(network["arch"], in_channels=self.spec.in_channels, n_classes=self.spec.n_classes, **kwargs)

    def training_step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        raise NotImplementedError

    def optimised_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the engine's SGD optimiser updates (default: all trainable ones)."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Hook after each SGD step (e.g. an EMA teacher update)."""

    def inference_network(self) -> nn.Module:
        """The network evaluated at test time; its forward returns logits or (logits, ...)."""
        return self.network

    def extra_state_dict(self) -> dict:
        """State outside ``state_dict`` that resume needs (e.g. a method-owned optimiser)."""
        return {}

    def load_extra_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`extra_state_dict`."""


def parse_params(method_type: str, raw: dict | None, where: str) -> Any:
    """The ``Params`` of ``method_type`` from a config dict, checked against its declaration (ConfigError
    naming ``where``) with every default filled."""
    cls = get_method_class(method_type, where)
    return cls.Params(**complete(method_fragment(method_type)["params"], raw, where))


def get_method_class(method_type: str, where: str = "methods") -> type[Method]:
    """Look up a registered method class by its config ``type``."""
    import ssnet.methods  # noqa: F401  (registers the built-in methods)

    if method_type not in METHODS:
        raise ConfigError(f"{where}: unknown method type '{method_type}'; available: {sorted(METHODS)}")
    return METHODS[method_type]


def resolve_supervised_dice(method: str, value: str, spec: DatasetSpec) -> str:
    """The supervised Dice form: ``auto`` = binary foreground Dice in 3D (2 classes), multi-class in 2D."""
    if value == "auto":
        value = "binary_foreground" if spec.dim == 3 else "multiclass"
    if value == "binary_foreground" and spec.n_classes != 2:
        raise ConfigError(f"{method} params: supervised_dice binary_foreground needs 2 classes, "
                          f"dataset {spec.name} has {spec.n_classes}")
    return value
