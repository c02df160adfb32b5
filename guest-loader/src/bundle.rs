//! The boot bundle: one file holding a system config and every file it references, which `run`
//! hands QEMU as the initrd (`-initrd`: QEMU loads it into RAM and names it in the device tree)
//! and hyp parses in place with [`Bundle::parse`].
//!
//! # Format (version 1)
//!
//! A bundle is a cpio archive in the SVR4 "newc" format, as `cpio -o -H newc` writes it, so
//! `cpio -t < bundle` lists it and `cpio -i` unpacks it. Each entry is:
//!
//! 1. a 110-byte ASCII header: the magic `070701`, then 13 fields of 8 hexadecimal digits:
//!    `ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
//!    check`;
//! 2. the name, `namesize` bytes including its terminating NUL, then NULs up to a multiple of
//!    4 bytes counted from the start of the header;
//! 3. `filesize` bytes of data, then NULs up to a multiple of 4 bytes.
//!
//! The entry named `TRAILER!!!` ends the archive; anything after it (cpio pads to 512-byte
//! blocks) is ignored.
//!
//! Contents, as [`make_bundle`] writes them: first `system.toml`, the config, whose `kernel`
//! and `initrd` values are rewritten to name entries of the archive; then `files/<name>`, each
//! referenced file once (files named by several VMs are stored once). Entries are regular
//! files with mode 0644, uid/gid 0 and mtime 0, so a bundle is reproducible.
//!
//! The parser accepts regular files and directories (directories are skipped), names that are
//! relative, at most 255 bytes, without `..` or empty components (a leading `./` is dropped),
//! rejects duplicates, and requires `system.toml` (UTF-8) and the trailer. Every field is
//! bounds-checked against the archive: a corrupt bundle is an error, never a panic.

use crate::config::{parse_config, ConfigError, ErrorKind, Errors};
use crate::plan::{plan_system, FileSource, Host, SystemPlan};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The config's name inside a bundle.
pub const CONFIG_NAME: &str = "system.toml";
/// The directory the referenced files go to.
pub const FILES_DIR: &str = "files/";
/// The newc magic.
pub const MAGIC: &[u8; 6] = b"070701";
/// The trailer entry's name.
pub const TRAILER: &str = "TRAILER!!!";
/// Header length.
pub const HEADER_LEN: usize = 110;
/// Longest entry name accepted.
pub const MAX_NAME: usize = 255;
/// Most entries accepted.
pub const MAX_ENTRIES: usize = 4096;

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

/// Why a bundle cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// The archive ends inside an entry (or before the trailer).
    Truncated {
        /// Offset of the entry.
        offset: usize,
    },
    /// No `070701` magic.
    BadMagic {
        /// Offset of the entry.
        offset: usize,
    },
    /// A header field is not 8 hex digits.
    BadField {
        /// Offset of the entry.
        offset: usize,
        /// The field's name.
        field: &'static str,
    },
    /// A name that is empty, too long, not NUL-terminated, absolute, with `..`, or not UTF-8.
    BadName {
        /// Offset of the entry.
        offset: usize,
    },
    /// A file type other than regular file or directory.
    UnsupportedType {
        /// The entry's name.
        name: String,
        /// Its mode.
        mode: u32,
    },
    /// Two entries with one name.
    Duplicate {
        /// The name.
        name: String,
    },
    /// More than [`MAX_ENTRIES`].
    TooManyEntries,
    /// No `system.toml`.
    NoConfig,
    /// `system.toml` is not UTF-8.
    ConfigNotUtf8,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BundleError::*;
        f.write_str("corrupt boot bundle: ")?;
        match self {
            Truncated { offset } => write!(f, "truncated at the entry at byte {offset}"),
            BadMagic { offset } => write!(
                f,
                "no cpio newc magic \"070701\" at byte {offset}; rebuild it with `guest-loader \
                 bundle`"
            ),
            BadField { offset, field } => {
                write!(
                    f,
                    "field {field} of the entry at byte {offset} is not hexadecimal"
                )
            }
            BadName { offset } => write!(f, "invalid name in the entry at byte {offset}"),
            UnsupportedType { name, mode } => write!(
                f,
                "\"{name}\" has mode {mode:#o}; only regular files and directories are allowed"
            ),
            Duplicate { name } => write!(f, "\"{name}\" appears twice"),
            TooManyEntries => write!(f, "more than {MAX_ENTRIES} entries"),
            NoConfig => write!(f, "no {CONFIG_NAME}; build it with `guest-loader bundle`"),
            ConfigNotUtf8 => write!(f, "{CONFIG_NAME} is not UTF-8"),
        }
    }
}

