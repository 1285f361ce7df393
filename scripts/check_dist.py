"""Build the sdist and wheel and check that they are ready for PyPI.

Runs `python -m build`, `twine check --strict`, and then checks what
`twine` does not:

- the wheel holds the package only (`keras_unet2015/` and its
  `.dist-info`): no tests, data, docs, examples or benchmarks;
- `py.typed`, the licence, the console script, the project URLs and the
  classifiers are in the metadata;
- no requirement pins an exact version (the CPU PyTorch pin belongs to
  `requirements/dev.txt`, never to users of the package) and no backend
  is a hard dependency;
- the README (the PyPI long description) has no relative links or images,
  which break on PyPI.

Usage: `python scripts/check_dist.py [--out-dir DIR]`. Prints the wheel's
contents and exits non-zero with a list of problems when a check fails.
"""

import argparse
import email
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "keras_unet2015"
BACKENDS = ("jax", "tensorflow", "torch")
REQUIRED_URLS = ("Homepage", "Documentation", "Source", "Changelog")
# The napari plugin's manifest, found through the `napari.manifest` entry
# point: the one non-code file besides the presets.
NAPARI_MANIFEST = f"{PACKAGE}/napari/napari.yaml"
REQUIRED_FILES = (
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/py.typed",
    NAPARI_MANIFEST,
)
# Trained presets shipped in the wheel: the only non-code files allowed.
PRESET_FILE = re.compile(
    rf"^{PACKAGE}/presets/[a-z0-9_]+/(model\.keras|metadata\.json)$"
)
MAX_PRESET_BYTES = 12_000_000
# Markdown links and images: [text](target) and ![alt](target).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)")
HTML_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def relative_links(markdown):
    """Link and image targets in `markdown` that are not absolute URLs."""
    targets = LINK.findall(markdown) + HTML_REF.findall(markdown)
    return [
        t
        for t in targets
        if not re.match(r"^(https?:|mailto:|#)", t, flags=re.IGNORECASE)
    ]


def wheel_problems(wheel_path):
    problems = []
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        dist_info = [n for n in names if ".dist-info/" in n]
        package = [n for n in names if n.startswith(f"{PACKAGE}/")]
        stray = sorted(set(names) - set(dist_info) - set(package))
        if stray:
            problems.append(f"wheel holds files outside the package: {stray}")
        for required in REQUIRED_FILES:
            if required not in names:
                problems.append(f"wheel lacks {required}")
        presets = [n for n in package if PRESET_FILE.match(n)]
        bad = [
            n
            for n in package
            if not (
                n.endswith((".py", "py.typed"))
                or n in presets
                or n == NAPARI_MANIFEST
            )
            or "/tests/" in n
        ]
        if bad:
            problems.append(f"wheel holds non-code files: {bad}")
        problems += preset_problems(wheel, presets)
        metadata_name = next(n for n in dist_info if n.endswith("/METADATA"))
        metadata = email.message_from_bytes(wheel.read(metadata_name))
        if not any(n.endswith("/LICENSE") for n in dist_info):
            problems.append("wheel lacks the LICENSE file")
        entry_points = [n for n in dist_info if n.endswith("entry_points.txt")]
        if not entry_points or b"keras-unet2015" not in wheel.read(
            entry_points[0]
        ):
            problems.append("wheel lacks the keras-unet2015 console script")
        elif b"keras_unet2015.napari:napari.yaml" not in wheel.read(
            entry_points[0]
        ):
            problems.append("wheel lacks the napari.manifest entry point")
        print(f"Wheel {Path(wheel_path).name}: {len(names)} files")
        for name in names:
            print(f"  {name}")
    problems += metadata_problems(metadata)
    return problems


def preset_problems(wheel, presets):
    """Every preset folder of the tree is in the wheel, whole and small."""
    problems = []
    source = ROOT / PACKAGE / "presets"
    expected = sorted(
        f"{PACKAGE}/presets/{d.name}/{f}"
        for d in source.iterdir()
        if d.is_dir() and (d / "metadata.json").is_file()
        for f in ("metadata.json", "model.keras")
    )
    if sorted(presets) != expected:
        problems.append(
            f"wheel presets {sorted(presets)} differ from the tree's {expected}"
        )
    for name in presets:
        size = wheel.getinfo(name).file_size
        if size > MAX_PRESET_BYTES:
            problems.append(
                f"{name} is {size / 1e6:.1f} MB; presets over "
                f"{MAX_PRESET_BYTES / 1e6:.0f} MB are fetched from a release "
                "URL (presets.register_preset), not shipped"
            )
    return problems


def metadata_problems(metadata):
    problems = []
    if metadata.get("License-Expression") != "Apache-2.0":
        problems.append(
            "License-Expression is "
            f"{metadata.get('License-Expression')!r}, expected 'Apache-2.0'"
        )
    classifiers = metadata.get_all("Classifier") or []
    for needed in ("Typing :: Typed", "Programming Language :: Python :: 3"):
        if needed not in classifiers:
            problems.append(f"classifier {needed!r} missing")
    urls = {u.split(",", 1)[0].strip() for u in metadata.get_all("Project-URL")}
    missing = [u for u in REQUIRED_URLS if u not in urls]
    if missing:
        problems.append(f"project URLs missing: {missing}")
    for requirement in metadata.get_all("Requires-Dist") or []:
        spec, _, marker = requirement.partition(";")
        name = re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]
        if "==" in spec:
            problems.append(f"requirement pins an exact version: {spec}")
        if name.lower() in BACKENDS and "extra ==" not in marker:
            problems.append(f"backend {name} is a hard dependency")
    if metadata.get("Description-Content-Type") != "text/markdown":
        problems.append("long description is not declared as Markdown")
    relative = relative_links(metadata.get_payload())
    if relative:
        problems.append(
            f"README has relative links or images that break on PyPI: "
            f"{relative}; use absolute https:// URLs"
        )
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where to build (a temporary folder by default)",
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="dist-"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out_dir), str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    dists = sorted(out_dir.iterdir())
    subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict"]
        + [str(d) for d in dists],
        check=True,
    )
    wheels = [d for d in dists if d.suffix == ".whl"]
    if len(wheels) != 1:
        sys.exit(f"expected one wheel in {out_dir}, found {dists}")
    problems = wheel_problems(wheels[0])
    if problems:
        print("Distribution check FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("Distribution check passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
