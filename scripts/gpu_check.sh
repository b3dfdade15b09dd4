#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one pass (CI has none; this is run by hand on a GPU machine).
#
#     bash scripts/gpu_check.sh [LOG_DIR]   # LOG_DIR (default runs/gpu_check): summary.txt and all.log (each log's end);
#                                           # the full logs and runs go to $GPU_CHECK_WORK (default LOG_DIR/work)
#     GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash scripts/gpu_check.sh   # the same commands on a CPU, tiny: checks the script
#     GPU_CHECK_ONLY="dcgan_compiled bench_diffusion" bash scripts/gpu_check.sh   # only the checks named
#
# 1. Every family trains a few steps under `trainer=gpu` (bf16 autocast, channels_last,
#    torch.compile where named): the two-optimizer tasks (GAN, WGAN-GP's create_graph
#    penalty, progan, colorization's cGAN), diffusion, detection, captioning.
# 2. Throughput of cvtrain's loop against the hand-written loop (scripts/bench_throughput.py).
# 3. Time to quality on the GPU for the two generative targets that the 2-core CPU misses
#    (conditional DCGAN's and DDPM's class accuracy; scripts/time_to_quality.py).
# Each line of the summary is `PASS|FAIL name seconds`; the script exits non-zero if any check failed.
set -u
LOG_DIR=${1:-runs/gpu_check}
WORK=${GPU_CHECK_WORK:-$LOG_DIR/work}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
QUICK=${GPU_CHECK_QUICK:-0}
PY=${PYTHON:-python3}
mkdir -p "$LOG_DIR" "$WORK"
export PYTHONUNBUFFERED=1
failed=0

if [ "$DEVICE" = cuda ]; then GPU=(trainer=gpu); else GPU=(trainer.device=cpu trainer.compile=false); fi
if [ "$QUICK" = 1 ]; then STEPS=3; ROUNDS=1; SMALL=(dataset.num_train=256 dataset.num_val=64); else STEPS=40; ROUNDS=3; SMALL=(); fi

check() {  # check NAME TIMEOUT_S COMMAND...: run, time and log one check
    local name=$1 limit=$2; shift 2
    if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $name "* ]]; then return 0; fi
    local start=$SECONDS
    if timeout "$limit" "$@" >"$WORK/$name.log" 2>&1; then status=PASS; else status=FAIL; failed=1; fi
    echo "$status $name $((SECONDS - start))s" | tee -a "$LOG_DIR/summary.txt"
    { echo "=== $status $name"; tail -n 25 "$WORK/$name.log"; } >>"$LOG_DIR/all.log"
    return 0
}

train() {  # train NAME OVERRIDE...: a few optimizer steps and one evaluation under the GPU trainer
    local name=$1; shift
    check "$name" 300 "$PY" -m cvtrain "$@" "${GPU[@]}" trainer.max_steps=$STEPS trainer.epochs=1 \
        trainer.progress=plain hydra.run.dir="$WORK/runs/$name"
}

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
    | tee "$LOG_DIR/summary.txt"

train classification_compiled task=classification model=resnet18 dataset.num_train=2048 dataset.num_val=256
train dcgan_compiled task=gan model=dcgan dataset.num_train=2048 dataset.num_val=256
train dcgan_wgan_gp task=gan model=dcgan loss=wgan_gp trainer.compile=false dataset.num_train=2048 dataset.num_val=256
train progan task=gan model=progan trainer.compile=false dataset.num_train=1024 dataset.num_val=256
train ddpm_compiled task=diffusion model=ddpm dataset.num_train=2048 dataset.num_val=256 task.eval_samples=100 task.eval_steps=10
train colorization_cgan task=colorization loss=cgan trainer.compile=false dataset.num_train=1024 dataset.num_val=128
train detection_fcos task=detection model=fcos trainer.compile=false dataset.num_train=512 dataset.num_val=64
train captioning_gru task=captioning model=gru trainer.compile=false dataset.num_train=1024 dataset.num_val=128

BENCH_DEV=(trainer.device=$DEVICE)
[ "$DEVICE" = cuda ] && BENCH_DEV+=(trainer.precision=bf16 trainer.channels_last=true)
check bench_classification 300 "$PY" scripts/bench_throughput.py --rounds $ROUNDS model=resnet18 "${BENCH_DEV[@]}" "${SMALL[@]}"
check bench_diffusion 300 "$PY" scripts/bench_throughput.py --task diffusion --rounds $ROUNDS "${BENCH_DEV[@]}" "${SMALL[@]}"

[ "${GPU_CHECK_TTQ:-1}" = 0 ] && { cat "$LOG_DIR/summary.txt"; exit $failed; }  # GPU_CHECK_TTQ=0: skip part 3
check ttq_ddpm 600 "$PY" scripts/time_to_quality.py --metric class_acc_w3 --target 0.9 task=diffusion "${GPU[@]}" \
    trainer.compile=false "${SMALL[@]}"
check ttq_conditional_dcgan 600 "$PY" scripts/time_to_quality.py --metric class_acc --target 0.9 task=gan \
    model.num_classes=1 model.d_classifier=true trainer.epochs=45 "${GPU[@]}" trainer.compile=false "${SMALL[@]}"

cat "$LOG_DIR/summary.txt"
exit $failed