/// A parsed bundle, borrowing the archive's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle<'a> {
    config: &'a str,
    files: Vec<(&'a str, &'a [u8])>,
}

fn hex_field(h: &[u8], index: usize) -> Option<u32> {
    let s = h.get(6 + index * 8..6 + index * 8 + 8)?;
    let mut v: u32 = 0;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d;
    }
    Some(v)
}

const FIELDS: [&str; 13] = [
    "c_ino",
    "c_mode",
    "c_uid",
    "c_gid",
    "c_nlink",
    "c_mtime",
    "c_filesize",
    "c_devmajor",
    "c_devminor",
    "c_rdevmajor",
    "c_rdevminor",
    "c_namesize",
    "c_check",
];

fn pad4(x: usize) -> Option<usize> {
    x.checked_add(3).map(|v| v & !3)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != ".")
}

/// One archive entry as stored.
struct Entry<'a> {
    /// Where its header starts.
    offset: usize,
    /// `c_mode`: the file type and permissions.
    mode: u32,
    /// The name as written (without its NUL).
    name: &'a str,
    /// The file's bytes.
    data: &'a [u8],
}

impl<'a> Entry<'a> {
    /// Reads the entry at `offset`: the header, the name, the data. Returns it and where the
    /// next entry starts.
    fn read(archive: &'a [u8], offset: usize) -> Result<(Entry<'a>, usize), BundleError> {
        let truncated = || BundleError::Truncated { offset };
        let header = archive
            .get(offset..offset.checked_add(HEADER_LEN).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        if &header[..6] != MAGIC {
            return Err(BundleError::BadMagic { offset });
        }
        let mut fields = [0u32; 13];
        for (i, f) in fields.iter_mut().enumerate() {
            *f = hex_field(header, i).ok_or(BundleError::BadField {
                offset,
                field: FIELDS[i],
            })?;
        }
        let (mode, filesize, namesize) = (fields[1], fields[6] as usize, fields[11] as usize);
        if namesize == 0 || namesize > MAX_NAME + 1 {
            return Err(BundleError::BadName { offset });
        }
        let name_start = offset + HEADER_LEN;
        let name = archive
            .get(name_start..name_start + namesize)
            .ok_or_else(truncated)?;
        let name = entry_name(name).ok_or(BundleError::BadName { offset })?;
        let data_start = pad4(name_start + namesize).ok_or_else(truncated)?;
        let data_end = data_start.checked_add(filesize).ok_or_else(truncated)?;
        let data = archive.get(data_start..data_end).ok_or_else(truncated)?;
        let next = pad4(data_end).ok_or_else(truncated)?;
        let entry = Entry {
            offset,
            mode,
            name,
            data,
        };
        Ok((entry, next))
    }

    /// The name a regular file is found by (a leading `./` dropped); `None` for a directory
    /// (and `.`), which is skipped.
    fn file_name(&self) -> Result<Option<&'a str>, BundleError> {
        let name = self.name.strip_prefix("./").unwrap_or(self.name);
        if name == "." {
            return Ok(None);
        }
        if !valid_name(name) {
            return Err(BundleError::BadName {
                offset: self.offset,
            });
        }
        match self.mode & S_IFMT {
            S_IFDIR => Ok(None),
            S_IFREG => Ok(Some(name)),
            _ => Err(BundleError::UnsupportedType {
                name: name.into(),
                mode: self.mode,
            }),
        }
    }
}

/// A stored name: `namesize` bytes ending in the only NUL, UTF-8 before it.
fn entry_name(stored: &[u8]) -> Option<&str> {
    let (last, name) = stored.split_last()?;
    if *last != 0 || name.contains(&0) {
        return None;
    }
    core::str::from_utf8(name).ok()
}

