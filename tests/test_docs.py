"""The README and docs/ as a newcomer meets them: a README short enough to hold, every link inside the repository
and resolving, and the quick start's commands run as written."""

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
            headings = [line.lstrip("#").strip() for line in file.read_text().splitlines() if line.startswith("#")]
            slugs = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
            assert anchor in slugs, f"{page.name}: no heading #{anchor} in {file.name}"


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
