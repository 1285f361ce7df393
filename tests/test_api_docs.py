"""The API reference: a page per public object, complete docstrings in the
Keras order, and docstring examples that run (as doctests where they show
results with `>>>`).

Examples run in a fresh namespace holding `keras`, `np` (NumPy) and
`keras_unet2015`, in a temporary working directory whose `../shared` is the
project's shared data folder, so that `"../shared/data/isbi2012"` in an
example reads the real files, as it does from a checkout.
"""

import doctest
import importlib.util
import inspect
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_unet2015

ROOT = Path(__file__).resolve().parent.parent
FENCED = re.compile(r"```python\n(.*?)```", re.DOTALL)
# Keras docstring sections, in the order Keras writes them.
SECTION_ORDER = (
    "Args:",
    "Call arguments:",
    "Input shape:",
    "Output shape:",
    "Returns:",
    "Raises:",
    "Example:",
)


def _load_page_script():
    path = ROOT / "docs" / "scripts" / "make_api_pages.py"
    spec = importlib.util.spec_from_file_location("make_api_pages", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGES = _load_page_script()
SECTIONS = PAGES.api_sections()
PUBLIC = [(name, path, obj) for _, _, e in SECTIONS for name, path, obj in e]
PUBLIC_IDS = [path for _, path, _ in PUBLIC]


def _docstring(obj):
    return inspect.cleandoc(obj.__doc__ or "")


def _parameters(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def test_every_public_object_has_an_api_page_and_nav_entry():
    assert PAGES.problems(SECTIONS) == []
    # The core classes are all there (a broken discovery would list none).
    names = {name for name, _, _ in PUBLIC}
    for cls in ("UNet2015", "WeightedPixelLoss", "ElasticDeform"):
        assert cls in names
    assert "OverlapTilePredictor" in names


def test_the_check_catches_a_missing_page(tmp_path, monkeypatch):
    monkeypatch.setattr(PAGES, "ROOT", tmp_path)
    monkeypatch.setattr(PAGES, "DOCS", tmp_path / "docs")
    found = PAGES.problems(SECTIONS)
    assert any("missing page" in p and "UNet2015" in p for p in found)


@pytest.mark.parametrize("name,path,obj", PUBLIC, ids=PUBLIC_IDS)
def test_docstring_is_complete_in_keras_order(name, path, obj):
    doc = _docstring(obj)
    assert doc, f"{path} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.endswith("."), f"{path}: summary line {summary!r}"
    headings = [h for h in SECTION_ORDER if re.search(f"^{h}", doc, re.M)]
    positions = [re.search(f"^{h}", doc, re.M).start() for h in headings]
    assert positions == sorted(positions), (
        f"{path}: sections {headings} are not in the Keras order "
        f"{SECTION_ORDER}"
    )
    parameters = _parameters(obj)
    if parameters:
        assert "Args:" in headings, f"{path} documents no `Args:`"
        args_text = doc[doc.index("Args:") :]
        for parameter in parameters:
            assert re.search(rf"^\s+{parameter}:", args_text, re.M), (
                f"{path}: argument `{parameter}` is not under `Args:`"
            )
    if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer):
        if not issubclass(obj, keras.Model):
            for heading in ("Call arguments:", "Input shape:", "Output shape:"):
                assert heading in headings, f"{path} lacks `{heading}`"
    assert "Example:" in headings, f"{path} has no `Example:` section"
    example = doc[doc.index("Example:") :]
    assert FENCED.search(example), f"{path}: `Example:` has no python block"


def _examples():
    cases = []
    seen = set()
    for name, path, obj in PUBLIC:
        docs = [(path, _docstring(obj))]
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                if not member.startswith("_") and getattr(value, "__doc__", 0):
                    docs.append((f"{path}.{member}", _docstring(value)))
        for where, doc in docs:
            for index, block in enumerate(FENCED.findall(doc)):
                if (where, index) not in seen:
                    seen.add((where, index))
                    cases.append(pytest.param(block, id=f"{where}[{index}]"))
    return cases


EXAMPLES = _examples()


def test_examples_were_found():
    assert len(EXAMPLES) >= len(PUBLIC)


@pytest.mark.parametrize("block", EXAMPLES)
def test_docstring_example_runs(block, tmp_path, monkeypatch, request):
    if "shared/data" in block:
        shared_data = request.getfixturevalue("shared_data")
        (tmp_path / "shared").symlink_to(shared_data.parent)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace = {"keras": keras, "np": np, "keras_unet2015": keras_unet2015}
    if ">>>" in block:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(block, namespace, "example", None, 0)
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
        report = []
        runner.run(test, out=report.append)
        assert runner.failures == 0, "".join(report)
    else:
        exec(compile(block, "<docstring example>", "exec"), namespace)
    # Nothing was written outside the working directory.
    assert sorted(os.listdir(tmp_path)) in (["work"], ["shared", "work"])
