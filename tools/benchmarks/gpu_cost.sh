#!/usr/bin/env bash
# The GPU cost tables of docs/benchmarks.md (section 8), one command:
#   bash tools/benchmarks/gpu_cost.sh OUT_DIR [quick]
# Inference latency and peak memory of the CamVid (MobileNetV2-D8,
# 360x480) and Cityscapes (R50-D8, 1024x2048) configs for each denoiser
# block and head precision, the profiler's top kernels of one DDIM-1
# prediction, and training time per iteration from the E2E cache and on
# the fly. "quick" is the CPU dry run of the same commands (tiny inputs,
# one repeat). With PACK=FILE.tgz set, OUT_DIR is packed into it after
# each measurement (what a run that is stopped early has measured).
set -euo pipefail
out=${1:?usage: gpu_cost.sh OUT_DIR [quick]}
mkdir -p "$out"
CAMVID=configs/resensemble/resensemble_deeplabv3plus-m-v2-d8_1xb8-1k_camvid-360x480.py
CITY=configs/resensemble/resensemble_deeplabv3plus-r50-d8_4xb2-80k_cityscapes-512x1024.py
if [ "${2:-}" = quick ]; then
  CAMVID_SHAPE="64 64"; CITY_SHAPE="64 128"; REP="--repeats 1 --warmup 0"
  TRAIN="--iters 1 --warmup 1 --images 4 --batch-size 2"
else
  CAMVID_SHAPE="360 480"; CITY_SHAPE="1024 2048"; REP="--repeats 20 --warmup 5"
  TRAIN="--iters 20 --warmup 5 --images 16 --size 360 480"
fi
lat() {  # name config shape... -- options
  local name=$1 config=$2; shift 2
  python tools/benchmarks/bench_latency.py "$config" $REP \
      --out "$out/$name.json" "$@" 2>&1 | sed '/Warning/d' | tee "$out/$name.txt"
  pack
}
pack() {
  if [ -n "${PACK:-}" ]; then
    tar czf "$PACK" -C "$(dirname "$out")" "$(basename "$out")"
  fi
}
for block in separable dense; do
  for prec in bf16 fp32; do
    lat camvid_${block}_${prec} $CAMVID --shape $CAMVID_SHAPE --steps 1 2 4 \
        --autocast $prec --cfg-options model.decode_head.denoiser.block_type=$block
    lat city_${block}_${prec} $CITY --shape $CITY_SHAPE --steps 1 2 4 \
        --autocast $prec --cfg-options model.decode_head.denoiser.block_type=$block
  done
done
for config in camvid city; do
  c=$CAMVID; s=$CAMVID_SHAPE
  [ $config = city ] && c=$CITY && s=$CITY_SHAPE
  lat ${config}_separable_bf16_channels-last $c --shape $s --steps 1 4 \
      --autocast bf16 --channels-last \
      --cfg-options model.decode_head.denoiser.block_type=separable
  lat ${config}_profile $c --shape $s --steps 1 --repeats 0 --profile \
      --cfg-options model.decode_head.denoiser.block_type=separable
  lat ${config}_profile_dense_fp32 $c --shape $s --steps 1 --repeats 0 \
      --profile --autocast fp32 \
      --cfg-options model.decode_head.denoiser.block_type=dense
done
python tools/benchmarks/bench_e2e_cache.py $TRAIN --work-dir /tmp/bench_e2e_cache \
    2>&1 | sed '/Warning/d' | tee "$out/train_cache.txt"
pack
# the CUDA-only tests (no host synchronisation, noise drawn on the device,
# bf16 by default there)
python -m pytest -q -p no:cacheprovider tests/test_models/test_no_host_sync.py \
    tests/test_models/test_residual_diffusion_head.py 2>&1 | tail -5 \
    | tee "$out/cuda_tests.txt" || true
pack
# torch.compile of the denoiser's forward (CUDA graphs): compiling takes
# long, so last and bounded
for config in camvid city; do
  c=$CAMVID; s=$CAMVID_SHAPE
  [ $config = city ] && c=$CITY && s=$CITY_SHAPE
  timeout 150 python tools/benchmarks/bench_latency.py $c $REP --shape $s \
      --steps 1 4 --autocast bf16 --compile reduce-overhead \
      --cfg-options model.decode_head.denoiser.block_type=separable \
      --out "$out/${config}_separable_bf16_compiled.json" 2>&1 \
      | sed '/Warning/d' | tail -8 | tee "$out/${config}_compiled.txt" || true
  pack
done
