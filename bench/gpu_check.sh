#!/usr/bin/env bash
# Every GPU check of the project in one command, for a machine with an NVIDIA GPU, CuPy and
# cuDNN 9 already installed (the tree is pure Python and runs in place).
#
#   bench/gpu_check.sh check [DIR]   lstm-gpu-check (every path against the float64
#                                    reference, the environment) -> DIR/check.json
#   bench/gpu_check.sh tests [DIR]   lstm-gpu-check, then the whole test suite, GPU tests
#                                    included -> DIR/check.json, DIR/pytest.log (both outputs)
#   bench/gpu_check.sh bench [DIR]   bench_cudnn.py, bench_kernels.py and lstm-gpu-bench
#                                    (also --bidirectional, its table in bench.log)
#                                    -> DIR/bench.log, DIR/cudnn_*.json, DIR/kernels.json,
#                                       DIR/lstm-gpu-bench-<device>.{json,md,png}
#   bench/gpu_check.sh all [DIR]     tests, then bench
#
# DIR defaults to bench/results/. At most eight files are written, so that the whole result
# can be copied off a rented machine in one go. Exit status: non-zero when a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
dir=${2:-bench/results}
mkdir -p "$dir"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0

environment() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$py" -c 'import json; from lstm_gpu.bench.env_info import collect; print(json.dumps(collect(), indent=1))' 2>&1
}

check() {
    "$py" -m lstm_gpu.check --json "$dir/check.json"
}

run_check() {
    check || status=1
}

run_tests() {
    (
        rc=0
        environment
        check || rc=1
        "$py" -m pytest -p no:cacheprovider || rc=1
        exit $rc
    ) 2>&1 | tee "$dir/pytest.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

run_bench() {
    (
        rc=0
        environment
        "$py" bench/bench_cudnn.py --out "$dir" || rc=1
        "$py" bench/bench_kernels.py --out "$dir/kernels.json" || rc=1
        "$py" -m lstm_gpu.bench --out-dir "$dir" --quiet || rc=1
        "$py" -m lstm_gpu.bench --bidirectional --quiet || rc=1  # table in bench.log only
        exit $rc
    ) 2>&1 | tee "$dir/bench.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}

case "$stage" in
    check) run_check ;;
    tests) run_tests ;;
    bench) run_bench ;;
    all) run_tests; run_bench ;;
    *) echo "usage: bench/gpu_check.sh check|tests|bench|all [DIR]" >&2; exit 2 ;;
esac
exit $status