impl<'a> Bundle<'a> {
    /// Parses a bundle.
    pub fn parse(data: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        let mut at = 0usize;
        let mut files: Vec<(&'a str, &'a [u8])> = Vec::new();
        loop {
            let (entry, next) = Entry::read(data, at)?;
            at = next;
            if entry.name == TRAILER {
                break;
            }
            let Some(name) = entry.file_name()? else {
                continue;
            };
            if files.iter().any(|(n, _)| *n == name) {
                return Err(BundleError::Duplicate { name: name.into() });
            }
            if files.len() == MAX_ENTRIES {
                return Err(BundleError::TooManyEntries);
            }
            files.push((name, entry.data));
        }
        let config = files
            .iter()
            .find(|(n, _)| *n == CONFIG_NAME)
            .ok_or(BundleError::NoConfig)?
            .1;
        let config = core::str::from_utf8(config).map_err(|_| BundleError::ConfigNotUtf8)?;
        Ok(Bundle { config, files })
    }

    /// The system config (`system.toml`).
    pub fn config(&self) -> &'a str {
        self.config
    }

    /// The bytes of entry `name` (a leading `./` is ignored).
    pub fn file(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.strip_prefix("./").unwrap_or(name);
        self.files.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    /// Every regular file, in archive order (`system.toml` included).
    pub fn files(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        self.files.iter().copied()
    }

    /// Validates and resolves the bundle's system for `host`.
    pub fn plan(&self, host: &Host) -> Result<SystemPlan<'_>, Errors> {
        let cfg = parse_config(CONFIG_NAME, self.config)?;
        plan_system(&cfg, self, host)
    }
}

impl FileSource for Bundle<'_> {
    fn file(&self, path: &str) -> Option<&[u8]> {
        Bundle::file(self, path)
    }
}

/// Writes a newc archive of `entries` (name, bytes), regular files, then the trailer.
pub fn write_cpio(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]| {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    for (i, (name, data)) in entries.iter().enumerate() {
        put(&mut out, i as u32 + 1, S_IFREG | 0o644, name, data);
    }
    put(&mut out, 0, 0, TRAILER, &[]);
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
    out
}

fn archive_name(path: &str, taken: &[String]) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let mut clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        clean = String::from("file");
    }
    let mut name = format!("{FILES_DIR}{clean}");
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{FILES_DIR}{n}-{clean}");
        n += 1;
    }
    name
}

