"""Typed, ranged parameter blocks: validation and defaults from one JSON-schema ``properties`` map.

A parameter declaration is a JSON-schema property with a ``default`` and a ``description``::

    vat_eps: {type: number, exclusiveMinimum: 0, default: 10.0, description: perturbation norm}

Method hyper-parameters (``ssnet/methods/<type>.yaml``) and dataset parameter blocks (the dataset
classes' ``preprocessing_params`` / ``synthetic_params``) are declared this way; :func:`complete`
checks a config block against the declaration and fills every default.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml
from jsonschema import Draft202012Validator

from ssnet.errors import ConfigError


def read_yaml(path: Path):
    """YAML file contents, parsed with libyaml when available (the workflow parses many small files)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _is_integer(checker, instance) -> bool:
    """JSON-schema ``integer`` without ``4.0`` (Python's YAML reads it as a float) or booleans."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
Validator = jsonschema.validators.extend(Draft202012Validator, type_checker=TYPE_CHECKER)


def allowed_text(schema: Mapping[str, Any]) -> str:
    """What a schema allows, in words (``a number > 0``, ``one of ['a', 'b']``, ...)."""
    if "enum" in schema:
        return f"one of {list(schema['enum'])}"
    if "const" in schema:
        return f"exactly {schema['const']!r}"
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(allowed_text(s) for s in schema.get("oneOf", schema.get("anyOf")))
    kind = schema.get("type", "a value")
    kinds = kind if isinstance(kind, list) else [kind]
    words = {"number": "a number", "integer": "an integer", "boolean": "true or false", "string": "a string",
             "array": "a list", "object": "a mapping", "null": "null"}
    text = " or ".join(words.get(k, k) for k in kinds)
    bounds = [f"{op} {schema[key]}" for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                    ("maximum", "<="), ("exclusiveMaximum", "<"))
              if key in schema]
    if "items" in schema and isinstance(schema["items"], Mapping):
        text += " of " + allowed_text(schema["items"]).replace("a ", "", 1).replace("an ", "", 1) + "s"
    if "minItems" in schema or "maxItems" in schema:
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        text += f" with {low} to {high} items" if high is not None and high != low else \
            (f" with {low} items" if high == low else f" with at least {low} items")
    if "multipleOf" in schema:
        bounds.append(f"a multiple of {schema['multipleOf']}")
    return text + (" " + " and ".join(bounds) if bounds else "")


def describe_error(error: jsonschema.ValidationError, prefix: str = "") -> str:
    """One sentence: the dotted key, its value and what is allowed there."""
    parts = [prefix] if prefix else []
    parts += [str(p) for p in error.absolute_path]
    where = ".".join(parts) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if where != "<top level>" else k for k in extra)
        return f"unknown config key(s): {keys} (allowed here: {', '.join(allowed) or 'none'})"
    if error.validator == "required":
        return f"config key {where}: {error.message}"
    return f"config key {where} = {error.instance!r} is not allowed: it must be {allowed_text(error.schema)}"


def check(schema: Mapping[str, Any], value: Any, prefix: str = "") -> None:
    """Raise one ConfigError listing (up to five) violations of ``schema`` by ``value``."""
    errors = sorted(Validator(schema).iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError("; ".join(describe_error(e, prefix) for e in errors[:5]))


def block_schema(properties: Mapping[str, Any]) -> dict:
    """A closed object schema from a ``properties`` map (``default``/``description`` are annotations)."""
    return {"type": "object", "additionalProperties": False, "properties": dict(properties)}


def defaults(properties: Mapping[str, Any]) -> dict:
    """``{name: default}`` of a ``properties`` map."""
    return {name: copy.deepcopy(prop["default"]) for name, prop in properties.items()}


def complete(properties: Mapping[str, Any], values: Mapping[str, Any] | None, where: str) -> dict:
    """``values`` checked against ``properties`` (unknown keys, types, ranges), every default filled.

    ``where`` is the dotted config key of the block, used in the error message.
    """
    values = dict(values or {})
    check(block_schema(properties), values, where)
    return {**defaults(properties), **values}


# ------------------------------------------------------------------------------ method fragments
METHODS_DIR = Path(__file__).resolve().parents[1] / "methods"


def method_types() -> list[str]:
    """Method types that declare their parameters (``ssnet/methods/<type>.yaml``)."""
    return sorted(path.stem for path in METHODS_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def method_fragment(method_type: str) -> dict:
    """The parameter declaration of a method type: ``{"description", "params", "binary_only"}``.

    ``params`` is a JSON-schema properties map (each with ``default``); ``binary_only`` maps a
    parameter to the values that need a two-class dataset.
    """
    path = METHODS_DIR / f"{method_type}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown method type '{method_type}'; available: {method_types()} "
                          "(a method type is ssnet/methods/<type>.py plus its parameters <type>.yaml)")
    fragment = read_yaml(path) or {}
    fragment.setdefault("params", {})
    fragment.setdefault("binary_only", {})
    return fragment
