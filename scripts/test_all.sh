#!/usr/bin/env bash
# The full test run: the suite under each Keras backend, ruff, the
# distribution (build, twine check, wheel contents) and the docs.
# Run from the repository root inside the environment made by
# `pip install -r requirements/dev.txt`.
set -uo pipefail

failed=()

# Reuse JAX compilations (e.g. of the initializers of each kernel shape)
# across test workers and runs.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

run_pytest() {
  local backend=$1
  shift
  echo "=== pytest, KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend python -m pytest "$@"
  local rc=$?
  # Exit code 5 means no test was collected: a broken suite, not a pass.
  if [ $rc -eq 5 ]; then
    echo "pytest collected no tests under $backend: failing" >&2
  fi
  [ $rc -eq 0 ] || failed+=("pytest[$backend] (exit $rc)")
}

for backend in ${BACKENDS:-jax tensorflow torch}; do
  run_pytest "$backend" -n "${PYTEST_WORKERS:-2}" "$@"
done

echo "=== ruff ==="
ruff check . || failed+=("ruff check")
ruff format --check . || failed+=("ruff format")

echo "=== python -m build + twine check + wheel contents ==="
python scripts/check_dist.py || failed+=("distribution check")

echo "=== mkdocs build --strict ==="
mkdocs build --strict --site-dir "${SITE_DIR:-site}" || failed+=("mkdocs")

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "All checks passed."
