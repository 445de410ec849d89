#!/usr/bin/env bash
# The Fashion-MNIST ABanditNAS experiment (CPU): a short anti-bandit search, PGD adversarial
# training of the searched cells, a plain ResNet of similar size trained standard and with the
# same PGD recipe, then every model through `robustart eval` (results store) on 1000 test images.
# Usage: benchmarks/nas_fashion_mnist.sh [WORKDIR]   (then benchmarks/nas_fashion_mnist_table.py WORKDIR)
set -euo pipefail
W=${1:-/tmp/nas-exp}
export ROBUSTART_HOME=$W/home OMP_NUM_THREADS=2
R="${ROBUSTART:-robustart}"
PY="${PYTHON:-python}"
mkdir -p "$W/json"
EPS=0.1; EPOCHS=3; N_TRAIN=8000; PGD_STEPS=3; N_EVAL=1000
TRAIN="--data fashion-mnist --epochs $EPOCHS --train-limit $N_TRAIN --eps $EPS --steps $PGD_STEPS --threads 2"

# 1. search: 2 distinct cells (both reduction cells: 28 -> 14 -> 7), C=8, the paper's 9 operations, T=1
#    (44 trials), 220 FGSM-RS minibatches of 64 (5 per trial), rewards on 256 held-out training images
$R nas search --data fashion-mnist --out "$W/search" --budget 220 -C 8 --cells 2 -T 1 --eps $EPS \
    --train-size 10000 --val-size 256 --threads 2 > "$W/json/search.json"

# 2. PGD-3 adversarial training of the searched genotype (3 layers, C=12)
$R nas train --genotype "$W/search/genotype.json" -C 12 --layers 3 --attack pgd $TRAIN \
    --out "$W/abanditnas-fmnist" > "$W/json/train-nas.json"

# 3. the plain baseline: the small_resnet width whose parameter count is closest
WIDTH=$($PY -c "
import json, timm, robustart.nas.models
p = json.load(open('$W/json/train-nas.json'))['params']
n = lambda w: sum(q.numel() for q in timm.create_model('small_resnet', width=w, in_chans=1, num_classes=10).parameters())
print(min(range(4, 65), key=lambda w: abs(n(w) - p)))")
$R nas train --arch small_resnet --width "$WIDTH" --attack none $TRAIN --out "$W/resnet-fmnist-standard" > "$W/json/train-std.json"
$R nas train --arch small_resnet --width "$WIDTH" --attack pgd $TRAIN --out "$W/resnet-fmnist-pgd" > "$W/json/train-at.json"

# 4. evaluation through the engine and the results store
for M in abanditnas-fmnist resnet-fmnist-standard resnet-fmnist-pgd; do
    for NOISE in clean fgsm:eps=$EPS pgd:eps=$EPS,steps=20; do
        $R eval --model $M --data fashion-mnist:test --limit $N_EVAL --noise "$NOISE" --json \
            > "$W/json/eval-$M-${NOISE%%:*}.json"
    done
done
echo done > "$W/DONE"
