//! Fuzzes the Jivo parser through `platforms::translate`.
#![no_main]

use crm_responder::event::Platform;
use libfuzzer_sys::fuzz_target;

mod platform;

fuzz_target!(|body: &[u8]| platform::check(Platform::Jivo, body));
