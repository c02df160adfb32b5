//! The guest kernel command line: the user's `cmdline` plus `arm64.pagesize=`.

use crate::layout::CMDLINE_MAX;
use alloc::string::String;
use core::fmt;
use stage2::Granule;

/// The parameter that tells a boot-time page size kernel its granule.
pub const PAGESIZE_PARAM: &str = "arm64.pagesize";

/// Why a command line cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    /// A byte that is not printable ASCII (or a tab).
    NotPrintable {
        /// Byte offset.
        offset: usize,
        /// The character.
        ch: char,
    },
    /// Longer than Linux's COMMAND_LINE_SIZE.
    TooLong {
        /// Bytes with the NUL.
        len: usize,
    },
    /// The user set `arm64.pagesize=` to a different page size.
    PageSizeConflict {
        /// As written.
        written: String,
        /// The resolved page size.
        resolved: Granule,
    },
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::NotPrintable { offset, ch } => write!(
                f,
                "character {ch:?} at byte {offset} is not printable ASCII; the kernel command \
                 line takes printable ASCII only"
            ),
            CmdlineError::TooLong { len } => write!(
                f,
                "the command line with `arm64.pagesize=` is {len} bytes with its NUL, more than \
                 Linux's {CMDLINE_MAX}; shorten it"
            ),
            CmdlineError::PageSizeConflict { written, resolved } => write!(
                f,
                "it sets `{PAGESIZE_PARAM}={written}` but the VM's page size is {resolved}; \
                 remove `{PAGESIZE_PARAM}=` from cmdline (hyp appends \
                 `{PAGESIZE_PARAM}={}`) or change page_size",
                resolved.name()
            ),
        }
    }
}

/// Checks a user command line's characters (printable ASCII and tabs).
pub fn check_chars(user: &str) -> Result<(), CmdlineError> {
    match user
        .char_indices()
        .find(|&(_, c)| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
    {
        Some((offset, ch)) => Err(CmdlineError::NotPrintable { offset, ch }),
        None => Ok(()),
    }
}

/// Builds the final command line: the user's kernel words, then `arm64.pagesize=<page>` (unless
/// the user already wrote the same value), then anything after `--`, which Linux hands to init
/// rather than parsing it (Documentation/admin-guide/kernel-parameters.rst). A different value
/// is an error.
pub fn build(user: &str, page: Granule) -> Result<String, CmdlineError> {
    check_chars(user)?;
    let mut has_param = false;
    let kernel_words = user.split_ascii_whitespace().take_while(|&w| w != "--");
    for word in kernel_words.clone() {
        if let Some(value) = word
            .strip_prefix(PAGESIZE_PARAM)
            .and_then(|r| r.strip_prefix('='))
        {
            // Linux's parser: strip enclosing quotes.
            let v = value.trim_matches('"');
            match v.parse::<Granule>() {
                Ok(g) if g == page => has_param = true,
                _ => {
                    return Err(CmdlineError::PageSizeConflict {
                        written: value.into(),
                        resolved: page,
                    })
                }
            }
        }
    }
    let mut out = String::new();
    let mut push = |word: &str| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    };
    kernel_words.for_each(&mut push);
    if !has_param {
        push(&alloc::format!("{PAGESIZE_PARAM}={}", page.name()));
    }
    user.split_ascii_whitespace()
        .skip_while(|&w| w != "--")
        .for_each(&mut push);
    if out.len() + 1 > CMDLINE_MAX {
        return Err(CmdlineError::TooLong { len: out.len() + 1 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn appends_pagesize() {
        assert_eq!(
            build("console=ttyAMA0", Granule::K16).unwrap(),
            "console=ttyAMA0 arm64.pagesize=16k"
        );
        assert_eq!(build("", Granule::K4).unwrap(), "arm64.pagesize=4k");
        assert_eq!(
            build("  a   b\t c ", Granule::K64).unwrap(),
            "a b c arm64.pagesize=64k"
        );
    }

    #[test]
    fn pagesize_goes_before_the_init_arguments() {
        assert_eq!(
            build("console=ttyAMA0 -- single", Granule::K16).unwrap(),
            "console=ttyAMA0 arm64.pagesize=16k -- single"
        );
        assert_eq!(build("--", Granule::K4).unwrap(), "arm64.pagesize=4k --");
        // After `--` the words belong to init: not a conflict, and not the kernel's setting.
        assert_eq!(
            build("quiet -- arm64.pagesize=64k", Granule::K4).unwrap(),
            "quiet arm64.pagesize=4k -- arm64.pagesize=64k"
        );
    }

    #[test]
    fn same_value_is_kept_once() {
        assert_eq!(
            build("quiet arm64.pagesize=16K", Granule::K16).unwrap(),
            "quiet arm64.pagesize=16K"
        );
    }

    #[test]
    fn conflicting_value_is_an_error() {
        let e = build("arm64.pagesize=4k", Granule::K16).unwrap_err();
        assert_eq!(
            e,
            CmdlineError::PageSizeConflict {
                written: "4k".into(),
                resolved: Granule::K16
            }
        );
        assert!(e.to_string().contains("remove `arm64.pagesize=`"));
        assert!(build("arm64.pagesize=banana", Granule::K4).is_err());
        // Other parameters that merely start alike are not the page size.
        assert!(build("arm64.pagesizex=4k", Granule::K16).is_ok());
    }

    #[test]
    fn limits() {
        assert!(matches!(
            build("a\u{7f}", Granule::K4),
            Err(CmdlineError::NotPrintable { offset: 1, .. })
        ));
        assert!(matches!(
            build("é", Granule::K4),
            Err(CmdlineError::NotPrintable { offset: 0, .. })
        ));
        assert!(build("a\nb", Granule::K4).is_err());
        let long = "x".repeat(CMDLINE_MAX - 1 - " arm64.pagesize=4k".len());
        assert!(build(&long, Granule::K4).is_ok());
        let longer = "x".repeat(CMDLINE_MAX - " arm64.pagesize=4k".len());
        assert_eq!(
            build(&longer, Granule::K4),
            Err(CmdlineError::TooLong {
                len: CMDLINE_MAX + 1
            })
        );
    }
}
