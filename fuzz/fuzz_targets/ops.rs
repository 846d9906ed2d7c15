//! `cargo fuzz run ops`: operation sequences against a running manager (see
//! `tasker_fuzz_bodies::ops`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs that hit a known, not yet fixed bug are skipped unless asked for.
    if tasker_fuzz_bodies::known_bug("ops", data).is_some()
        && std::env::var_os("TASKER_FUZZ_KNOWN_BUGS").is_none()
    {
        return;
    }
    tasker_fuzz_bodies::ops(data);
});
