//! Operations from several connections -> a seeded `Hub` on a fake clock, every output
//! checked: see `signalgate_fuzz::hub`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    signalgate_fuzz::hub::run(data);
});
