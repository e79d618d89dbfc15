"""MkDocs hook: writes the reference pages that come from the code, at build time.

- `reference/http.md` from the OpenAPI description the API serves (`tideflow.api.openapi_spec`),
- `reference/cli.md` from the `tideflow` command's argument parser,
- `reference/settings.md` from the `Settings` class (field docstrings read by griffe).

Each replaces a committed placeholder of the same name (which says where the content comes
from), so none of them can drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from collections.abc import Iterator, Mapping
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

GENERATED = ("reference/http.md", "reference/cli.md", "reference/settings.md")


# Public modules whose reference page appears once the module exists (a branch adds it).
OPTIONAL_MODULES = {"tideflow.ai": "Model provider adapters for `ctx.step.ai.infer`."}


def optional_modules() -> dict[str, str]:
    """The optional modules present in this version: module name -> introduction."""
    return {
        name: intro
        for name, intro in OPTIONAL_MODULES.items()
        if importlib.util.find_spec(name) is not None
    }


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Lists each optional module present in the Reference section of the navigation."""
    for section in config.nav or []:
        if isinstance(section, dict) and "Reference" in section:
            for name in optional_modules():
                section["Reference"].append({name: _module_page(name)})
    return config


def _module_page(name: str) -> str:
    return f"reference/{name.removeprefix('tideflow.')}.md"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the generated pages to the site."""
    pages = {
        "reference/http.md": http_page(),
        "reference/cli.md": cli_page(),
        "reference/settings.md": settings_page(),
    }
    for name, intro in optional_modules().items():
        pages[_module_page(name)] = f"# `{name}`\n\n{intro}\n\n::: {name}\n"
    for uri, content in pages.items():
        # The committed page is a placeholder (so links from the README work in a clone).
        placeholder = files.get_file_from_path(uri)
        if placeholder is not None:
            files.remove(placeholder)
        files.append(File.generated(config, uri, content=content))
    return files


# -- HTTP API ------------------------------------------------------------------------------------

_METHODS = ("get", "post", "put", "patch", "delete")


def http_page() -> str:
    """The HTTP API reference, rendered from the served OpenAPI document."""
    from tideflow import api

    spec: dict[str, Any] = api.openapi_spec()
    info = spec.get("info", {})
    lines = [
        "# HTTP API",
        "",
        "Served by `tideflow api` and `tideflow dev` (port 8288 by default). This page is "
        "rendered from the OpenAPI description the server itself serves at "
        "[`GET /openapi.json`](#get-openapijson), "
        f"version {info.get('version', '?')} (OpenAPI {spec.get('openapi', '?')}).",
        "",
        "With `TIDEFLOW_SIGNING_KEY` set, every `/v1` route needs "
        "`Authorization: Bearer <signing key>`; `/e/{event_key}` needs one of the event keys "
        "when any is set; `/health` stays open. See [Settings](settings.md).",
        "",
    ]
    if info.get("description"):
        lines += [info["description"], ""]
    operations = list(_operations(spec))
    lines += ["| request | summary |", "| --- | --- |"]
    for method, path, operation in operations:
        anchor = _anchor(f"{method} {path}")
        lines.append(
            f"| [`{method.upper()} {path}`](#{anchor}) | {_cell(operation.get('summary', ''))} |"
        )
    lines.append("")
    for method, path, operation in operations:
        lines += _operation(spec, method, path, operation)
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name, schema in schemas.items():
            lines += _schema_section(spec, name, schema)
    return "\n".join(lines) + "\n"


def _operations(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                yield method, path, item[method]


def _anchor(text: str) -> str:
    # The id the toc extension gives a heading: lower case, punctuation dropped, spaces to "-".
    kept = "".join(c for c in text.lower() if c.isalnum() or c in " -_")
    return "-".join(kept.split())


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _operation(spec: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]) -> list[str]:
    lines = [f"## {method.upper()} {path}", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"], ""]
    parameters = op.get("parameters", [])
    if parameters:
        lines += [
            "| parameter | in | type | required | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for parameter in parameters:
            parameter = _deref(spec, parameter)
            lines.append(
                f"| `{parameter['name']}` | {parameter.get('in', '')} "
                f"| {_type(spec, parameter.get('schema', {}))} "
                f"| {'yes' if parameter.get('required') else 'no'} "
                f"| {_cell(parameter.get('description', ''))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        body = _deref(spec, body)
        for media, content in body.get("content", {}).items():
            lines.append(f"Request body (`{media}`): {_type(spec, content.get('schema', {}))}")
        if body.get("description"):
            lines += ["", body["description"]]
        lines.append("")
    responses = op.get("responses", {})
    if responses:
        lines += ["| status | description | body |", "| --- | --- | --- |"]
        for status, response in responses.items():
            response = _deref(spec, response)
            bodies = ", ".join(
                f"{_type(spec, content.get('schema', {}))} (`{media}`)"
                for media, content in response.get("content", {}).items()
            )
            lines.append(f"| {status} | {_cell(response.get('description', ''))} | {bodies} |")
        lines.append("")
    return lines


def _deref(spec: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _type(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A schema in a few words, with a link to a named schema's section."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{_anchor(name)})"
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            return " or ".join(_type(spec, option) for option in schema[combiner])
    if "allOf" in schema:
        return " and ".join(_type(spec, option) for option in schema["allOf"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(f"`{k}`" for k in kind)
    if kind == "array":
        return f"array of {_type(spec, schema.get('items', {}))}"
    if "enum" in schema:
        return " or ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if kind:
        return f"`{kind}`" + (f" ({schema['format']})" if "format" in schema else "")
    return "any"


def _schema_section(spec: Mapping[str, Any], name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"], ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for field, field_schema in properties.items():
            lines.append(
                f"| `{field}` | {_type(spec, field_schema)} | "
                f"{'yes' if field in required else 'no'} | "
                f"{_cell(field_schema.get('description', ''))} |"
            )
        lines.append("")
    else:
        lines += [f"Type: {_type(spec, schema)}", ""]
    return lines


# -- command line ----------------------------------------------------------------------------------


def cli_page() -> str:
    """The command-line reference, from the `tideflow` command's own parser."""
    from tideflow import cli

    parser = cli.build_parser()
    lines = [
        "# Command line",
        "",
        "The `tideflow` command, installed with the package. This page is generated from its "
        "argument parser; `tideflow COMMAND --help` prints the same. Every command reads the "
        "`TIDEFLOW_*` [settings](settings.md) from the environment.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
    ]
    for name, subparser, help_text in _subcommands(parser):
        lines += [f"## tideflow {name}", "", f"{help_text[:1].upper()}{help_text[1:]}.", ""]
        if subparser.description and subparser.description != help_text:
            lines += [subparser.description, ""]
        lines += ["```text", subparser.format_usage().strip(), "```", ""]
        lines += _arguments(subparser)
    return "\n".join(lines) + "\n"


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, subparser in action.choices.items():
                yield name, subparser, helps.get(name, "")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(action.option_strings) or action.dest.upper()
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        default = (
            ""
            if action.default in (None, argparse.SUPPRESS) or not action.option_strings
            else f"`{action.default}`"
        )
        rows.append(f"| `{name}` | {_cell(action.help or '')} | {default} |")
    if not rows:
        return ["No arguments.", ""]
    return ["| argument | meaning | default |", "| --- | --- | --- |", *rows, ""]


