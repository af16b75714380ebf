#!/usr/bin/env bash
# Runs `python -m vitprune_jax.main` as one JAX job over several processes: GPU hosts under SLURM or plain ssh,
# or N CPU processes on this machine (to check a multi-process run without a cluster).
#
# Usage: launch/gpu_multihost.sh [--dry-run] {slurm|ssh|local} [--config.<key>=<value> ...]
#
#   --dry-run   print each command, one per line and shell-quoted, instead of running it.
#   Arguments after the launcher are passed to every process unchanged (config overrides).
#
# Every process gets JAX_COORDINATOR_ADDRESS (process 0's host:PORT), JAX_NUM_PROCESSES and JAX_PROCESS_ID;
# vitprune_jax/parallel.py reads them and calls jax.distributed.initialize() before anything else.
#
# Environment (required: CONFIG, WORKDIR):
#   CONFIG          config file, relative to the checkout (e.g. configs/imagenet_deit_s.py).
#   WORKDIR         run directory that every process sees: a shared filesystem path or gs://bucket/run.
#   PORT            coordinator port on process 0's host (default 12355).
#   PYTHON          Python with vitprune_jax installed, on every host (default python3).
#   slurm: run inside an allocation (sbatch/salloc), which sets SLURM_JOB_NODELIST and SLURM_JOB_NUM_NODES.
#     PROCS_PER_NODE  1 (default): one process per host that drives all its GPUs; set it to the GPUs per node
#                     for one process per GPU (each then sees GPU $SLURM_LOCALID via JAX_LOCAL_DEVICE_IDS).
#     SRUN_ARGS       extra srun arguments, split on spaces (e.g. "--gres=gpu:8 --time=12:00:00").
#   ssh: one process per host, started in the background; the first host is the coordinator. Ctrl-C ends the
#        local ssh clients; add -tt to SSH_ARGS for the remote processes to hang up with them.
#     HOSTS           hosts, space- or comma-separated (process i runs on host i).
#     REMOTE_DIR      this repository's checkout on every host (default: this checkout's path).
#     SSH_ARGS        extra ssh arguments, split on spaces (e.g. "-i ~/.ssh/cluster -o BatchMode=yes").
#   local: NUM_PROCESSES processes on this machine, on CPU unless JAX_PLATFORMS says otherwise.
#     NUM_PROCESSES   default 2.
#     LOG_DIR         if set, process i writes its output to $LOG_DIR/process_<i>.log.
#
# Examples:
#   CONFIG=configs/imagenet_deit_s.py WORKDIR=/shared/runs/deit_s SRUN_ARGS=--gres=gpu:8 \
#     sbatch --nodes=4 --ntasks-per-node=1 --gres=gpu:8 --wrap "launch/gpu_multihost.sh slurm"
#   CONFIG=configs/imagenet_deit_s.py WORKDIR=/nfs/runs/deit_s HOSTS="gpu1 gpu2" launch/gpu_multihost.sh ssh
#   CONFIG=configs/digits_vit.py WORKDIR=/tmp/digits_2proc launch/gpu_multihost.sh local
set -euo pipefail

# shellcheck source=launch/common.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# First host of a SLURM node list: node7, node[01-04,09], node[3,5],gpu2 -> node7, node01, node3.
first_node() {
  local list=$1 prefix rest
  prefix=${list%%[\[,]*}
  if [[ "${list:${#prefix}:1}" == '[' ]]; then
    rest=${list#*\[}
    rest=${rest%%[-,\]]*}
    echo "$prefix$rest"
  else
    echo "$prefix"
  fi
}

DRY_RUN=0
if [[ "${1:-}" == --dry-run ]]; then
  DRY_RUN=1
  shift
fi
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  slurm|ssh|local) LAUNCHER=$1; shift ;;
  '') die "name a launcher: slurm, ssh or local (--help describes them)" ;;
  *) die "unknown launcher '$1': use slurm, ssh or local" ;;
esac
if [[ "${1:-}" == --dry-run ]]; then
  DRY_RUN=1
  shift
fi
EXTRA=("$@")

require_vars CONFIG WORKDIR
[[ "$LAUNCHER" != ssh ]] || require_vars HOSTS
[[ "$LAUNCHER" != slurm ]] || require_vars SLURM_JOB_NODELIST SLURM_JOB_NUM_NODES

