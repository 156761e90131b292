#!/bin/sh
# Creates target/py-venv with the real Python `cachetta` package, so that
# `cargo test --test library python_hash` can compare `cachetta::hash` against it.
# Usage: scripts/python-parity-venv.sh   (from anywhere; idempotent)
# Pin a version with CACHETTA_PY_VERSION=0.7.0.
set -eu
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
spec="cachetta${CACHETTA_PY_VERSION:+==$CACHETTA_PY_VERSION}"
if [ ! -x target/py-venv/bin/python ]; then
    mkdir -p target
    "$python" -m venv target/py-venv
fi
target/py-venv/bin/pip install -q --disable-pip-version-check --upgrade "$spec"
target/py-venv/bin/python -c 'import cachetta, importlib.metadata as m; print("cachetta", m.version("cachetta"), "in target/py-venv")'
