//! cargo-fuzz target: [`rendezvous_fuzz::restored`] (see its module docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rendezvous_fuzz::restored(data));
