#!/usr/bin/env bash
# Continue the full experiment sweeps across sessions on a small machine.
#
#   experiments/full_runs.sh resume NAME [WORKERS]   copy experiments/NAME/store_full to $LIVE/NAME (if not there yet)
#                                                    and resume it in the background at low priority
#   experiments/full_runs.sh start NAME SWEEP.toml [WORKERS]
#                                                    start a new full sweep into $LIVE/NAME (background, low priority)
#   experiments/full_runs.sh snapshot NAME           compact snapshot of $LIVE/NAME into experiments/NAME/store_full
#   experiments/full_runs.sh status                  status of every live sweep
#   experiments/full_runs.sh stop                    stop every live sweep (runs resume from their checkpoints)
#
#   experiments/full_runs.sh freeze                  install the committed HEAD (not the working tree) into $LIVE/env,
#                                                    a non-editable environment that resume/start then use: editing
#                                                    the package while a sweep runs cannot reach its workers
#
# NAME is an experiment folder (mdgl_evidence_accumulation, curvature, rank_rich_lazy, gain_lyapunov).
# STORE (default store_full) names the committed store inside it, for experiments with several full sweeps
# (e.g. STORE=store_full_aligned); the live copy is then $LIVE/NAME.STORE.
# LIVE defaults to /tmp/live. Logs go to $LIVE/<live name>.log. Each run uses one torch thread.
set -euo pipefail
cd "$(dirname "$0")/.."
LIVE=${LIVE:-/tmp/live}
if [ -z "${SPIKELEARN:-}" ] && [ -x "$LIVE/env/bin/spikelearn" ]; then SL="$LIVE/env/bin/spikelearn"; else SL=${SPIKELEARN:-.venv/bin/spikelearn}; fi
STORE=${STORE:-store_full}
mkdir -p "$LIVE"
live() { if [ "$STORE" = store_full ]; then echo "$1"; else echo "$1.$STORE"; fi; }

case "${1:-}" in
  resume)
    name=$2; workers=${3:-2}; l=$(live "$name")
    if [ ! -d "$LIVE/$l" ]; then cp -r "experiments/$name/$STORE" "$LIVE/$l"; fi
    setsid nohup nice -n 19 "$SL" sweep resume "$LIVE/$l" --workers "$workers" --threads-per-run 1 --quiet \
      > "$LIVE/$l.log" 2>&1 &
    echo "resuming $LIVE/$l (log $LIVE/$l.log)";;
  start)
    name=$2; sweep=$3; workers=${4:-2}; l=$(live "$name")
    setsid nohup nice -n 19 "$SL" sweep run "$sweep" --out "$LIVE/$l" --workers "$workers" --threads-per-run 1 \
      --quiet > "$LIVE/$l.log" 2>&1 &
    echo "started $sweep into $LIVE/$l (log $LIVE/$l.log)";;
  snapshot)
    name=$2; l=$(live "$name")
    rm -rf "experiments/$name/$STORE.new"
    "$SL" sweep snapshot "$LIVE/$l" "experiments/$name/$STORE.new" --compact
    rm -rf "experiments/$name/$STORE"
    mv "experiments/$name/$STORE.new" "experiments/$name/$STORE";;
  status)
    for d in "$LIVE"/*/; do if [ -f "$d/store.sqlite" ]; then "$SL" sweep status "$d"; fi; done;;
  freeze)
    rm -rf "$LIVE/env" "$LIVE/src" && mkdir -p "$LIVE/src"
    git archive HEAD | tar -x -C "$LIVE/src"
    python3 -m venv "$LIVE/env"
    "$LIVE/env/bin/pip" install --quiet -c constraints-cpu.txt "$LIVE/src"
    git rev-parse HEAD > "$LIVE/env/COMMIT"
    echo "frozen $(cat "$LIVE/env/COMMIT") into $LIVE/env";;
  stop)  # each driver leads its own process group (setsid): stop it together with its pool workers
    for pid in $(pgrep -f "spikelearn sweep (run|resume) .*$LIVE" || true); do
      kill -- "-$(ps -o pgid= -p "$pid" | tr -d ' ')" 2>/dev/null || true
    done;;
  *)
    sed -n 2,19p "$0"; exit 2;;
esac
