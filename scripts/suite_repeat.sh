#!/usr/bin/env bash
# Run the README's test command N times in a row (default 5) in this checkout, stopping at nothing: one line per
# run with its pass/fail/skip counts and wall time (a flaky test shows as a failure in one of the lines), the
# full logs in $LOGS (default runs/suite_repeat/). Run it from a fresh clone with its own venv active.
#
#   scripts/suite_repeat.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
logs=${LOGS:-runs/suite_repeat}
mkdir -p "$logs"
export HF_HUB_OFFLINE=1 ROBUSTLENS_OFFLINE=1
for i in $(seq 1 "$n"); do
  t0=$(date +%s)
  python -m pytest -n 2 --dist loadfile -q -p no:cacheprovider > "$logs/run_$i.log" 2>&1
  rc=$?
  summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed)" "$logs/run_$i.log" | tail -1)
  echo "run $i: rc=$rc $(( $(date +%s) - t0 ))s load $(cut -d' ' -f1-3 /proc/loadavg) | $summary" | tee -a "$logs/summary.txt"
done
