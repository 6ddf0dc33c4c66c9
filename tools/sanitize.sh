#!/usr/bin/env bash
# Builds qualam_rt._C with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch folder
# and runs the kernel, encoder, tokenizer, file and engine tests (and a short fuzzer run) under
# it on every kernel path this CPU has. Exits non-zero on a failing test or any sanitizer report.
#
#     tools/sanitize.sh            (about 10-20 minutes on 2 cores)
#     SCRATCH=/tmp/x tools/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=${SCRATCH:-/tmp/qualam_sanitize}
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
pip install --no-deps --no-build-isolation --target "$SCRATCH/site" . \
    -Ccmake.define.QRT_SANITIZE=ON -Cbuild-dir="$SCRATCH/build" -Ccmake.build-type=RelWithDebInfo -q
# An editable install of qualam_rt hooks imports ahead of sys.path: drop its finder so the
# sanitized build in $SCRATCH/site is the one imported.
cat > "$SCRATCH/site/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "qualam_rt" not in repr(f) and "editable" not in type(f).__name__.lower()]
PY
export PYTHONPATH="$SCRATCH/site"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# Python itself leaks by design at exit: leak checking would report the interpreter, not us.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$SCRATCH/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$SCRATCH/ubsan"
(cd "$SCRATCH" && python -c "import qualam_rt._C as c, sys; assert c.__file__.startswith('$SCRATCH'), c.__file__; print('sanitized build:', c.__file__)")
PATHS=$(cd "$SCRATCH" && python -c "import qualam_rt; print(' '.join(qualam_rt.supported_isas()))")
status=0
# The `isa` fixture runs the kernel and encoder tests on every path; then the engine's tests
# (which use the default path) once per path. `pytest`, not `python -m pytest`: the latter puts
# the repository root, whose qualam_rt has no built extension, ahead of the sanitized build.
pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_encoder.py tests/test_wordpiece.py \
    tests/test_model_file.py || status=1
for isa in $PATHS; do
  echo "== QUALAM_ISA=$isa"
  QUALAM_ISA=$isa pytest -q -x -p no:cacheprovider tests/test_engine.py || status=1
done
if python -c "import atheris" 2>/dev/null; then
  for f in model_file wordpiece encoder engine; do
    python tests/fuzz/fuzz_$f.py -runs=500 -max_len=4096 -len_control=0 >/dev/null 2>"$SCRATCH/fuzz_$f.log" || { echo "fuzz_$f failed"; tail -20 "$SCRATCH/fuzz_$f.log"; status=1; }
  done
fi
if ls "$SCRATCH"/asan* "$SCRATCH"/ubsan* >/dev/null 2>&1; then
  echo "sanitizer reports:"; cat "$SCRATCH"/asan* "$SCRATCH"/ubsan* 2>/dev/null | head -80; status=1
fi
[ $status -eq 0 ] && echo "sanitize: clean on paths: $PATHS"
exit $status
