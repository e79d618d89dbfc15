"""The README's links work from a clean clone: each relative link names a file of the
repository, and each `#anchor` a heading of the page it points to."""

from __future__ import annotations

import pathlib
import re

from _collect import DOCS

ROOT = DOCS.parent
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"```.*?```", re.DOTALL)


def _anchors(page: pathlib.Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.+?)\s*$", _CODE.sub("", page.read_text()), re.MULTILINE)
    # GitHub's and MkDocs' anchor of a heading: lower case, punctuation dropped, spaces to "-".
    return {re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.lower())) for heading in headings}


def broken_links(page: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """The relative links of a Markdown page that lead nowhere inside `root`."""
    broken = []
    for target in _LINK.findall(_CODE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not (linked.is_relative_to(root.resolve()) and linked.exists()):
            broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    return broken


def test_every_link_of_the_readme_works_in_a_clone() -> None:
    assert broken_links(ROOT / "README.md") == []


def test_the_readme_links_to_every_guide_and_nothing_outside_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text
    guides = sorted(str(path.relative_to(ROOT)) for path in (DOCS / "guides").glob("*.md"))
    assert [guide for guide in guides if f"]({guide})" not in text] == []


def test_a_missing_file_an_unknown_anchor_and_a_way_out_are_broken_links(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "other.md").write_text("# Other page\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[a](nowhere.md) [b](#no-such-heading) [c](../outside.md)\n"
        "[ok](other.md#other-page) [ok](#title) [ok](https://example.com)\n"
    )
    assert broken_links(page, root=tmp_path) == ["nowhere.md", "#no-such-heading", "../outside.md"]
