//! hyp's own command line (`/chosen/bootargs` of the host device tree).
//!
//! Recognised words (everything else is ignored, so a shared command line can carry other
//! software's options):
//! - `hyp.granule=4k|16k|64k|auto`: hyp's EL2 stage-1 granule (default `auto`).
//! - `hyp.hide-granules=LIST`: granules treated as absent everywhere (`4k,64k`, any subset).
//! - `hyp.hide-smmu-granules=LIST`: granules the SMMU is treated as unable to walk at stage 2
//!   (`SMMU_IDR5.GRAN*` read as 0), to rehearse e.g. an SMMU built for 16K-only hosts.
//! - `hyp.log=error|warn|info|debug|trace`: log level (default `info`).
//! - `hyp.stage2=pages|blocks`: how guest RAM is mapped at stage 2 (default `pages`): with
//!   blocks, QEMU's TCG softmmu records every guest TLB entry at the stage-2 block size, so
//!   each guest TLBI by VA flushes its whole TLB (a 4K Debian boot spends ~0.4 s more, in
//!   ftrace's text patching); on hardware, blocks are the better choice.
//! - `hyp.stress=N|off`: stage-2 stress for testing (default `off`): every N-th exit of a
//!   VM's vCPU 0, hyp unmaps, write-protects or migrates a few random guest RAM pages behind
//!   the running guest (see hyp's `vm::stress`).
//! - `hyp.spectre-exit=auto|none|loop|clrbhb|wa1|wa3`: test-only: run this Spectre
//!   mitigation on every exit from a guest instead of the one the CPU needs (default `auto`;
//!   the guests' SMCCC answers do not change; see `spectre`).
//! - `hyp.test=exception|panic|write-text|exec-data|stack-overflow|smp-work|map-device|none`: test-only switches that exercise
//!   the failure paths and W^X.
//!
//! A `hyp.` word with an unknown key or a bad value is an error: a typo must not silently
//! change which granule hyp runs with.

use crate::spectre::ExitOverride;
use core::fmt;
use stage2::cpu::parse_granule_list;
use stage2::Granule;

/// What `hyp.granule=` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GranuleRequest {
    /// The first granule the CPU supports in the order 4K, 16K, 64K.
    #[default]
    Auto,
    /// One granule; falls back to [`GranuleRequest::Auto`] with a message if the CPU lacks it.
    Fixed(Granule),
}

impl fmt::Display for GranuleRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GranuleRequest::Auto => f.write_str("auto"),
            GranuleRequest::Fixed(g) => f.write_str(g.name()),
        }
    }
}

/// A failure path to exercise on purpose (`hyp.test=`), used by the QEMU tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TestSwitch {
    /// Normal boot.
    #[default]
    None,
    /// Take an unexpected synchronous exception at EL2 (a data abort on an unmapped address)
    /// after boot, to exercise the exception report and the failure marker.
    Exception,
    /// Panic after boot, to exercise the panic report and the failure marker.
    Panic,
    /// Store into hyp's own text: must take a permission fault (W^X).
    WriteText,
    /// Branch into hyp's data: must take an instruction permission fault (W^X).
    ExecData,
    /// Recurse until the stack overflows into its guard page: must be reported (on the
    /// separate exception stack), not hang.
    StackOverflow,
    /// Give every secondary CPU work through its mailbox and wait until all ran it (a normal
    /// boot otherwise).
    SmpWork,
    /// Map a device the boot map lacks (the PL031 RTC) into the live EL2 map and read its ID
    /// register (a normal boot otherwise).
    MapDevice,
}

/// The log level of `hyp.log=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default: the stable output lines.
    #[default]
    Info,
    /// Boot details.
    Debug,
    /// Everything.
    Trace,
}

/// hyp's parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cmdline {
    /// `hyp.granule=`.
    pub granule: GranuleRequest,
    /// `hyp.hide-granules=` as a mask of [`Granule::bit`].
    pub hide_granules: u8,
    /// `hyp.hide-smmu-granules=` as a mask of [`Granule::bit`].
    pub hide_smmu_granules: u8,
    /// `hyp.log=`.
    pub log_level: LogLevel,
    /// `hyp.test=`.
    pub test: TestSwitch,
    /// `hyp.stage2=blocks`: map guest RAM at stage 2 with the largest blocks alignment allows
    /// (default: pages of the VM's stage-2 granule).
    pub stage2_blocks: bool,
    /// `hyp.stress=N`: stage-2 stress every N-th exit of vCPU 0; 0 = off (the default).
    pub stress: u32,
    /// `hyp.spectre-exit=` (test only).
    pub spectre_exit: ExitOverride,
}

