//! Runs tasker's loom models (`tasker::loom_models`) as tests; see `tests/models.rs`.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release
//! ```
//!
//! Without `--cfg loom` the tests compile to nothing, so a plain `cargo test --workspace`
//! builds this crate but runs no model.
