#!/usr/bin/env bash
# The GPU checks, on a CUDA machine that has PyTorch but not this project's other packages:
# the wheels in .whl (this project's, TransformerLens and what it imports that such a machine
# lacks) go into a private folder, the device tests run on the GPU, then the engine benchmark.
# Its results file (docs/performance/bench_attribution-cuda.md) is copied to OUT_FOLDER too:
# copy it back into the checkout's docs/performance/.
#   bash benchmarks/gpu.sh OUT_FOLDER
set -uo pipefail
out=${1:?usage: gpu.sh OUT_FOLDER}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
# The checkout's circuitstore/ folder would shadow the installed package (which maps ingest/,
# query/ and schema/ into it): the tests and the benchmark use the installed one.
mv circuitstore circuitstore.checkout
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' | tee -a "$out/gpu.txt"
CIRCUITSTORE_TEST_DEVICE=cuda timeout 150 python3 -m pytest -q -p no:cacheprovider \
  tests/unit/test_devices.py tests/unit/test_attribution_output.py 2>&1 | tee "$out/tests.log" | tail -15
timeout "${BENCH_SECONDS:-380}" python3 benchmarks/bench_attribution.py --device cuda \
  --lengths 64 128 --repeats 3 --exact-repeats 1 --tf32 --write-docs \
  2>&1 | tee "$out/bench.log" | tail -30
cp docs/performance/bench_attribution-cuda.md "$out/" 2>/dev/null