PORT=${PORT:-12355}
PYTHON=${PYTHON:-python3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MAIN=("$PYTHON" -m vitprune_jax.main --config "$CONFIG" --workdir "$WORKDIR" "${EXTRA[@]}")

# Background commands by pid -> what they are; when one fails the others are stopped, since they would only wait
# for it at the next collective.
declare -A PROC_OF=()

stop_all() {
  local pid
  for pid in "${!PROC_OF[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}

wait_all() {
  local failed=0 pid rc what
  while ((${#PROC_OF[@]})); do
    rc=0
    pid=''
    wait -n -p pid "${!PROC_OF[@]}" || rc=$?
    [[ -n "$pid" ]] || continue  # Interrupted by a signal; the trap already stopped everyone.
    what=${PROC_OF[$pid]}
    unset "PROC_OF[$pid]"
    if ((rc != 0 && failed == 0)); then
      echo "error: $what exited with status $rc; stopping the others" >&2
      failed=$rc
      stop_all
    fi
  done
  return "$failed"
}

start() {  # start <name> <log file or ''> <command...>: runs it in the background, or prints it.
  local name=$1 log=$2
  shift 2
  if ((DRY_RUN)); then
    quote_cmd "$@"
    return
  fi
  if [[ -n "$log" ]]; then
    "$@" >"$log" 2>&1 &
  else
    "$@" &
  fi
  PROC_OF[$!]=$name
}

trap 'stop_all' INT TERM

case "$LAUNCHER" in
  local)
    n=${NUM_PROCESSES:-2}
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES=$n must be a positive integer"
    ((DRY_RUN)) || [[ -z "${LOG_DIR:-}" ]] || mkdir -p "$LOG_DIR"
    for ((i = 0; i < n; i++)); do
      start "process $i" "${LOG_DIR:+$LOG_DIR/process_$i.log}" env "JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}" \
        "JAX_COORDINATOR_ADDRESS=localhost:$PORT" "JAX_NUM_PROCESSES=$n" "JAX_PROCESS_ID=$i" "${MAIN[@]}"
    done
    ;;
  ssh)
    # shellcheck disable=SC2153  # HOSTS comes from the environment.
    read -r -a hosts <<<"${HOSTS//,/ }"
    read -r -a ssh_args <<<"${SSH_ARGS:-}"
    remote_dir=${REMOTE_DIR:-$REPO}
    n=${#hosts[@]}
    for ((i = 0; i < n; i++)); do
      remote="cd $(quote_cmd "$remote_dir") && exec $(quote_cmd env "JAX_COORDINATOR_ADDRESS=${hosts[0]}:$PORT" \
        "JAX_NUM_PROCESSES=$n" "JAX_PROCESS_ID=$i" "${MAIN[@]}")"
      start "process $i (${hosts[$i]})" '' ssh "${ssh_args[@]}" "${hosts[$i]}" "$remote"
    done
    ;;
  slurm)
    per_node=${PROCS_PER_NODE:-1}
    [[ "$per_node" =~ ^[1-9][0-9]*$ ]] || die "PROCS_PER_NODE=$per_node must be a positive integer"
    read -r -a srun_args <<<"${SRUN_ARGS:-}"
    nodes=$SLURM_JOB_NUM_NODES
    n=$((nodes * per_node))
    # Process ids are only known inside each task, so a tiny bash reads them there; the command is passed as "$@".
    # shellcheck disable=SC2016  # Expanded by each task's own bash, not here.
    task_env='export JAX_PROCESS_ID=$SLURM_PROCID'
    # shellcheck disable=SC2016
    ((per_node == 1)) || task_env+=' JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID'
    start srun '' srun "--nodes=$nodes" "--ntasks=$n" "--ntasks-per-node=$per_node" "${srun_args[@]}" \
      "--chdir=$REPO" env "JAX_COORDINATOR_ADDRESS=$(first_node "$SLURM_JOB_NODELIST"):$PORT" \
      "JAX_NUM_PROCESSES=$n" bash -c "$task_env && exec \"\$@\"" bash "${MAIN[@]}"
    ;;
esac

((DRY_RUN)) || wait_all
