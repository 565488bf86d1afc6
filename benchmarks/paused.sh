#!/usr/bin/env bash
# Run one benchmark command on a quiet machine: pause background long jobs — zoo builds and `lolctl train` runs
# (SIGSTOP to each and its worker processes; one started during the run is paused too) —, wait 3 s, refuse to run if anything else is busy, run,
# and ALWAYS resume what was paused (SIGCONT, via trap).
#
#   benchmarks/paused.sh python -m benchmarks.large_adapter
#
# Set BENCH_FORCE=1 to run even when other processes are busy (then do not publish the numbers).
set -u
PATTERN=${BENCH_PAUSE:-"zoo build|lolctl.zoo|lolctl train"}  # pgrep -f pattern of the jobs to pause
state=$(mktemp)
watcher=""

descendants() {  # a pid and all its descendants
    local p
    echo "$1"
    for p in $(pgrep -P "$1" 2>/dev/null); do descendants "$p"; done
}

pause_builds() {  # SIGSTOP every zoo-build process not yet paused; remember it
    local p q
    for p in $(pgrep -f "$PATTERN" 2>/dev/null); do
        for q in $(descendants "$p"); do
            if ! grep -qx "$q" "$state" && kill -STOP "$q" 2>/dev/null; then
                echo "$q" >> "$state"
                echo "paused.sh: paused $q" >&2
            fi
        done
    done
}

resume() {
    [ -n "$watcher" ] && kill "$watcher" 2>/dev/null && wait "$watcher" 2>/dev/null
    if [ -s "$state" ]; then
        kill -CONT $(cat "$state") 2>/dev/null
        echo "paused.sh: resumed $(tr '\n' ' ' < "$state")" >&2
    fi
    rm -f "$state"
}
trap resume EXIT
trap 'exit 130' INT TERM

busy_now() {  # over 15% CPU in a 1-second sample, other than top and the paused processes
    top -bn2 -d 1 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 > 15 && $12 != "top" {print $1, $9"%", $12}' \
        | while read -r pid cpu cmd; do grep -qx "$pid" "$state" || echo "$pid $cpu $cmd"; done
}

pause_builds
( while sleep 1; do pause_builds; done ) &
watcher=$!
sleep 3
busy=$(busy_now)
echo "paused.sh: loadavg $(cat /proc/loadavg)" >&2
if [ -n "$busy" ]; then
    echo "paused.sh: other processes are busy:" >&2
    echo "$busy" >&2
    if [ "${BENCH_FORCE:-0}" != "1" ]; then
        echo "paused.sh: not running (numbers would be wrong); retry later or set BENCH_FORCE=1" >&2
        exit 75
    fi
fi
"$@"
status=$?
# the 1-minute average after a run includes the benchmark's own load (up to 2 on 2 cores)
echo "paused.sh: loadavg after $(cat /proc/loadavg)" >&2
busy=$(busy_now)
if [ "$status" = 0 ] && [ -n "$busy" ]; then
    echo "paused.sh: other processes became busy during the run; numbers are suspect:" >&2
    echo "$busy" >&2
    [ "${BENCH_FORCE:-0}" != "1" ] && exit 76
fi
exit $status
