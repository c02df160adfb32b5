//! Choosing hyp's own EL2 stage-1 granule from `hyp.granule=` and the CPU's features.

use crate::cmdline::GranuleRequest;
use core::fmt;
use stage2::{CpuFeatures, Granule, GranuleRefusal, Stage};

/// The granule hyp will use for its EL2 tables, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GranuleChoice {
    /// The granule to use.
    pub granule: Granule,
    /// Set when a fixed request was refused and `auto` was used instead.
    pub refused: Option<(Granule, GranuleRefusal)>,
}

impl GranuleChoice {
    /// The single line that reports a refused request, if there was one:
    /// `hyp: el2 granule 16K refused (<reason>), using auto`.
    pub fn fallback_line(&self) -> Option<FallbackLine> {
        self.refused.map(|(asked, why)| FallbackLine { asked, why })
    }
}

/// Display helper for the fallback line (see [`GranuleChoice::fallback_line`]).
#[derive(Clone, Copy, Debug)]
pub struct FallbackLine {
    asked: Granule,
    why: GranuleRefusal,
}

impl fmt::Display for FallbackLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hyp: el2 granule {} refused ({}), using auto",
            self.asked, self.why
        )
    }
}

/// No granule is usable at stage 1 (every one is absent or hidden).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoGranule {
    /// The refusal of each granule, in the order 4K, 16K, 64K.
    pub refusals: [GranuleRefusal; 3],
}

impl fmt::Display for NoGranule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no translation granule is usable for hyp's EL2 tables: ")?;
        for (i, r) in self.refusals.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        f.write_str(" (remove granules from hyp.hide-granules=)")
    }
}

