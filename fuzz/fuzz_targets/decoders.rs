//! cargo-fuzz target: [`rendezvous_fuzz::decoders`] (see its module docs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rendezvous_fuzz::decoders(data));
