//! Any text as hyp's command line (`/chosen` `bootargs`): recognised words parse, anything
//! else is ignored or refused with a message, never a panic.
#![no_main]

use el2::cmdline::Cmdline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match Cmdline::parse(line) {
        Ok(c) => {
            // Parsing is a function of the words: the same line parses the same way.
            assert_eq!(Cmdline::parse(line).ok(), Some(c));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
