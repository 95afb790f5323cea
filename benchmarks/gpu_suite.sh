#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py; benchmarks/README.md): this wrapper only keeps the old command working.
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_suite.py" "$@"
