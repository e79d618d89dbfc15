from __future__ import annotations

import importlib
import os
import sys

from tideflow import Client, Function, errors


def load_functions(spec: str) -> list[Function]:
    """Functions named by `module:attribute`: a `tideflow.Client` or a list of `Function`s."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise errors.ConfigError(f"APP: expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ConfigError(f"APP: cannot import {module_name!r}: {exc}") from exc
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise errors.ConfigError(
            f"APP: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if isinstance(target, Client):
        functions = list(target.functions)
    elif isinstance(target, (list, tuple)) and all(isinstance(item, Function) for item in target):
        functions = [companion for item in target for companion in item.with_companions()]
    else:
        raise errors.ConfigError(
            f"APP: {spec} is neither a tideflow.Client nor a list of tideflow.Function"
        )
    if not functions:
        raise errors.ConfigError(f"APP: {spec} defines no functions")
    return functions


def clients_of(spec: str) -> list[Client]:
    module_name, _, attribute = spec.partition(":")
    target = getattr(sys.modules[module_name], attribute)
    return [target] if isinstance(target, Client) else []
