#!/usr/bin/env bash
# Runs any synth-jax command on every host of a TPU VM (pod slice) at once.
#
#   launch/tpu.sh --tpu NAME --zone ZONE [--project P] [--ref GIT_REF] [--dry-run] -- synth-jax train --config ...
#
# 1. packs the working tree (tracked + untracked-not-ignored files), or `git archive GIT_REF`,
# 2. copies it to every worker and installs requirements-tpu.txt there once (skipped while the file's
#    hash is unchanged),
# 3. starts the command on all workers together (jax.distributed finds its peers from the TPU env),
# 4. streams worker 0's log until the command ends; Ctrl-C stops the command on every worker.
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail

tpu="" zone="" project="" ref="" dry_run=0
usage() { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu) tpu="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --ref) ref="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -h|--help) usage ;;
    *) echo "launch/tpu.sh: unknown option '$1'; put the command after --" >&2; exit 2 ;;
  esac
done
[[ -n "$tpu" ]] || { echo "launch/tpu.sh: --tpu NAME is required" >&2; exit 2; }
[[ -n "$zone" ]] || { echo "launch/tpu.sh: --zone ZONE is required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "launch/tpu.sh: no command given; add it after --, e.g. -- synth-jax train --config ..." >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
remote_dir='~/synth_jax'
run_id="synth_jax_$(date +%Y%m%d_%H%M%S)_$$"
cmd=$(printf '%q ' "$@")
gc=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")

run() {  # prints with --dry-run, else runs
  if (( dry_run )); then printf '%q ' "$@"; echo; else "$@"; fi
}

tarball=$(mktemp -t synth_jax_src.XXXXXX.tgz)
trap 'rm -f "$tarball"' EXIT
if [[ -n "$ref" ]]; then
  git -C "$repo" archive --format=tar.gz -o "$tarball" "$ref"
else
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar -czf "$tarball" --null -T -)
fi

install="mkdir -p $remote_dir && tar -xzf /tmp/synth_jax_src.tgz -C $remote_dir && cd $remote_dir && \
h=\$(sha256sum requirements-tpu.txt | cut -c1-16) && \
if [ \"\$(cat .installed 2>/dev/null)\" != \"\$h\" ]; then \
python3 -m pip install -q -r requirements-tpu.txt && echo \$h > .installed; fi"
start="export PATH=\$HOME/.local/bin:\$PATH && cd $remote_dir && nohup bash -c $(printf '%q' "$cmd") > /tmp/$run_id.log 2>&1 & echo \$! > /tmp/$run_id.pid"
follow="tail -n +1 --pid=\$(cat /tmp/$run_id.pid) -f /tmp/$run_id.log"
stop="kill \$(cat /tmp/$run_id.pid) 2>/dev/null; true"

run "${gc[@]}" scp "$tarball" "$tpu:/tmp/synth_jax_src.tgz" --worker=all "${where[@]}"
run "${gc[@]}" ssh "$tpu" --worker=all "${where[@]}" --command "$install"
run "${gc[@]}" ssh "$tpu" --worker=all "${where[@]}" --command "$start"
if (( ! dry_run )); then
  trap 'echo "stopping on all workers..." >&2; "${gc[@]}" ssh "$tpu" --worker=all "${where[@]}" --command "$stop"; rm -f "$tarball"; exit 130' INT TERM
fi
run "${gc[@]}" ssh "$tpu" --worker=0 "${where[@]}" --command "$follow"
