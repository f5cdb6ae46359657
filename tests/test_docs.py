"""The README and docs/ as a newcomer meets them: a README short enough to hold, every link inside the repository
and resolving, every page and section the code names existing, nothing citing notes kept outside the repository
(the method's facts live in docs/method.md), and the quick start's commands run as written."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
from PIL import Image

from tests.support import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # a Markdown link's target
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s)`'\"]+")  # any URL, in prose or in code
LOOPBACK = re.compile(r"^[a-z]+://(127\.0\.0\.1|localhost|\[::1\])(?![\w.-])")  # this machine: a server of ours
REFERENCE = re.compile(r"\bdocs/([\w.-]+\.md)(?:#([\w-]+))?")  # a page of docs/ named in code or prose, and its section
# the notes the project was started from, outside the repository, and their section numbers (spec, then a number)
OUTSIDE_NOTES = re.compile("SPEC_" + "AUDIOTOKEN|DESIGN" + r"\.md|\bspec (section )?(\d|Q\d)", re.I)


def test_the_readme_is_at_most_250_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_link_leaves_the_repository_and_every_link_resolves(page):
    text = page.read_text()
    outside = [url for url in URL.findall(text) if not LOOPBACK.match(url)]
    assert not outside, f"{page.name} links outside the repository: {outside}"
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_relative_to(REPO) and file.exists(), f"{page.name}: {target} does not resolve"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: no heading #{anchor} in {file.name}"


def anchors(page) -> set[str]:
    """The anchors of a Markdown page's headings, as GitHub makes them."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def repository_texts() -> dict[str, str]:
    """Every text file of the repository (tracked, or new and not ignored) by its path."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    texts = {}
    for name in filter(None, listed.split("\0")):
        data = (REPO / name).read_bytes() if (REPO / name).is_file() else b"\0"
        if b"\0" not in data:
            texts[name] = data.decode(errors="replace")
    return texts


def test_every_page_and_section_the_repository_names_exists():
    """``docs/method.md#audio`` in a docstring or a comment is a reference like a link: the page and its heading
    must exist, so renaming a section cannot leave the code pointing at nothing."""
    texts = repository_texts()
    assert "docs/method.md" in texts and "runtime/contract.py" in texts  # the listing sees docs and code
    broken = []
    for name, text in texts.items():
        for page, anchor in REFERENCE.findall(text):
            target = REPO / "docs" / page
            if not target.is_file() or (anchor and anchor not in anchors(target)):
                broken.append(f"{name}: docs/{page}{'#' + anchor if anchor else ''}")
    assert not broken


def test_nothing_cites_the_notes_kept_outside_the_repository():
    """The method's facts are the project's own (docs/method.md): no file names the outside spec or design notes,
    or cites their section numbers."""
    cited = [
        f"{name}:{text.count(chr(10), 0, found.start()) + 1}: {found.group()}"
        for name, text in repository_texts().items()
        for found in OUTSIDE_NOTES.finditer(text)
    ]
    assert not cited


def quick_start() -> list[str]:
    """The commands of the README's quick start (its first bash block), comments dropped."""
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "the README has no quick start"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_quick_start_is_the_two_commands():
    assert quick_start() == ["./dev demo", "./dev test"]


@pytest.mark.slow  # about a minute: sets up (quick when all is there), makes random models, exports and draws
def test_the_quick_starts_demo_draws_its_picture_as_written():
    command = quick_start()[0]
    run = subprocess.run(shlex.split(command), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    picture = REPO / ".cache/demo/pictures/3YOH4c9HXpo_290000_300000.png"
    assert str(picture.relative_to(REPO)) in (REPO / "README.md").read_text()  # where the README says it is
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.size[0] > 0