/// A bad `hyp.` word on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A `hyp.` key hyp does not know.
    UnknownKey {
        /// The whole word, e.g. `hyp.granul=4k`.
        word: &'a str,
    },
    /// A known key with a value it does not accept.
    BadValue {
        /// The key, e.g. `hyp.granule`.
        key: &'static str,
        /// The value given.
        value: &'a str,
        /// What would be accepted.
        expected: &'static str,
    },
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnknownKey { word } => write!(
                f,
                "unknown option `{word}` on hyp's command line; known: hyp.granule=, \
                 hyp.hide-granules=, hyp.hide-smmu-granules=, hyp.log=, hyp.stage2=, hyp.stress=, hyp.spectre-exit=, \
                 hyp.test="
            ),
            CmdlineError::BadValue {
                key,
                value,
                expected,
            } => write!(f, "bad value `{key}={value}`: expected {expected}"),
        }
    }
}

const GRANULE_EXPECTED: &str = "one of 4k, 16k, 64k, auto";
const HIDE_EXPECTED: &str = "a comma-separated list of 4k, 16k, 64k (may be empty)";
const LOG_EXPECTED: &str = "one of error, warn, info, debug, trace";
const STAGE2_EXPECTED: &str = "pages or blocks";
const STRESS_EXPECTED: &str = "a number of exits from 1 to 1000000, or off";
const TEST_EXPECTED: &str =
    "one of none, exception, panic, write-text, exec-data, stack-overflow, smp-work, \
     map-device";

impl Cmdline {
    /// Parses a whole command line. Words are separated by ASCII whitespace; the last
    /// occurrence of a key wins (as for Linux parameters).
    pub fn parse(line: &str) -> Result<Cmdline, CmdlineError<'_>> {
        let mut c = Cmdline::default();
        for word in line.split_ascii_whitespace() {
            let Some(rest) = word.strip_prefix("hyp.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            c.set(key, value).map_err(|e| match e {
                SetError::UnknownKey => CmdlineError::UnknownKey { word },
                SetError::BadValue { key, expected } => CmdlineError::BadValue {
                    key,
                    value,
                    expected,
                },
            })?;
        }
        Ok(c)
    }

    /// Sets what `hyp.<key>=<value>` asks for.
    fn set(&mut self, key: &str, value: &str) -> Result<(), SetError> {
        let bad = |key, expected| SetError::BadValue { key, expected };
        match key {
            "granule" => {
                self.granule = granule_request(value).ok_or(bad("hyp.granule", GRANULE_EXPECTED))?
            }
            "hide-granules" => {
                self.hide_granules = parse_granule_list(value)
                    .map_err(|_| bad("hyp.hide-granules", HIDE_EXPECTED))?
            }
            "hide-smmu-granules" => {
                self.hide_smmu_granules = parse_granule_list(value)
                    .map_err(|_| bad("hyp.hide-smmu-granules", HIDE_EXPECTED))?
            }
            "log" => self.log_level = log_level(value).ok_or(bad("hyp.log", LOG_EXPECTED))?,
            "stage2" => {
                self.stage2_blocks =
                    stage2_blocks(value).ok_or(bad("hyp.stage2", STAGE2_EXPECTED))?
            }
            "stress" => self.stress = stress(value).ok_or(bad("hyp.stress", STRESS_EXPECTED))?,
            "spectre-exit" => {
                self.spectre_exit = ExitOverride::parse(value)
                    .ok_or(bad("hyp.spectre-exit", ExitOverride::EXPECTED))?
            }
            "test" => self.test = test_switch(value).ok_or(bad("hyp.test", TEST_EXPECTED))?,
            _ => return Err(SetError::UnknownKey),
        }
        Ok(())
    }
}

/// Why [`Cmdline::set`] refused a key and value ([`CmdlineError`] without the word).
enum SetError {
    UnknownKey,
    BadValue {
        key: &'static str,
        expected: &'static str,
    },
}

/// `hyp.granule=`: `auto` (any case) or a granule.
fn granule_request(value: &str) -> Option<GranuleRequest> {
    if value.eq_ignore_ascii_case("auto") {
        return Some(GranuleRequest::Auto);
    }
    value.parse::<Granule>().ok().map(GranuleRequest::Fixed)
}

/// `hyp.log=`.
fn log_level(value: &str) -> Option<LogLevel> {
    Some(match value {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => return None,
    })
}

/// `hyp.stage2=`: whether guest RAM is mapped with blocks.
fn stage2_blocks(value: &str) -> Option<bool> {
    match value {
        "pages" => Some(false),
        "blocks" => Some(true),
        _ => None,
    }
}

/// `hyp.stress=`: the period in exits, 0 for off.
fn stress(value: &str) -> Option<u32> {
    match value {
        "off" | "0" => Some(0),
        _ => value
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n)),
    }
}

