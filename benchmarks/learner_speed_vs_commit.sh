#!/usr/bin/env bash
# One MAPPO update of the Fashion-MNIST pruning game, this checkout against an earlier commit,
# timed back to back in rotated order (A B B A A B) on the same machine:
#   bash benchmarks/learner_speed_vs_commit.sh 687ce21 > results/learner_speed_vs_687ce21.txt
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: $0 <commit>}
old=$(mktemp -d)
git worktree add -q -f "$old" "$base"
trap 'git worktree remove --force "$old"' EXIT
run() {  # $1 = label, $2 = checkout
  (cd "$2" && PYTHONPATH="$2" python benchmarks/learner_speed.py --updates 10 --skip-toy \
    2>/dev/null | sed -n 's/^  update \([0-9.]*\) ms.*/\1/p' | sed "s/^/$1 /")
}
echo "# learner_speed.py --updates 10 --skip-toy: median ms per update; $base vs $(git rev-parse --short HEAD)+worktree"
for label in old new new old old new; do
  if [ "$label" = old ]; then run "$base" "$old"; else run new "$PWD"; fi
done
