//! Fuzz the whole validator from raw bytes; the seed corpus (corpus/<target>/) holds this family's
//! real examples, so mutations stay close to its structure.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::check(data));
