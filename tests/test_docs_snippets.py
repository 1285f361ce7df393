"""Runs the code of the how-to guides and the FAQ, so that the docs cannot rot.

Every fenced block of the pages in `PAGES` runs, page by page, in order, in
one fresh namespace per page and in a temporary working directory:

- ```` ```python ```` blocks are executed as they are written;
- ```` ```bash ```` blocks whose commands are all `keras-unet2015 ...` run
  through the command line's entry point (`keras_unet2015.cli.main`, what
  the console script calls) in this process, with the current backend, and
  must exit with 0;
- ```` ```text ```` blocks are output shown to the reader and are not run.

A block that cannot run here (an installation command, a full-size
training run) is marked on the line before it with a reason, and must be
rare:

    <!-- skip-test: installs packages -->

Two more markers restrict a block instead of skipping it:
`<!-- test-backends: jax tensorflow -->` (runs only on these backends; the
page's text says why) and `<!-- test-requires: onnx onnxruntime -->` (runs
only where these modules import). Any other block, or a bash block with
other commands, fails the test: it would be text the reader copies that
nothing checks.

docs/how-to/other_models.md has its own test and is not listed here.
"""

import importlib.util
import re
import shlex
from pathlib import Path

import keras
import pytest

from keras_unet2015 import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = (
    "docs/how-to/own_images.md",
    "docs/how-to/multi_class.md",
    "docs/how-to/instance_targets.md",
    "docs/how-to/huge_images.md",
    "docs/how-to/napari.md",
    "docs/how-to/backends.md",
    "docs/how-to/mixed_precision.md",
    "docs/how-to/saving.md",
    "docs/how-to/export.md",
    "docs/faq.md",
)
RUN_LANGUAGES = ("python", "bash")
SHOW_LANGUAGES = ("text",)
BACKEND = keras.backend.backend()

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(
    r"^<!--\s*(skip-test|test-backends|test-requires):(.*)-->$"
)


class Block:
    def __init__(self, page, line, language, code, markers):
        self.page = page
        self.line = line
        self.language = language
        self.code = code
        self.markers = markers

    def __repr__(self):
        return f"{self.page}:{self.line} ({self.language})"


def extract_blocks(text, page="<page>"):
    """The fenced code blocks of a Markdown text, with their markers.

    Markers are HTML comments on the non-blank lines right before the
    opening fence. Indented fences (inside admonitions or lists) count too.
    """
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        match = _FENCE.match(stripped)
        if not match:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        markers = {}
        j = i - 1
        while j >= 0 and lines[j].strip():
            marker = _MARKER.match(lines[j].strip())
            if not marker:
                break
            markers[marker.group(1)] = marker.group(2).strip()
            j -= 1
        body = []
        fence_line = i + 1
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}: code block without a closing fence")
        blocks.append(
            Block(page, fence_line, match.group(1), "\n".join(body), markers)
        )
        i += 1
    return blocks


def cli_commands(code):
    """The argument lists of a bash block of `keras-unet2015` commands.

    Returns `None` when the block holds anything else.
    """
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if words[0] != "keras-unet2015":
            return None
        commands.append(words[1:])
    return commands


def skip_reason(block):
    """Why a block does not run here, or `None`."""
    if "skip-test" in block.markers:
        return block.markers["skip-test"] or "marked skip-test"
    if "test-backends" in block.markers:
        backends = block.markers["test-backends"].split()
        if BACKEND not in backends:
            return f"runs on {', '.join(backends)} only"
    if "test-requires" in block.markers:
        missing = [
            name
            for name in block.markers["test-requires"].split()
            if importlib.util.find_spec(name) is None
        ]
        if missing:
            return f"needs {', '.join(missing)}, not installed"
    return None


def run_block(block, namespace):
    if block.language == "python":
        code = compile(block.code, f"{block.page}:{block.line}", "exec")
        exec(code, namespace)
        return
    for argv in cli_commands(block.code):
        assert cli.main(argv) == 0, f"{block}: keras-unet2015 {argv} failed"


def test_extract_blocks_reads_markers_and_indented_fences():
    text = (
        "Intro\n\n"
        "```python\nx = 1\n```\n\n"
        "<!-- skip-test: downloads data -->\n"
        "```bash\npip install foo\n```\n\n"
        "!!! note\n    <!-- test-backends: jax -->\n    ```python\n    y = 2\n"
        "    ```\n"
    )
    blocks = extract_blocks(text)
    assert [(b.language, b.code) for b in blocks] == [
        ("python", "x = 1"),
        ("bash", "pip install foo"),
        ("python", "y = 2"),
    ]
    assert blocks[0].markers == {}
    assert blocks[1].markers == {"skip-test": "downloads data"}
    assert blocks[2].markers == {"test-backends": "jax"}
    assert [b.line for b in blocks] == [3, 8, 14]  # the opening fences


def test_cli_commands_accepts_only_the_command_line():
    code = "keras-unet2015 train --images a \\\n    --labels b  # comment\n"
    assert cli_commands(code) == [["train", "--images", "a", "--labels", "b"]]
    assert cli_commands("keras-unet2015 demo\nrm -rf run") is None


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_runnable_or_marked(page):
    blocks = extract_blocks((ROOT / page).read_text(), page)
    for block in blocks:
        assert block.language in RUN_LANGUAGES + SHOW_LANGUAGES, (
            f"{block}: give the block a language (python, bash or text)"
        )
        if block.language == "bash" and "skip-test" not in block.markers:
            assert cli_commands(block.code) is not None, (
                f"{block}: only keras-unet2015 commands can be run; mark "
                "other shell blocks <!-- skip-test: reason -->"
            )
    running = [
        b
        for b in blocks
        if b.language in RUN_LANGUAGES and "skip-test" not in b.markers
    ]
    assert running, f"{page} has no tested code block"


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    ran, skipped = 0, []
    for block in extract_blocks((ROOT / page).read_text(), page):
        if block.language not in RUN_LANGUAGES:
            continue
        reason = skip_reason(block)
        if reason is not None:
            skipped.append(f"{block}: {reason}")
            continue
        run_block(block, namespace)
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))
