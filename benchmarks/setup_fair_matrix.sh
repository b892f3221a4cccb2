#!/bin/sh
# fair-matrix 0.2.6 in its own virtual environment, benchmarks/.venv-fair-matrix: the project never imports it.
# Ray is held below 2.56 because fair-matrix calls ray.put(..., _owner=...), which Ray 2.56 removed.
set -e
cd "$(dirname "$0")"
python3 -m venv .venv-fair-matrix
.venv-fair-matrix/bin/pip install --quiet 'fair-matrix[agent]==0.2.6' 'ray[default]>=2.48,<2.56'
