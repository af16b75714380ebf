#!/usr/bin/env bash
# One MAPPO update of the Fashion-MNIST pruning game (free mode, the only one both have), this
# checkout against an earlier commit, timed back to back in rotated order on the same machine,
# with an A/A control (this checkout timed twice, as "new" and "new-again"):
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
for label in old new again new again old again old new; do
  case "$label" in
    old) run "$base" "$old" ;;
    new) run new "$PWD" ;;
    again) run new-again "$PWD" ;;
  esac
done
