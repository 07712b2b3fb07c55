//! cargo-fuzz target: [`rendezvous_fuzz::parsers`] (see its module docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rendezvous_fuzz::parsers(data));