/// Builds a bundle from a config (`file` names it in errors) and the files it references:
/// every referenced file must exist and be non-empty; the config's `kernel` and `initrd`
/// values are rewritten to the archive names (everything else, comments included, is kept).
pub fn make_bundle<F: FileSource + ?Sized>(
    file: &str,
    text: &str,
    files: &F,
) -> Result<Vec<u8>, Errors> {
    let cfg = parse_config(file, text)?;
    let mut errors = Vec::new();
    // (source path, archive name)
    let mut names: Vec<(String, String)> = Vec::new();
    let mut edits: Vec<(core::ops::Range<usize>, String)> = Vec::new();
    for vm in &cfg.vms {
        let refs = [
            Some((
                &vm.kernel,
                vm.pos.kernel_span.clone(),
                vm.pos.kernel,
                "kernel",
            )),
            vm.initrd
                .as_ref()
                .zip(vm.pos.initrd_span.clone())
                .map(|(p, s)| (p, s, vm.pos.initrd, "initrd")),
        ];
        for (path, span, pos, key) in refs.into_iter().flatten() {
            let kind = match files.file(path) {
                None => Some(ErrorKind::MissingFile { path: path.clone() }),
                Some([]) => Some(ErrorKind::EmptyFile { path: path.clone() }),
                Some(_) => None,
            };
            if let Some(kind) = kind {
                errors.push(ConfigError {
                    file: file.into(),
                    pos: Some(pos),
                    vm: Some(vm.name.clone()),
                    key: Some(key.into()),
                    kind,
                });
                continue;
            }
            let name = match names.iter().find(|(p, _)| p == path) {
                Some((_, n)) => n.clone(),
                None => {
                    let taken: Vec<String> = names.iter().map(|(_, n)| n.clone()).collect();
                    let n = archive_name(path, &taken);
                    names.push((path.clone(), n.clone()));
                    n
                }
            };
            edits.push((span, format!("\"{name}\"")));
        }
    }
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    edits.sort_by_key(|(s, _)| s.start);
    let mut config = String::with_capacity(text.len());
    let mut at = 0;
    for (span, new) in &edits {
        config.push_str(&text[at..span.start]);
        config.push_str(new);
        at = span.end;
    }
    config.push_str(&text[at..]);
    let mut entries: Vec<(&str, &[u8])> = Vec::with_capacity(names.len() + 1);
    entries.push((CONFIG_NAME, config.as_bytes()));
    for (path, name) in &names {
        // Checked above: every path exists.
        if let Some(d) = files.file(path) {
            entries.push((name.as_str(), d));
        }
    }
    Ok(write_cpio(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_written_bundle_parses_back_to_its_config_and_files() {
        let a = write_cpio(&[("system.toml", b"x = 1\n"), ("files/k", &[1, 2, 3, 4, 5])]);
        assert_eq!(a.len() % 512, 0);
        let b = Bundle::parse(&a).unwrap();
        assert_eq!(b.config(), "x = 1\n");
        assert_eq!(b.file("files/k"), Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(b.file("./files/k"), Some(&[1u8, 2, 3, 4, 5][..]));
        assert_eq!(b.file("files/nope"), None);
        assert_eq!(b.files().count(), 2);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let a = write_cpio(&[("system.toml", b"abc"), ("files/k", &[9; 33])]);
        // The trailer ends at the last non-padding byte.
        let end = a.iter().rposition(|&b| b != 0).unwrap();
        for len in 0..end {
            assert!(Bundle::parse(&a[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn corrupt_bundles_are_refused_with_what_is_wrong() {
        let good = write_cpio(&[("system.toml", b"abc")]);
        let mut bad = good.clone();
        bad[0] = b'1';
        assert_eq!(
            Bundle::parse(&bad),
            Err(BundleError::BadMagic { offset: 0 })
        );
        let mut bad = good.clone();
        bad[6 + 6 * 8] = b'z'; // filesize
        assert_eq!(
            Bundle::parse(&bad),
            Err(BundleError::BadField {
                offset: 0,
                field: "c_filesize"
            })
        );
        let mut bad = good.clone();
        bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        assert_eq!(
            Bundle::parse(&bad),
            Err(BundleError::Truncated { offset: 0 })
        );
        assert_eq!(
            Bundle::parse(&write_cpio(&[("a", b"1")])),
            Err(BundleError::NoConfig)
        );
        assert_eq!(
            Bundle::parse(&write_cpio(&[("system.toml", b"1"), ("system.toml", b"2")])),
            Err(BundleError::Duplicate {
                name: "system.toml".into()
            })
        );
        for name in ["../x", "/etc/passwd", "a//b", "a/./b"] {
            assert!(
                matches!(
                    Bundle::parse(&write_cpio(&[("system.toml", b"1"), (name, b"2")])),
                    Err(BundleError::BadName { .. })
                ),
                "{name}"
            );
        }
        assert_eq!(
            Bundle::parse(&write_cpio(&[("system.toml", &[0xff, 0xfe])])),
            Err(BundleError::ConfigNotUtf8)
        );
        // A symlink.
        let mut bad = write_cpio(&[("system.toml", b"1"), ("l", b"target")]);
        let second = 112 + 12 + 4; // header + "system.toml\0" padded + data padded
        assert_eq!(&bad[second..second + 6], b"070701");
        bad[second + 14..second + 20].copy_from_slice(b"120777");
        assert!(matches!(
            Bundle::parse(&bad),
            Err(BundleError::UnsupportedType { .. })
        ));
        // Empty input.
        assert_eq!(
            Bundle::parse(&[]),
            Err(BundleError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn a_stored_name_ends_in_its_only_nul() {
        assert_eq!(entry_name(b"files/k\0"), Some("files/k"));
        assert_eq!(entry_name(b"\0"), Some(""));
        assert_eq!(entry_name(b""), None);
        assert_eq!(entry_name(b"files/k"), None);
        assert_eq!(entry_name(b"fil\0es\0"), None);
        assert_eq!(entry_name(b"\xff\0"), None);
    }

    #[test]
    fn archive_names_are_clean_and_unique() {
        let taken = vec![String::from("files/Image")];
        assert_eq!(archive_name("a/b/Image", &[]), "files/Image");
        assert_eq!(archive_name("x/Image", &taken), "files/2-Image");
        assert_eq!(archive_name("x/we ird$", &[]), "files/we_ird_");
        assert_eq!(archive_name("..", &[]), "files/file");
    }
}
