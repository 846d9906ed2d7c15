#!/usr/bin/env bash
# Fuzz smoke and Miri for tasker. Called from .ci/run; runs on its own too.
#
# 1. Fuzz smoke: each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 30), starting from
#    the checked-in seeds (fuzz/seeds/<target>). Needs cargo-fuzz (installed here with
#    `cargo install cargo-fuzz --locked` when missing) and a C++ compiler (libfuzzer-sys builds
#    libFuzzer). It runs on stable with `-s none` (no sanitizer); if the default toolchain
#    cannot build it, nightly is tried. Skipped, and said so, when neither can.
# 2. Miri: the completion-slot unit tests, the unit tests whose names match `task`, and the
#    cell cache's and the manager handles' (`cargo +nightly miri test -p tasker --lib --
#    completion task cells handle`, one invocation; its leak check also proves a thread's cache is freed when the thread exits), under the default Stacked Borrows. With MIRI_E2E=1 also the fuzz bodies' small
#    end-to-end tests (`-p tasker-fuzz-bodies --lib`, in fuzz/bodies: real workers, queues, task
#    cells), under Tree Borrows and without the leak check, because crossbeam-epoch breaks
#    Stacked Borrows and leaks its global collector on purpose (crossbeam-rs/crossbeam#545, #996). Skipped, and said so, when
#    `cargo +nightly miri --version` does not work (when nightly is there without Miri, the
#    script first tries `rustup component add miri --toolchain nightly`).
#
# A crash in the fuzz smoke fails the script; the input is in fuzz/artifacts/<target>/ and
# `cargo fuzz run <target> <file>` replays it (see fuzz/README.md). Environment:
#   FUZZ_SECONDS   seconds per fuzz target (default 30)
#   SKIP_FUZZ=1    skip the fuzz smoke;  SKIP_MIRI=1  skip Miri
#   MIRI_E2E=1     add the end-to-end Miri run (about 1 min more warm; a second Miri build,
#                  about 2.5 min, the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
# Target names: `build` is reserved by cargo, so fuzz_targets/build.rs is the `builder` target.
FUZZ_TARGETS=(ops:ops builder:build)

# How cargo-fuzz is invoked: plain `cargo` (the default toolchain) unless it needs nightly.
FUZZ_CARGO=(cargo)

step() {
    local name=$1
    shift
    local start=$SECONDS
    echo "::: ${name}"
    "$@"
    echo "::: ${name} took $((SECONDS - start)) s"
}

skip() {
    echo "::: SKIPPED: $*"
}

# ----- fuzz smoke -----

fuzz_smoke() {
    local entry target seeds corpus
    for entry in "${FUZZ_TARGETS[@]}"; do
        target=${entry%%:*}
        seeds=fuzz/seeds/${entry##*:}
        corpus=fuzz/corpus/${target}
        mkdir -p "$corpus"
        step "fuzz ${target} (${FUZZ_SECONDS} s)" \
            "${FUZZ_CARGO[@]}" fuzz run -s none "$target" "$corpus" "$seeds" -- \
            -max_total_time="$FUZZ_SECONDS" -max_len=512 -timeout=60 -print_final_stats=1
    done
}

can_fuzz() {
    if ! command -v c++ >/dev/null 2>&1; then
        skip "fuzz smoke: no C++ compiler (libfuzzer-sys needs one to build libFuzzer)"
        return 1
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "::: cargo-fuzz missing: cargo install cargo-fuzz --locked"
        if ! step "install cargo-fuzz" cargo install cargo-fuzz --locked; then
            skip "fuzz smoke: cargo-fuzz could not be installed"
            return 1
        fi
    fi
    # The build says whether a toolchain can build the targets at all.
    if step "fuzz build ($(rustc --version))" cargo fuzz build -s none; then
        return 0
    fi
    if cargo +nightly --version >/dev/null 2>&1; then
        FUZZ_CARGO=(cargo +nightly)
        if step "fuzz build (nightly)" cargo +nightly fuzz build -s none; then
            return 0
        fi
    fi
    skip "fuzz smoke: cargo fuzz build failed on every toolchain here"
    return 1
}

if [[ ${SKIP_FUZZ:-0} == 1 ]]; then
    skip "fuzz smoke: SKIP_FUZZ=1"
elif can_fuzz; then
    fuzz_smoke
fi

# ----- Miri -----

# Miri comes as a rustup component of nightly: added here when nightly is there without it.
if [[ ${SKIP_MIRI:-0} != 1 ]] && ! cargo +nightly miri --version >/dev/null 2>&1 \
    && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    step "install Miri" timeout 600 rustup component add miri --toolchain nightly || true
fi

if [[ ${SKIP_MIRI:-0} == 1 ]]; then
    skip "Miri: SKIP_MIRI=1"
elif ! cargo +nightly miri --version >/dev/null 2>&1; then
    skip "Miri: 'cargo +nightly miri --version' does not work here (rustup toolchain install nightly --component miri)"
else
    # Miri builds under its own directory (CARGO_TARGET_DIR or target/, then miri/).
    step "miri setup" cargo +nightly miri setup
    step "miri: completion, task, cells, handle" cargo +nightly miri test -p tasker --lib -- completion task cells handle
    if [[ ${MIRI_E2E:-0} == 1 ]]; then
        step "miri: fuzzing end-to-end (Tree Borrows)" env \
            MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-tree-borrows -Zmiri-ignore-leaks -Zmiri-permissive-provenance" \
            cargo +nightly miri test -p tasker-fuzz-bodies --lib
    else
        skip "Miri end-to-end (MIRI_E2E=1 runs it)"
    fi
fi

echo "::: fuzz_and_miri done in ${SECONDS} s"
