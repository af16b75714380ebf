#!/usr/bin/env bash
# Runs `python -m vitprune_jax.main` on every worker of a Cloud TPU VM pod slice: creates the slice unless it
# exists, puts this package on each worker and installs it, then starts the job on all workers at once.
#
# Usage: launch/tpu_pod.sh [--dry-run] [--config.<key>=<value> ...]
#
#   --dry-run   print each command, one per line and shell-quoted, instead of running it (gcloud is not called).
#   Other arguments are passed to vitprune_jax.main on every worker unchanged (config overrides).
#
# Environment (required: TPU_NAME, ZONE, CONFIG, WORKDIR):
#   TPU_NAME          name of the TPU VM (created if `gcloud compute tpus tpu-vm describe` fails).
#   ZONE              its zone, e.g. us-central2-b.
#   PROJECT           GCP project (default: gcloud's configured project).
#   ACCELERATOR_TYPE  slice to create (default v4-32: 4 workers); ignored when the TPU exists.
#   RUNTIME_VERSION   TPU VM image to create (default tpu-ubuntu2204-base).
#   CREATE_ARGS       extra `tpu-vm create` arguments, split on spaces (e.g. "--spot").
#   CONFIG            config file, relative to the checkout (e.g. configs/imagenet_deit_s.py).
#   WORKDIR           run directory on GCS (gs://bucket/run): the workers share no disk, orbax and the results
#                     writers all speak gs://. Put TFDS data there too: --config.data.data_dir=gs://bucket/tfds.
#   REPO_URL          git URL the workers clone; unset: this checkout (tracked and untracked, not ignored files)
#                     is copied to them with `tpu-vm scp`.
#   REPO_REF          what the workers check out from REPO_URL (default origin/HEAD).
#   REMOTE_DIR        checkout directory on each worker, relative to its home (default vitprune_jax).
#   JAX_SPEC          pip requirement for JAX on TPU (default jax[tpu]==0.10.2, the version setup.cfg pins).
#   PYTHON            Python on the workers (default python3).
#   SKIP_SETUP        1: reuse the code and packages already on the workers (no copy, no pip).
#   TPU_EXISTS        --dry-run only: 1 prints the run as if `describe` found the TPU (no create), 0 (default)
#                     as if it did not.
#
# Example:
#   TPU_NAME=vit-pod ZONE=us-central2-b PROJECT=my-proj CONFIG=configs/imagenet_deit_s.py \
#     WORKDIR=gs://my-bucket/runs/deit_s launch/tpu_pod.sh --config.data.data_dir=gs://my-bucket/tfds
set -euo pipefail
# shellcheck source=launch/common.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DRY_RUN=0
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) EXTRA+=("$arg") ;;
  esac
done

require_vars TPU_NAME ZONE CONFIG WORKDIR
[[ "$WORKDIR" == gs://* ]] || die "WORKDIR=$WORKDIR must be a gs:// path: the TPU workers share no local disk"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
REMOTE_DIR=${REMOTE_DIR:-vitprune_jax}
REPO_REF=${REPO_REF:-origin/HEAD}
JAX_SPEC=${JAX_SPEC:-jax[tpu]==0.10.2}
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${REPO_URL:-}" && ! -f "$REPO/$CONFIG" ]]; then
  die "CONFIG=$CONFIG is not a file in $REPO"
fi

read -r -a create_args <<<"${CREATE_ARGS:-}"
where=("--zone=$ZONE")
[[ -z "${PROJECT:-}" ]] || where+=("--project=$PROJECT")
tpu=(gcloud compute tpus tpu-vm)
on_all_workers() {  # on_all_workers <remote shell command>
  run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$1"
}

# 1. The slice: reuse it if it exists, else create it.
describe=("${tpu[@]}" describe "$TPU_NAME" "${where[@]}" '--format=value(state)')
if ((DRY_RUN)); then
  quote_cmd "${describe[@]}"
  exists=$([[ "${TPU_EXISTS:-0}" == 1 ]] && echo 1 || echo 0)
else
  exists=$("${describe[@]}" >/dev/null 2>&1 && echo 1 || echo 0)
fi
if ((exists)); then
  ((DRY_RUN)) || echo "Reusing TPU $TPU_NAME in $ZONE." >&2
else
  run "${tpu[@]}" create "$TPU_NAME" "${where[@]}" "--accelerator-type=$ACCELERATOR_TYPE" \
    "--version=$RUNTIME_VERSION" "${create_args[@]}"
fi

# 2. The code and its packages on every worker.
dir=$(quote_cmd "$REMOTE_DIR")
if [[ "${SKIP_SETUP:-0}" != 1 ]]; then
  if [[ -n "${REPO_URL:-}" ]]; then
    on_all_workers "(test -d $dir/.git || git clone --quiet $(quote_cmd "$REPO_URL") $dir) && git -C $dir fetch \
--quiet origin && git -C $dir checkout --quiet --force $(quote_cmd "$REPO_REF")"
  else
    tarball="${TMPDIR:-/tmp}/vitprune_jax_src_$TPU_NAME.tgz"
    run bash -c 'cd "$1" && git ls-files -z -co --exclude-standard | tar -czf "$2" --null --ignore-failed-read -T -' \
      bash "$REPO" "$tarball"
    run "${tpu[@]}" scp "$tarball" "$TPU_NAME:vitprune_jax_src.tgz" "${where[@]}" --worker=all
    on_all_workers "mkdir -p $dir && tar -xzf vitprune_jax_src.tgz -C $dir"
  fi
  on_all_workers "cd $dir && $(quote_cmd "$PYTHON" -m pip install --quiet -e . "$JAX_SPEC")"
fi

# 3. The job, on all workers at once; each joins the others through jax.distributed.initialize().
on_all_workers "cd $dir && $(quote_cmd "$PYTHON" -m vitprune_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
  --config.distributed.initialize=yes "${EXTRA[@]}")"
