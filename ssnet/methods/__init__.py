"""Segmentation methods. Every module in this package is imported so its ``@register_method``
classes become available as config ``type`` values: a new method is one new file here."""

import importlib
import pkgutil

from ssnet.methods.base import METHODS, Method, get_method_class, parse_params, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "get_method_class", "parse_params", "register_method"]
