#!/usr/bin/env bash
# Loom model checking of tasker's protocols: the models in src/loom_models/, one test each in
# loom-tests/tests/models.rs. Every model prints how many executions it explored and how long
# that took; the last line is the whole run's time (build included).
#
# LOOM_MAX_PREEMPTIONS defaults to 3 (the bound the models' documented figures are for); the two
# burst-slot models cap it at 2 unless LOOM_FULL=1 (at 3 they take about ten minutes). The
# build goes to its own target directory unless CARGO_TARGET_DIR is set: `--cfg loom` would
# otherwise rebuild the normal build's dependencies each time.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"

start=$SECONDS
# The loom build of the library and models is lint-clean too (the normal clippy step does not
# see code behind cfg(loom)).
cargo clippy -p tasker --lib -- -D warnings
cargo clippy -p loom-tests --tests -- -D warnings
status=0
# One model at a time: each runs in its own child process and prints as it goes.
cargo test -p loom-tests --release -- --test-threads=1 || status=$?
echo "::: loom (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS}) took $((SECONDS - start)) s"
exit "$status"
