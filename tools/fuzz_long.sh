#!/usr/bin/env bash
# Runs each fuzzer of tests/fuzz for 1e5 inputs (or RUNS) and writes bench/results/$NAME.md
# (default fuzz_long): the CPU and kernel path, and per fuzzer the command, the inputs run, the
# seconds, the exit status and the libFuzzer summary.
# A crash or an unexpected exception stops that fuzzer with a non-zero status and leaves the
# input in $LOGS/crash-* (libFuzzer's artifacts go there, not into the checkout); this script
# then exits non-zero.
#
#     tools/fuzz_long.sh            (about 40 minutes on 2 cores)
#     NAME=fuzz_long_avx2 QUALAM_ISA=avx2 tools/fuzz_long.sh
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-100000}
LOGS=${LOGS:-/tmp/qualam_fuzz_long}
mkdir -p "$LOGS"
NAME=${NAME:-fuzz_long}
out=bench/results/$NAME.md
{
  echo "# $NAME"
  echo
  echo "- command: \`NAME=$NAME tools/fuzz_long.sh\` (RUNS=$RUNS${QUALAM_ISA:+, QUALAM_ISA=$QUALAM_ISA})"
  echo "- cpu: $(python -c 'from qualam_rt.timing import cpu_model; print(cpu_model())')"
  echo "- kernel path: $(python -c 'import qualam_rt; print(qualam_rt.isa())')"
  echo "- date: $(date +%F)"
  echo "- commit: $(git rev-parse --short HEAD)"
  echo
  echo "| fuzzer | command | exit | inputs | seconds | last line |"
  echo "|---|---|---|---|---|---|"
} > "$out"
status=0
for f in model_file wordpiece encoder engine; do
  cmd="python tests/fuzz/fuzz_$f.py -runs=$RUNS -max_len=4096 -artifact_prefix=$LOGS/"
  start=$(date +%s)
  OMP_NUM_THREADS=1 $cmd > "$LOGS/$f.log" 2>&1
  code=$?
  [ $code -eq 0 ] || status=1
  done_line=$(grep -a "^Done " "$LOGS/$f.log" | tail -1)
  inputs=$(echo "$done_line" | awk '{print $2}')
  echo "| $f | \`$cmd\` | $code | ${inputs:-?} | $(( $(date +%s) - start )) | ${done_line:-$(tail -1 "$LOGS/$f.log")} |" >> "$out"
done
cat "$out"
exit $status
