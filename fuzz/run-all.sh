#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) in two parallel lanes; logs in fuzz/logs/.
# Usage (from the repository root): bash fuzz/run-all.sh [SECONDS]
set -u
cd "$(dirname "$0")"
secs=${1:-600}
mkdir -p logs
lane() {
  for t in "$@"; do
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
      > "logs/$t.log" 2>&1
    echo "$t exit $?" >> logs/summary.txt
  done
}
: > logs/summary.txt
lane hospital_notification acknowledgement oioxml sbdh &
lane care_communication vans xml_tree audit_leaf &
wait
cat logs/summary.txt