/// `hyp.test=`.
fn test_switch(value: &str) -> Option<TestSwitch> {
    Some(match value {
        "none" => TestSwitch::None,
        "exception" => TestSwitch::Exception,
        "panic" => TestSwitch::Panic,
        "write-text" => TestSwitch::WriteText,
        "exec-data" => TestSwitch::ExecData,
        "stack-overflow" => TestSwitch::StackOverflow,
        "smp-work" => TestSwitch::SmpWork,
        "map-device" => TestSwitch::MapDevice,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// The values an `expected` text names: `one of a, b, c` or `a or b`.
    fn listed(expected: &str) -> Vec<&str> {
        let list = expected.strip_prefix("one of ").unwrap_or(expected);
        list.split([',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect()
    }

    #[test]
    fn every_value_an_error_lists_is_accepted_and_distinct() {
        // What a user reads after a typo must be exactly what the parsers take.
        fn check<T: PartialEq + fmt::Debug>(expected: &str, parse: fn(&str) -> Option<T>) {
            let got: Vec<T> = listed(expected)
                .into_iter()
                .map(|v| parse(v).unwrap_or_else(|| panic!("`{v}` of \"{expected}\" refused")))
                .collect();
            for (i, a) in got.iter().enumerate() {
                assert!(
                    !got[..i].contains(a),
                    "{a:?} listed twice in \"{expected}\""
                );
            }
        }
        check(GRANULE_EXPECTED, granule_request);
        check(LOG_EXPECTED, log_level);
        check(STAGE2_EXPECTED, stage2_blocks);
        check(TEST_EXPECTED, test_switch);
        assert_eq!(listed(TEST_EXPECTED).len(), 8, "one per TestSwitch variant");
        assert_eq!(listed(LOG_EXPECTED).len(), 5, "one per LogLevel variant");
        assert_eq!(stress("1000000"), Some(1_000_000));
        assert_eq!(stress("1000001"), None);
    }

    #[test]
    fn every_key_the_unknown_key_error_lists_is_known() {
        let msg = CmdlineError::UnknownKey { word: "hyp.x" }.to_string();
        let known = msg.split("known: ").nth(1).unwrap();
        let keys: Vec<&str> = known
            .split(", ")
            .map(|k| k.strip_prefix("hyp.").unwrap().strip_suffix('=').unwrap())
            .collect();
        assert_eq!(keys.len(), 8);
        for key in keys {
            assert!(
                !matches!(Cmdline::default().set(key, ""), Err(SetError::UnknownKey)),
                "hyp.{key}= is listed but unknown"
            );
        }
        assert!(matches!(
            Cmdline::default().set("granul", "4k"),
            Err(SetError::UnknownKey)
        ));
    }

    #[test]
    fn empty_and_foreign_words_give_defaults() {
        assert_eq!(Cmdline::parse("").unwrap(), Cmdline::default());
        let c = Cmdline::parse("console=ttyAMA0 earlycon  quiet\thyp").unwrap();
        assert_eq!(c, Cmdline::default());
        assert_eq!(c.granule, GranuleRequest::Auto);
        assert_eq!(c.log_level, LogLevel::Info);
    }

    #[test]
    fn granule_values() {
        for (s, want) in [
            ("hyp.granule=4k", GranuleRequest::Fixed(Granule::K4)),
            ("hyp.granule=16k", GranuleRequest::Fixed(Granule::K16)),
            ("hyp.granule=64K", GranuleRequest::Fixed(Granule::K64)),
            ("hyp.granule=auto", GranuleRequest::Auto),
            ("hyp.granule=AUTO", GranuleRequest::Auto),
            (
                "hyp.granule=64k hyp.granule=4k",
                GranuleRequest::Fixed(Granule::K4),
            ),
        ] {
            assert_eq!(Cmdline::parse(s).unwrap().granule, want, "{s}");
        }
        let e = Cmdline::parse("quiet hyp.granule=8k").unwrap_err();
        assert_eq!(
            e,
            CmdlineError::BadValue {
                key: "hyp.granule",
                value: "8k",
                expected: GRANULE_EXPECTED
            }
        );
        assert_eq!(
            e.to_string(),
            "bad value `hyp.granule=8k`: expected one of 4k, 16k, 64k, auto"
        );
        assert!(Cmdline::parse("hyp.granule=").is_err());
        assert!(Cmdline::parse("hyp.granule").is_err());
    }

    #[test]
    fn hide_granules() {
        let c = Cmdline::parse("hyp.hide-granules=4k,64k").unwrap();
        assert_eq!(c.hide_granules, Granule::K4.bit() | Granule::K64.bit());
        assert_eq!(c.hide_smmu_granules, 0);
        let c = Cmdline::parse("hyp.hide-smmu-granules=16k").unwrap();
        assert_eq!(
            (c.hide_granules, c.hide_smmu_granules),
            (0, Granule::K16.bit())
        );
        assert!(matches!(
            Cmdline::parse("hyp.hide-smmu-granules=8k"),
            Err(CmdlineError::BadValue {
                key: "hyp.hide-smmu-granules",
                ..
            })
        ));
        assert_eq!(
            Cmdline::parse("hyp.hide-granules=").unwrap().hide_granules,
            0
        );
        assert_eq!(
            Cmdline::parse("hyp.hide-granules=16k")
                .unwrap()
                .hide_granules,
            Granule::K16.bit()
        );
        let e = Cmdline::parse("hyp.hide-granules=4k,2k").unwrap_err();
        assert!(e.to_string().contains("hyp.hide-granules=4k,2k"), "{e}");
    }

    #[test]
    fn test_switches_and_log() {
        assert_eq!(
            Cmdline::parse("hyp.test=exception").unwrap().test,
            TestSwitch::Exception
        );
        assert_eq!(
            Cmdline::parse("hyp.test=panic").unwrap().test,
            TestSwitch::Panic
        );
        assert_eq!(
            Cmdline::parse("hyp.test=none").unwrap().test,
            TestSwitch::None
        );
        assert_eq!(
            Cmdline::parse("hyp.test=write-text").unwrap().test,
            TestSwitch::WriteText
        );
        assert_eq!(
            Cmdline::parse("hyp.test=exec-data").unwrap().test,
            TestSwitch::ExecData
        );
        assert_eq!(
            Cmdline::parse("hyp.test=stack-overflow").unwrap().test,
            TestSwitch::StackOverflow
        );
        assert_eq!(
            Cmdline::parse("hyp.test=smp-work").unwrap().test,
            TestSwitch::SmpWork
        );
        assert_eq!(
            Cmdline::parse("hyp.test=map-device").unwrap().test,
            TestSwitch::MapDevice
        );
        assert!(Cmdline::parse("hyp.test=reboot").is_err());
        assert_eq!(
            Cmdline::parse("hyp.log=debug").unwrap().log_level,
            LogLevel::Debug
        );
        assert!(Cmdline::parse("hyp.log=loud").is_err());
    }

    #[test]
    fn stage2_mapping_choice() {
        assert!(!Cmdline::parse("").unwrap().stage2_blocks);
        assert!(Cmdline::parse("hyp.stage2=blocks").unwrap().stage2_blocks);
        assert!(
            !Cmdline::parse("hyp.stage2=blocks hyp.stage2=pages")
                .unwrap()
                .stage2_blocks
        );
        assert_eq!(
            Cmdline::parse("hyp.stage2=huge").unwrap_err().to_string(),
            "bad value `hyp.stage2=huge`: expected pages or blocks"
        );
    }

    #[test]
    fn stress_period() {
        assert_eq!(Cmdline::parse("").unwrap().stress, 0);
        assert_eq!(Cmdline::parse("hyp.stress=64").unwrap().stress, 64);
        assert_eq!(Cmdline::parse("hyp.stress=1").unwrap().stress, 1);
        assert_eq!(
            Cmdline::parse("hyp.stress=8 hyp.stress=off")
                .unwrap()
                .stress,
            0
        );
        for bad in [
            "hyp.stress=",
            "hyp.stress=-1",
            "hyp.stress=fast",
            "hyp.stress=1000001",
        ] {
            let e = Cmdline::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("expected a number of exits"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn spectre_exit_override() {
        assert_eq!(Cmdline::parse("").unwrap().spectre_exit, ExitOverride::Auto);
        assert_eq!(
            Cmdline::parse("hyp.spectre-exit=wa3").unwrap().spectre_exit,
            ExitOverride::Wa3
        );
        assert_eq!(
            Cmdline::parse("hyp.spectre-exit=loop hyp.spectre-exit=auto")
                .unwrap()
                .spectre_exit,
            ExitOverride::Auto
        );
        assert_eq!(
            Cmdline::parse("hyp.spectre-exit=off")
                .unwrap_err()
                .to_string(),
            "bad value `hyp.spectre-exit=off`: expected one of auto, none, loop, clrbhb, wa1, wa3"
        );
    }

    #[test]
    fn unknown_hyp_key_is_an_error_naming_the_word() {
        let e = Cmdline::parse("hyp.granul=4k").unwrap_err();
        assert_eq!(
            e,
            CmdlineError::UnknownKey {
                word: "hyp.granul=4k"
            }
        );
        assert!(e.to_string().starts_with("unknown option `hyp.granul=4k`"));
    }
}
