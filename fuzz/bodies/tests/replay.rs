//! Runs the fuzz targets' bodies (`tasker_fuzz_bodies`) as an ordinary test, on stable, without
//! cargo-fuzz: every checked-in seed under `fuzz/seeds/<target>/`, then a fixed set of
//! pseudo-random inputs (xorshift, fixed seeds), so the oracle keeps running in `cargo test`.
//!
//! A failing input panics with the target's report (`tasker fuzz: ...`); the test names the
//! seed file, or the generator seed, to replay it (`fuzz/README.md`).

// The seeded generator the library's own tests use (one copy for the whole repository).
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use common::Rng;
use tasker_fuzz_bodies as fuzzing;

/// Pseudo-random inputs per target and test. Each `ops` input builds a manager and runs up to
/// 64 operations (about a millisecond in debug builds).
const RANDOM_INPUTS: u64 = 1_500;

/// An input of up to `max_len` bytes for generator seed `seed`.
fn input(seed: u64, max_len: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let len = rng.next() % (max_len + 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `f` on `data`, naming `what` if it fails.
fn replay(f: fn(&[u8]), what: &str, data: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(data))) {
        eprintln!(
            "fuzz replay failed on {what} ({} bytes: {data:02x?})",
            data.len()
        );
        std::panic::resume_unwind(panic);
    }
}

/// Replays every seed of `target`. A seed that hits a known, unfixed bug
/// (`fuzzing::known_bug`) must still fail: once it passes, the bug is fixed and its entry in
/// `known_bug` should go (the seed stays, as a regression input).
fn replay_seeds(target: &str, f: fn(&[u8])) {
    for (path, data) in seeds(target) {
        let what = path.display().to_string();
        match fuzzing::known_bug(target, &data) {
            None => replay(f, &what, &data),
            Some(bug) => {
                let failed = catch_unwind(AssertUnwindSafe(|| f(&data))).is_err();
                assert!(
                    failed,
                    "{what} no longer reproduces the known bug \"{bug}\": if it is fixed, \
                     remove it from tasker_fuzz_bodies::known_bug"
                );
                eprintln!("{what}: known bug still reproduces (expected): {bug}");
            }
        }
    }
}

#[test]
fn ops_seeds() {
    replay_seeds("ops", fuzzing::ops);
}

#[test]
fn build_seeds() {
    replay_seeds("build", fuzzing::build);
}

#[test]
fn ops_random_short() {
    for seed in 0..RANDOM_INPUTS {
        let data = input(seed, 48);
        if fuzzing::known_bug("ops", &data).is_some() {
            continue;
        }
        replay(
            fuzzing::ops,
            &format!("ops_random_short seed {seed}"),
            &data,
        );
    }
}

#[test]
fn ops_random_long() {
    for seed in 0..RANDOM_INPUTS {
        let data = input(1 << 32 | seed, 200);
        if fuzzing::known_bug("ops", &data).is_some() {
            continue;
        }
        replay(fuzzing::ops, &format!("ops_random_long seed {seed}"), &data);
    }
}

#[test]
fn build_random() {
    for seed in 0..RANDOM_INPUTS {
        let data = input(2 << 32 | seed, 24);
        if fuzzing::known_bug("build", &data).is_some() {
            continue;
        }
        replay(fuzzing::build, &format!("build_random seed {seed}"), &data);
    }
}
