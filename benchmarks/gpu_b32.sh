#!/usr/bin/env bash
# The ViT-B/32-architecture numbers that need a GPU, in one run (about 5 minutes on one H200):
#   * the image defense at 224 px: input building before / after (PIL vs tensors), the student's forward +
#     backward, and BackdoorUnlearningTrainer steps, full and LoRA (bench_speed.py --cases image_b32);
#   * the text defense: full fine-tuning vs LoRA, seconds per step and peak memory (bench_lora_memory.py).
# Usage: OUT=<folder> bash benchmarks/gpu_b32.sh   (the synthetic world must be cached or SYNTHETIC_DIR set)
set -uo pipefail
OUT=${OUT:-outputs/gpu_b32}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${IMAGE_TIMEOUT:-300}" python benchmarks/bench_speed.py --cases image_b32 --steps "${STEPS:-30}" --warmup 5 \
    --output "$OUT/speed_image_b32_gpu.json" 2>&1 | grep -v -i warn | tee "$OUT/image_b32.log"
timeout "${TEXT_TIMEOUT:-150}" python benchmarks/bench_lora_memory.py --random_vit_b32 --max_steps "${STEPS:-30}" \
    --use_cpu false --output "$OUT/lora_b32_text_gpu.json" 2>&1 | grep -v -i warn | tail -12 | tee "$OUT/text_b32.log"
