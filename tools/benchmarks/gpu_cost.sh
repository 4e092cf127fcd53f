#!/usr/bin/env bash
# The GPU cost tables of docs/benchmarks.md (section 8), one command:
#   bash tools/benchmarks/gpu_cost.sh OUT_DIR [quick]
# Inference latency and peak memory of the Cityscapes (R50-D8, 1024x2048)
# and CamVid (MobileNetV2-D8, 360x480) configs with the head in bf16 and
# in fp32 (the default), the dense blocks beside the
# separable ones, the profiler's top kernels of one DDIM-1 prediction,
# training time per iteration from the E2E cache and on the fly, and the
# CUDA-only tests, most important first. "quick" is the CPU dry run of
# the same commands (tiny inputs, one repeat). With PACK=FILE.tgz set,
# OUT_DIR is packed into it after each measurement (what a run that is
# stopped early has measured).
set -euo pipefail
out=${1:?usage: gpu_cost.sh OUT_DIR [quick]}
mkdir -p "$out"
CAMVID=configs/resensemble/resensemble_deeplabv3plus-m-v2-d8_1xb8-1k_camvid-360x480.py
CITY=configs/resensemble/resensemble_deeplabv3plus-r50-d8_4xb2-80k_cityscapes-512x1024.py
if [ "${2:-}" = quick ]; then
  CAMVID_SHAPE="64 64"; CITY_SHAPE="64 128"; REP="--repeats 1 --warmup 0"
  TRAIN="--iters 2 --warmup 1 --images 4 --batch-size 2"
else
  CAMVID_SHAPE="360 480"; CITY_SHAPE="1024 2048"; REP="--repeats 10 --warmup 3"
  TRAIN="--iters 10 --warmup 3 --images 16 --size 360 480"
fi
pack() {
  if [ -n "${PACK:-}" ]; then
    tar czf "$PACK" -C "$(dirname "$out")" "$(basename "$out")"
  fi
}
lat() {  # name config options...
  local name=$1 config=$2; shift 2
  python tools/benchmarks/bench_latency.py "$config" $REP \
      --out "$out/$name.json" "$@" 2>&1 | sed '/Warning/d' | tee "$out/$name.txt"
  pack
}
for prec in bf16 fp32; do
  lat city_separable_$prec $CITY --shape $CITY_SHAPE --steps 1 2 4 --autocast $prec \
      --cfg-options model.decode_head.denoiser.block_type=separable
  lat camvid_separable_$prec $CAMVID --shape $CAMVID_SHAPE --steps 1 2 4 --autocast $prec \
      --cfg-options model.decode_head.denoiser.block_type=separable
done
lat city_dense_fp32 $CITY --shape $CITY_SHAPE --steps 1 4 --autocast fp32 \
    --cfg-options model.decode_head.denoiser.block_type=dense
lat city_profile $CITY --shape $CITY_SHAPE --steps 1 --repeats 0 --profile \
    --cfg-options model.decode_head.denoiser.block_type=separable
# the CUDA-only tests (no host synchronisation, noise drawn on the device,
# autocast='auto' is bf16 there, the split GroupNorm)
python -m pytest -q -p no:cacheprovider tests/test_models/test_no_host_sync.py \
    tests/test_models/test_residual_diffusion_head.py \
    tests/test_models/test_parallel_group_norm.py 2>&1 | tail -5 \
    | tee "$out/cuda_tests.txt" || true
pack
python tools/benchmarks/bench_e2e_cache.py $TRAIN --work-dir /tmp/bench_e2e_cache \
    2>&1 | sed '/Warning/d' | tee "$out/train_cache.txt" || echo 'bench_e2e_cache failed'
pack
