"""Write the "which backend writes what" table of docs/how-to/export.md.

The table is generated from `keras_unet2015.export.NATIVE_FORMATS`, which
`tests/test_export.py` checks on every backend (each native cell is
exported with subprocesses forbidden, every cell is run in its runtime
and compared with Keras). `tests/test_export.py` also checks that the
page holds this script's current output.

Usage:

    python docs/scripts/make_export_table.py          # rewrite the table
    python docs/scripts/make_export_table.py --check  # fail if out of date
"""

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "how-to" / "export.md"
BEGIN = "<!-- export-table:start -->"
END = "<!-- export-table:end -->"
BACKENDS = (("jax", "JAX"), ("tensorflow", "TensorFlow"), ("torch", "PyTorch"))


def table():
    from keras_unet2015 import export

    lines = [
        "| format | " + " | ".join(name for _, name in BACKENDS) + " |",
        "|---|" + "---|" * len(BACKENDS),
    ]
    for format in export.FORMATS:
        if format == "bioimageio":
            continue  # written from the onnx and tf_saved_model graphs
        for free, label in ((True, "any size"), (False, "fixed tile")):
            cells = []
            for backend, _ in BACKENDS:
                native = backend == "tensorflow" or (
                    not free and format in export.NATIVE_FORMATS[backend]
                )
                cells.append("Keras" if native else "TF subprocess")
            lines.append(f"| `{format}`, {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def page_with_table(text):
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    return text[:start] + "\n" + table() + "\n" + text[end:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = PAGE.read_text()
    new = page_with_table(text)
    if args.check:
        if new != text:
            print(f"{PAGE} is out of date: run {__file__}", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
