"""Every public name of the documented modules, and every public member of a public class, has
a docstring: the reference is generated from them.

Names are read as the reference generator (griffe, through mkdocstrings) reads them, so an
alias or a constant documented by the string under it counts.
"""

from __future__ import annotations

import importlib.util

import griffe
import pytest
from _collect import OPTIONAL_MODULES
from tideflow import Settings

# The documented modules; one of OPTIONAL_MODULES (added by another branch) once it exists.
MODULES = [
    "tideflow",
    "tideflow.testing",
    "tideflow.encryption",
    "tideflow.realtime",
    "tideflow.errors",
]
MODULES += [name for name in OPTIONAL_MODULES if importlib.util.find_spec(name) is not None]


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    package = griffe.load("tideflow", allow_inspection=False, resolve_aliases=True)
    assert isinstance(package, griffe.Module)
    return package


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def _undocumented(package: griffe.Module, module_name: str) -> list[str]:
    module = (
        package if module_name == "tideflow" else package[module_name.removeprefix("tideflow.")]
    )
    missing = []
    for name in _public_names(module):
        obj = module[name]
        target = _target(obj)
        if target.is_module:
            continue
        if not (obj.docstring or target.docstring):
            missing.append(name)
        if target.is_class:
            for member_name, member in target.members.items():
                member = _target(member)
                if member_name.startswith("_") or member.is_attribute:
                    continue
                if not member.docstring:
                    missing.append(f"{name}.{member_name}")
    return missing


def _public_names(module: griffe.Module) -> list[str]:
    # `__all__` when the module has one; else what it defines without a leading underscore.
    if module.exports is not None:
        return [str(name) for name in module.exports]
    return [
        name
        for name, member in module.members.items()
        if not name.startswith("_") and not isinstance(member, griffe.Alias)
    ]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(package: griffe.Module, module_name: str) -> None:
    assert _undocumented(package, module_name) == []


def test_every_setting_has_a_description(package: griffe.Module) -> None:
    import dataclasses

    members = package["_settings.Settings"].members
    assert [
        field.name
        for field in dataclasses.fields(Settings)
        if field.name not in members or not members[field.name].docstring
    ] == []
