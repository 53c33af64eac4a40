#!/usr/bin/env bash
# Drive the real wizard in tmux, the way a user over SSH would: start -> task -> data (the
# bundled sample) -> model & memory -> settings -> start a 2-step run -> live panel -> finished;
# then the estimate-only path with no network: a catalog model, data counted approximately,
# back to Start, and a restart that reopens the estimate.
# Fails (exit 1, printing the pane) when an expected text does not appear in time.
#
#   scripts/tmux_walk.sh            # uses .venv/bin/python and the tunewiz beside it
#   PYTHON=/path/to/python scripts/tmux_walk.sh    # TUNEWIZ_BIN overrides the entry point
#   WALK=estimate scripts/tmux_walk.sh   # only the estimate-only path (no training)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
BIN=${TUNEWIZ_BIN:-$(dirname "$PY")/tunewiz}
SHARED_HOME=${TUNEWIZ_HOME:-$ROOT/.tunewiz-home}
WORK=$(mktemp -d)
SESSION="tunewiz-walk-$$"

cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    # A run still going (a failed walk) is asked to stop; its files go with the folder.
    for run in "$WORK"/runs/*/; do
        [ -f "$run/status.json" ] && "$PY" -c "import sys; from core import runs
try: runs.stop_run(sys.argv[1])
except Exception: pass" "$run" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A home of its own (wizard state, runs) that shares the converted bundled model.
mkdir -p "$WORK/home"
"$PY" -c "from tunewiz.core.bundled import ensure_default_model; ensure_default_model()" >/dev/null 2>&1
ln -s "$SHARED_HOME/models" "$WORK/home/models"
export TUNEWIZ_HOME="$WORK/home" HF_HUB_OFFLINE=1
# The wizard remembers settings: start with a 2-step run so the walk ends quickly.
"$PY" - <<PYEOF
from pathlib import Path
from tunewiz.tui.state import WizardState
s = WizardState()
for key, value in {"training.max_steps": 2, "training.save_steps": 2, "training.eval_steps": 2}.items():
    s.set(key, value)
s.save(Path("$WORK/home/config/wizard.json"))
PYEOF

# A tmux server that was already running keeps its own environment: pass ours explicitly.
APP_ENV="env TUNEWIZ_HOME='$TUNEWIZ_HOME' HF_HUB_OFFLINE=1 PYTHONPATH='${PYTHONPATH:-}'"

screen() { tmux capture-pane -p -t "$SESSION"; }

wait_for() {  # wait_for TEXT SECONDS
    local text=$1 limit=${2:-20} i=0
    while (( i < limit * 4 )); do
        if screen | grep -qF -- "$text"; then
            echo "ok: $text"
            return 0
        fi
        sleep 0.25
        i=$((i + 1))
    done
    echo "FAILED: '$text' did not appear within ${limit}s. The screen:" >&2
    screen >&2
    exit 1
}

keys() { tmux send-keys -t "$SESSION" "$@"; sleep 0.3; }

walk_training() {
tmux new-session -d -s "$SESSION" -x 80 -y 24 "cd '$WORK' && $APP_ENV '$BIN'; echo EXITED; sleep 60"

wait_for "No runs yet" 20
keys n
wait_for "What should the model learn?" 10
keys Enter
wait_for "48 of 48 rows usable" 90
keys C-n
wait_for "GiB on CPU" 30
keys C-n
wait_for "tunewiz train runs/" 10
keys C-t
wait_for "d Detach" 120   # the live panel's footer
wait_for "finished" 240
wait_for "2/2" 5
if screen | grep -qE "Traceback|Error:"; then
    echo "FAILED: an error reached the screen" >&2
    screen >&2
    exit 1
fi
keys C-q
wait_for "EXITED" 10
}
[ "${WALK:-all}" = estimate ] || walk_training

# Estimate before renting, offline: the hub is unroutable (port 9 refuses at once) as well as
# flagged offline, so a look-up that ignored the flag would still fail fast, not hang.
ESTIMATE_CMD="cd '$WORK' && $APP_ENV HF_ENDPOINT=http://127.0.0.1:9 '$BIN'; echo EXITED; sleep 60"
if tmux has-session -t "$SESSION" 2>/dev/null; then  # the same pane, so no server restarts
    tmux resize-window -t "$SESSION" -x 120 -y 40
    tmux respawn-pane -k -t "$SESSION" "$ESTIMATE_CMD"
else
    tmux new-session -d -s "$SESSION" -x 120 -y 40 "$ESTIMATE_CMD"
fi
wait_for "Estimate a model before renting" 20
keys e
wait_for "What to rent for" 20
keys -l "3.1-8b"
keys Enter   # the search goes on to its matches,
sleep 1      # (the focus moves when the wizard has read that Enter)
keys Enter   # and the first is picked
wait_for "weights 30.1" 20   # Llama-3.1-8B in fp32 on this CPU (no tokenizer needed)
keys Tab Tab Tab
keys C-u   # the field may hold the data scanned earlier
keys -l "sample"
keys Enter
wait_for "token counts are approximate" 30
wait_for "data tokens × 3 epochs" 10
keys Escape
wait_for "Estimate a model before renting" 10
keys e
wait_for "What to rent for" 10
keys C-q
wait_for "EXITED" 10
tmux respawn-pane -k -t "$SESSION" "$ESTIMATE_CMD"   # a restart reopens the estimate as it was
wait_for "token counts are approximate" 30
keys C-q
wait_for "EXITED" 10
echo "tmux walk passed"
