#!/usr/bin/env bash
# Run one benchmark command on a quiet machine: pause a background zoo build (SIGSTOP to it and its worker
# processes), wait 3 s, refuse to run if anything else is busy, run, and ALWAYS resume the build (SIGCONT, via trap).
#
#   benchmarks/paused.sh python -m benchmarks.large_adapter
#
# Set BENCH_FORCE=1 to run even when other processes are busy (then do not publish the numbers).
set -u

descendants() {  # a pid and all its descendants
    local p
    echo "$1"
    for p in $(pgrep -P "$1" 2>/dev/null); do descendants "$p"; done
}

paused=""
for p in $(pgrep -f "zoo build|lolctl.zoo" 2>/dev/null); do
    [ "$p" = "$$" ] && continue
    paused="$paused $(descendants "$p" | tr '\n' ' ')"
done
resume() {
    if [ -n "${paused// /}" ]; then
        kill -CONT $paused 2>/dev/null
        echo "paused.sh: resumed$paused" >&2
    fi
}
trap resume EXIT
trap 'exit 130' INT TERM
if [ -n "${paused// /}" ]; then
    kill -STOP $paused 2>/dev/null
    echo "paused.sh: paused$paused" >&2
fi
sleep 3
# busy = over 15% CPU in a 1-second sample, other than top itself and the paused processes
busy=$(top -bn2 -d 1 -w 200 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 > 15 && $12 != "top" {print $1, $9"%", $12}' \
    | while read -r pid cpu cmd; do case " $paused " in *" $pid "*) ;; *) echo "$pid $cpu $cmd";; esac; done)
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
exit $status
