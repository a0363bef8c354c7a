"""The documentation's links: every relative link in every Markdown file of the repository
points at a file or folder that exists (and at a heading that exists, for `#anchor`s), none
leaves the repository, and no file points into a folder beside the checkout."""

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", ".peer", ".jax_cache", "runs", "outputs", "multirun", "wandb",
                "build", "__pycache__", ".pytest_cache"}
# The folder beside a checkout that project files once pointed into; spelled in two parts
# so that this file does not match itself.
OUTSIDE = "../" + "shared"

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+).+?\1")
# [text](target) and ![alt](target); the target may be <bracketed> and followed by a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one nesting level
                         r"\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")  # (target "title")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def repo_files() -> list[pathlib.Path]:
    """The files git would see (tracked, and new ones not ignored); a walk without git."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout
        paths = [REPO / line for line in listed.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        paths = [path for path in REPO.rglob("*")
                 if not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts)]
    return sorted(path for path in paths if path.is_file())


def prose_lines(text: str, keep_code_spans: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked unless kept."""
    lines, fenced = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if fence and (fenced is None or fence.group(1) == fenced):
            fenced = fence.group(1) if fenced is None else None
            continue
        if fenced is None:
            lines.append((number, line if keep_code_spans else CODE_SPAN.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every `#anchor` a Markdown file offers: its headings' slugs (repeats numbered) and
    explicit HTML anchors."""
    found, seen = set(), {}
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text, keep_code_spans=True):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    found.update(HTML_ANCHOR.findall(text))
    return found


def links(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file's prose."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        targets = INLINE_LINK.findall(line) + REFERENCE_DEFINITION.findall(line)
        found += [(number, target.strip("<>")) for target in targets]
    return found


def broken_links(path: pathlib.Path, root: pathlib.Path = REPO) -> list[str]:
    """What is wrong with a Markdown file's relative links, one line each."""
    problems = []
    for number, target in links(path):
        if SCHEME.match(target):
            continue  # a URL
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            resolved = (root / file_part.lstrip("/")).resolve()
        else:
            resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(root):
            problems.append(f"{where}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading with this anchor")
    return problems


def test_slug_follows_github_anchors():
    assert slug("5. One update step and the protocol") == "5-one-update-step-and-the-protocol"
    assert slug("Pending: the paper's protocol on a GPU") == "pending-the-papers-protocol-on-a-gpu"
    assert slug("`preset=cpu`") == "presetcpu"
    assert slug("Seeds, devices and clusters") == "seeds-devices-and-clusters"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#two-words) [url](https://example.org/x)\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#three) [out](../elsewhere.md)\n"
                    "```\n[in code](nowhere.md)\n```\n`[in a span](nowhere.md)`\n")
    problems = broken_links(page, root=tmp_path)
    assert [problem.split(": ", 1)[1] for problem in problems] == [
        "docs/b.md: no such file", "docs/a.md#three: no heading with this anchor",
        "../elsewhere.md: leaves the repository"]


MARKDOWN = [path for path in repo_files() if path.suffix == ".md"]


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(REPO)) for p in MARKDOWN])
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_no_file_points_beside_the_checkout():
    mentions = [str(path.relative_to(REPO)) for path in repo_files()
                if OUTSIDE.encode() in path.read_bytes()]
    assert mentions == []
