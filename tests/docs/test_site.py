"""The docs site builds strictly, offline, and its reference holds every public name."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
from _collect import DOCS, OPTIONAL_MODULES


def public_names(module_name: str) -> list[str]:
    """A module's `__all__` (or, without one, what it defines without a leading underscore),
    submodules left out: they have pages of their own."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name
        ]
    return [name for name in names if not isinstance(getattr(module, name), types.ModuleType)]


ROOT = DOCS.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The site, built once by `mkdocs build --strict` into a temporary directory."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        # No proxy: a build that reaches for the internet fails here as it would offline.
        env={
            **os.environ,
            "NO_MKDOCS_2_WARNING": "1",
            "http_proxy": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
        },
    )
    assert built.returncode == 0, built.stderr
    warnings = [line for line in built.stderr.splitlines() if "WARNING" in line]
    assert warnings == []
    return out


def test_the_site_builds_strictly(site: pathlib.Path) -> None:
    for page in ("index.html", "guides/quickstart/index.html", "reference/http/index.html"):
        assert (site / page).is_file(), page


def test_the_site_fetches_nothing_from_the_internet(site: pathlib.Path) -> None:
    # A page may link out; it must not load a script, a stylesheet or a font from elsewhere.
    loads = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["'](https?:)?//""")
    offenders = [
        str(page.relative_to(site))
        for page in site.rglob("*.html")
        if loads.search(page.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("page", "module"),
    [
        ("reference/python", "tideflow"),
        ("reference/testing", "tideflow.testing"),
        ("reference/encryption", "tideflow.encryption"),
        ("reference/realtime", "tideflow.realtime"),
        ("reference/errors", "tideflow.errors"),
        *(
            (f"reference/{name.removeprefix('tideflow.')}", name)
            for name in OPTIONAL_MODULES
            if importlib.util.find_spec(name) is not None
        ),
    ],
)
def test_every_public_name_has_its_entry_in_the_reference(
    site: pathlib.Path, page: str, module: str
) -> None:
    html = (site / page / "index.html").read_text()
    missing = [name for name in public_names(module) if f'id="{module}.{name}"' not in html]
    assert missing == []


def test_the_generated_references_cover_the_cli_the_settings_and_the_http_api(
    site: pathlib.Path,
) -> None:
    from tideflow import Settings, api, cli

    (commands,) = [
        action.choices
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    html = (site / "reference/cli/index.html").read_text()
    assert [name for name in commands if f"tideflow {name}" not in html] == []
    html = (site / "reference/settings/index.html").read_text()
    assert [name for name in sorted(Settings.variables()) if name not in html] == []
    html = (site / "reference/http/index.html").read_text()
    paths = api.openapi_spec()["paths"]
    assert paths
    assert [path for path in paths if path not in html] == []