# -- settings ----------------------------------------------------------------------------------------


def settings_page() -> str:
    """The settings table, from the `Settings` class: names, variables, defaults, docstrings."""
    lines = [
        "# Settings",
        "",
        "Every process reads its settings once, at start, from `TIDEFLOW_*` environment "
        "variables (`tideflow.Settings.from_env`). A bad value stops the process with an error "
        "naming the variable. This table is generated from the "
        "[`Settings`][tideflow.Settings] class.",
        "",
        "| variable | meaning | default |",
        "| --- | --- | --- |",
    ]
    for field, variable, description in settings_rows():
        default = _setting_default(field, variable)
        lines.append(f"| `{variable}` | {_cell(description)} | {default} |")
    return "\n".join(lines) + "\n"


def settings_rows() -> list[tuple[dataclasses.Field[Any], str, str]]:
    """(field, environment variable, description) for every setting, in declaration order."""
    import griffe
    from tideflow import _settings

    module = griffe.load("tideflow._settings", allow_inspection=False)
    members = module["Settings"].members
    rows = []
    for field in dataclasses.fields(_settings.Settings):
        variable = f"TIDEFLOW_{_settings._VARIABLE_OF_FIELD.get(field.name, field.name.upper())}"
        docstring = members[field.name].docstring if field.name in members else None
        rows.append((field, variable, docstring.value if docstring else ""))
    return rows


def _setting_default(field: dataclasses.Field[Any], variable: str) -> str:
    from tideflow import _settings

    value = field.default
    if value is None or value == ():
        return "unset"
    if field.name in _settings._VARIABLE_OF_FIELD:
        # Read as a duration string and kept in seconds: show it as one would write it.
        return f"`{_duration(int(value))}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
