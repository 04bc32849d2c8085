#!/usr/bin/env bash
# GPU throughput run of bench/train_unit_hifigan.py on a lent device (no network, no pip):
# makes the speechqe namespace importable through symlinks, checks the few packages the run
# needs, trains HiFi-GAN V1 (bf16 autocast, data-loader workers) for MINUTES on the units of
# the CPU run, then runs the k-means backend bench on the GPU. Results go to $OUT.
#
#   bash bench/device_unit_hifigan.sh DATA_DIR MINUTES
# DATA_DIR holds ljspeech-32/ (wavs + transcripts.tsv), units.jsonl and codebook-k100.npz.
set -uo pipefail
DATA=${1:?data dir}
MINUTES=${2:-3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
REPO=$(pwd)
PY=${PYTHON:-python3}
# One import namespace without installing: speechqe/ files + the room folders as subpackages.
SHIM=$(mktemp -d)
mkdir -p "$SHIM/speechqe"
for f in "$REPO"/speechqe/*; do ln -s "$f" "$SHIM/speechqe/$(basename "$f")"; done
for room in metrics predictors vocoders flows data; do ln -s "$REPO/$room" "$SHIM/speechqe/$room"; done
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import sys, torch, torchaudio, numpy, scipy, soundfile; print(sys.version.split()[0], 'torch', torch.__version__, 'torchaudio', torchaudio.__version__, 'cuda', torch.cuda.is_available())"
  $PY -c "import sklearn; print('sklearn', sklearn.__version__)" || echo "no sklearn"
} 2>&1 | tee "$OUT/env.txt"
nproc >> "$OUT/env.txt"
$PY bench/train_unit_hifigan.py --corpus "$DATA/ljspeech-32" --units "$DATA/units.jsonl" \
    --codebook "$DATA/codebook-k100.npz" --device cuda --amp bf16 --workers 6 \
    --batch-size 16 --segment-frames 28 --preset v1 --minutes "$MINUTES" --log-every 50 \
    --checkpoint-every 100000 --no-score --out "$OUT/run" 2>&1 | tail -n 40 | tee "$OUT/train.txt"
# At most 8 files come back: pack logs, config, the resynthesised clips and their manifest into
# one tar; the V1 weights (~56 MB) stay on the device.
cp "$OUT/run/summary.json" "$OUT/" 2>/dev/null
tar -C "$OUT/run" -cf "$OUT/results.tar" --exclude='g_*' --exclude='do_*' --exclude=features \
    resynth vocoder-v1 2>/dev/null
rm -rf "$OUT/run"
if [ "${KMEANS:-1}" = 1 ] && $PY -c "import sklearn" 2>/dev/null; then
  $PY bench/kmeans_backends.py --frames 200000 --dim 384 --k 100 500 --epochs 3 \
      --devices cuda 2>&1 | tee "$OUT/kmeans.txt"
fi