/// Chooses the EL2 granule: a fixed request if stage 1 supports it, else `auto` (4K, 16K,
/// 64K, the first the CPU supports and `hyp.hide-granules=` leaves).
///
/// Arm ARM D19.2 (ID_AA64MMFR0_EL1): the TGran4/TGran64 fields are signed (0b1111 = absent,
/// 0b0001 = LPA2, still present) and TGran16 is unsigned (0b0000 = absent); `CpuFeatures`
/// decodes them.
pub fn choose_el2_granule(
    cpu: &CpuFeatures,
    request: GranuleRequest,
) -> Result<GranuleChoice, NoGranule> {
    let refused = match request {
        GranuleRequest::Fixed(g) => match cpu.stage1(g) {
            Ok(()) => {
                return Ok(GranuleChoice {
                    granule: g,
                    refused: None,
                })
            }
            Err(why) => Some((g, why)),
        },
        GranuleRequest::Auto => None,
    };
    match cpu.auto(Stage::One) {
        Some(granule) => Ok(GranuleChoice { granule, refused }),
        None => {
            let r = |g| match cpu.stage1(g) {
                Err(e) => e,
                // `auto` found nothing, so every granule is refused; keep a value anyway.
                Ok(()) => GranuleRefusal::Hidden {
                    granule: g,
                    stage: Stage::One,
                },
            };
            Err(NoGranule {
                refusals: [r(Granule::K4), r(Granule::K16), r(Granule::K64)],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use stage2::cpu::parse_granule_list;

    fn fixed(g: Granule) -> GranuleRequest {
        GranuleRequest::Fixed(g)
    }

    #[test]
    fn max_takes_every_request_and_auto_is_4k() {
        let cpu = CpuFeatures::profile("max").unwrap();
        for g in Granule::ALL {
            let c = choose_el2_granule(&cpu, fixed(g)).unwrap();
            assert_eq!(c.granule, g);
            assert!(c.fallback_line().is_none());
        }
        let c = choose_el2_granule(&cpu, GranuleRequest::Auto).unwrap();
        assert_eq!(c.granule, Granule::K4);
    }

    #[test]
    fn cortex_a72_16k_falls_back_to_4k_with_one_line() {
        let cpu = CpuFeatures::profile("cortex-a72").unwrap();
        let c = choose_el2_granule(&cpu, fixed(Granule::K16)).unwrap();
        assert_eq!(c.granule, Granule::K4);
        assert_eq!(
            c.fallback_line().unwrap().to_string(),
            "hyp: el2 granule 16K refused (16K granule not supported at stage 1: \
             ID_AA64MMFR0_EL1.TGran16 = 0b0000), using auto"
        );
        assert_eq!(
            choose_el2_granule(&cpu, fixed(Granule::K64))
                .unwrap()
                .granule,
            Granule::K64
        );
    }

    #[test]
    fn hide_4k_64k_gives_16k() {
        let cpu = CpuFeatures::profile("max")
            .unwrap()
            .hide(parse_granule_list("4k,64k").unwrap());
        let c = choose_el2_granule(&cpu, GranuleRequest::Auto).unwrap();
        assert_eq!(c.granule, Granule::K16);
        assert!(c.refused.is_none());
        let c = choose_el2_granule(&cpu, fixed(Granule::K4)).unwrap();
        assert_eq!(c.granule, Granule::K16);
        assert_eq!(
            c.fallback_line().unwrap().to_string(),
            "hyp: el2 granule 4K refused (4K granule not supported at stage 1: hidden by \
             hyp.hide-granules), using auto"
        );
    }

    /// Every refusal per ID-register encoding: each TGran field value against each request.
    #[test]
    fn every_field_encoding() {
        // TGran4 \[31:28\], signed: 0 and 1 present, 0b1111 (and any negative) absent.
        for v in 0u64..16 {
            let cpu = CpuFeatures::from_mmfr0(v << 28 | 1 << 20); // keep 16K present
            let c = choose_el2_granule(&cpu, fixed(Granule::K4)).unwrap();
            if v < 8 {
                assert_eq!(c.granule, Granule::K4, "TGran4={v:#x}");
            } else {
                assert_eq!(c.granule, Granule::K16, "TGran4={v:#x}");
                let line = c.fallback_line().unwrap().to_string();
                assert!(line.contains(&alloc::format!("ID_AA64MMFR0_EL1.TGran4 = {v:#06b}")));
            }
        }
        // TGran16 \[23:20\], unsigned: 0 absent, anything else present.
        for v in 0u64..16 {
            let cpu = CpuFeatures::from_mmfr0(v << 20);
            let c = choose_el2_granule(&cpu, fixed(Granule::K16)).unwrap();
            if v == 0 {
                assert_eq!(c.granule, Granule::K4);
                assert!(c
                    .fallback_line()
                    .unwrap()
                    .to_string()
                    .contains("ID_AA64MMFR0_EL1.TGran16 = 0b0000"));
            } else {
                assert_eq!(c.granule, Granule::K16, "TGran16={v:#x}");
            }
        }
        // TGran64 \[27:24\], signed: 0 present, 0b1111 absent.
        for v in 0u64..16 {
            let cpu = CpuFeatures::from_mmfr0(v << 24);
            let c = choose_el2_granule(&cpu, fixed(Granule::K64)).unwrap();
            if v < 8 {
                assert_eq!(c.granule, Granule::K64, "TGran64={v:#x}");
            } else {
                assert_eq!(c.granule, Granule::K4, "TGran64={v:#x}");
                assert!(c
                    .fallback_line()
                    .unwrap()
                    .to_string()
                    .contains(&alloc::format!("ID_AA64MMFR0_EL1.TGran64 = {v:#06b}")));
            }
        }
    }

    #[test]
    fn auto_order_skips_absent_granules() {
        // 4K absent, 16K absent, 64K present -> 64K.
        let cpu = CpuFeatures::from_mmfr0(0xf << 28);
        assert_eq!(
            choose_el2_granule(&cpu, GranuleRequest::Auto)
                .unwrap()
                .granule,
            Granule::K64
        );
        // 4K absent, 16K present -> 16K.
        let cpu = CpuFeatures::from_mmfr0(0xf << 28 | 2 << 20);
        assert_eq!(
            choose_el2_granule(&cpu, GranuleRequest::Auto)
                .unwrap()
                .granule,
            Granule::K16
        );
    }

    #[test]
    fn nothing_usable_is_an_error_naming_every_field() {
        let cpu = CpuFeatures::from_mmfr0(0xf << 28 | 0xf << 24);
        let e = choose_el2_granule(&cpu, GranuleRequest::Auto).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("TGran4 = 0b1111"), "{s}");
        assert!(s.contains("TGran16 = 0b0000"), "{s}");
        assert!(s.contains("TGran64 = 0b1111"), "{s}");
        let cpu = CpuFeatures::profile("max").unwrap().hide(7);
        let e = choose_el2_granule(&cpu, fixed(Granule::K16)).unwrap_err();
        assert!(e.to_string().contains("hidden by hyp.hide-granules"));
    }
}
