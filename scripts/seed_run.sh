#!/usr/bin/env bash
# The default main job's stages (as dvc.yaml runs them, from params.yaml) in a scratch folder,
# with another trainer seed: how reference/default_run.yaml's tolerances were measured.
#   bash scripts/seed_run.sh SEED DIR [key=value ...]      then: opt check paths.root=DIR
set -euo pipefail
cd "$(dirname "$0")/.."
seed=$1 root=$2
shift 2
extra=("$@")
run() { local stage=$1; shift; .venv/bin/opt "$stage" --config params.yaml "paths.root=$root" "trainer.seed=$seed" versioning.backend=none "${extra[@]}" "$@"; }
start=$(date +%s)
stages=(ingest validate prepare image_tokenizer probe pretrain)
for stage in "${stages[@]:${FROM:-0}}"; do run "$stage"; done  # FROM=6: start at fine-tuning
for task in retrieval classification vqa captioning speech_recognition text_to_image; do run finetune "task.name=$task"; done
run evaluate
echo "seed_run: seed $seed in $root took $(( $(date +%s) - start )) s"
