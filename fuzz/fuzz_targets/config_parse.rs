//! Any text as a configuration file: an error naming a key, or a config
//! that passed validation. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = robeing_gateway::config::parse(text) {
        assert!(!e.to_string().is_empty());
    }
});
