//! Any bytes as the host device tree (what x0 points at when hyp starts): parse it, and for
//! a tree hyp accepts, check what boot then relies on: the limits, the console
//! `find_console` reports for refused trees, the command line in `/chosen`, and the free RAM
//! `memmap::largest_free` carves from the memory and reserved ranges.
#![no_main]

use el2::cmdline::Cmdline;
use el2::dt::{self, HalfOpen, Platform};
use el2::memmap::largest_free;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Platform::find_compatible_reg(data, "arm,pl031");
    let (uart, psci) = Platform::find_console(data);
    let p = match Platform::parse(data) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(p.dtb_size <= data.len() && p.dtb_size <= dt::MAX_DTB_SIZE);
    assert!(!p.memory.is_empty());
    assert!(p.memory.as_slice().iter().all(|r| !r.is_empty()));
    assert!(p.cpus.len() <= dt::MAX_CPUS);
    if let Some(g) = p.gic {
        assert!(g.redists.len() <= dt::MAX_REDIST_REGIONS);
    }
    assert_eq!(
        (uart, psci),
        (p.uart, p.psci),
        "find_console disagrees with parse"
    );
    if let Err(e) = Cmdline::parse(p.bootargs) {
        let _ = e.to_string();
    }
    let (ram, reserved) = (p.memory.as_slice(), p.reserved.as_slice());
    if let Some(free) = largest_free(ram, reserved) {
        assert!(!free.is_empty());
        assert!(
            ram.iter().any(|r| r.contains_range(&free)),
            "free range {} is not inside RAM",
            HalfOpen(free)
        );
        assert!(
            !reserved.iter().any(|x| x.overlaps(&free)),
            "free range {} overlaps a reserved range",
            HalfOpen(free)
        );
    }
});
