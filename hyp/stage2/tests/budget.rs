//! `Geometry::table_budget`: a table whose memory is its budget for a range never runs out
//! while it maps, unmaps and protects addresses of that range, in any order; the budget is
//! exactly what a full pages-only map uses.

use proptest::prelude::*;
use stage2::*;

mod common;
use common::*;

const MB: u64 = 1 << 20;

fn s2(g: Granule, bits: u32) -> Geometry {
    Geometry::stage2(g, bits, &CpuFeatures::profile("max").unwrap()).unwrap()
}

fn table(geo: Geometry, budget: u64) -> PageTable<VecAlloc, NoMaintenance> {
    let mut alloc = VecAlloc::new();
    alloc.limit_live_bytes(Some(budget));
    PageTable::new(geo, alloc, NoMaintenance).unwrap()
}

/// The bytes a table holds, its walker's reserve included.
fn held(pt: &PageTable<VecAlloc, NoMaintenance>) -> u64 {
    pt.allocator().live_bytes()
}

#[test]
fn a_full_page_map_uses_exactly_the_budget() {
    for (g, bits) in [
        (Granule::K4, 40),
        (Granule::K4, 36),
        (Granule::K4, 48),
        (Granule::K16, 40),
        (Granule::K16, 48),
        (Granule::K64, 40),
        (Granule::K64, 48),
    ] {
        let geo = s2(g, bits);
        // RAM at 1 GiB, as hyp's VMs have it; an unaligned size crosses table boundaries.
        for size in [2 * MB, 64 * MB, 512 * MB + 6 * MB] {
            let ram = 0x4000_0000..0x4000_0000 + size;
            let budget = geo.table_budget(rng::<Ipa>(ram.clone()));
            let mut pt = table(geo, budget);
            let opts = MapOpts {
                pages_only: true,
                ..MapOpts::default()
            };
            pt.map(rng(ram.clone()), Pa::new(0x8_0000_0000), Attrs::ram(), opts)
                .unwrap_or_else(|e| panic!("{g:?} {bits} bits, {size:#x}: {e}"));
            assert_eq!(
                pt.table_bytes(),
                budget,
                "{g:?} {bits} bits, {size:#x}: the budget is what a full page map uses"
            );
            assert!(held(&pt) <= budget);
        }
    }
}

#[test]
fn a_smaller_budget_runs_out_with_an_error_not_a_panic() {
    let geo = s2(Granule::K4, 40);
    let ram = 0x4000_0000..0x4000_0000 + 64 * MB;
    let budget = geo.table_budget(rng::<Ipa>(ram.clone()));
    let mut pt = table(geo, budget - 8 * geo.table_bytes());
    let page = geo.page_size();
    let mut failed = None;
    for a in ram.clone().step_by(page as usize) {
        if let Err(e) = pt.map(
            rng(a..a + page),
            Pa::new(a),
            Attrs::ram(),
            MapOpts::default(),
        ) {
            failed = Some((a, e));
            break;
        }
    }
    let (at, e) = failed.expect("a table below its budget must run out");
    assert!(matches!(e, MapError::NoMemory { .. }), "{e}");
    assert!(at > ram.start && at < ram.end);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Lazy faults in random order, interleaved with unmaps and write-protections (what
    /// `hyp.stress` does behind a guest), never exceed the budget of the RAM range.
    #[test]
    fn random_faults_unmaps_and_protects_stay_within_budget(
        g in prop_oneof![Just(Granule::K4), Just(Granule::K16), Just(Granule::K64)],
        pages in 16u64..600,
        ops in prop::collection::vec((0u64..1 << 20, 0u8..10), 1..1500),
    ) {
        let geo = s2(g, 40);
        let page = geo.page_size();
        // Start at 1 GiB minus a few pages so the range straddles upper-level tables.
        let start = 0x4000_0000 - 3 * page;
        let ram = start..start + pages * page;
        let budget = geo.table_budget(rng::<Ipa>(ram.clone()));
        let mut pt = table(geo, budget);
        for (r, kind) in ops {
            let a = ram.start + (r % pages) * page;
            let res = match kind {
                0 => pt.unmap(rng(a..a + page)),
                1 if pt.translate(at(a)).map(raw_t).is_some() => pt.protect(
                    rng(a..a + page),
                    Attrs { write: false, ..Attrs::ram() },
                ),
                _ if pt.translate(at(a)).map(raw_t).is_none() => {
                    pt.map(rng(a..a + page), Pa::new(a), Attrs::ram(), MapOpts::default())
                }
                _ => Ok(()),
            };
            prop_assert!(res.is_ok(), "{:?} at {:#x}: {:?}", kind, a, res);
            prop_assert!(held(&pt) <= budget);
        }
    }
}
