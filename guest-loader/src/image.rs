//! arm64 Linux `Image` files (Linux `Documentation/arch/arm64/booting.rst`), plain or gzip.
//!
//! The 64-byte header, little-endian:
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | `code0` u32 | executable code |
//! | 4 | `code1` u32 | executable code |
//! | 8 | `text_offset` u64 | image load offset from a 2 MiB aligned base |
//! | 16 | `image_size` u64 | effective image size (text + data + BSS); 0 on pre-3.17 kernels |
//! | 24 | `flags` u64 | bit 0 big-endian; bits 1-2 page size (0 unspecified, 1 4K, 2 16K, 3 64K); bit 3 may be placed anywhere in RAM |
//! | 32..56 | `res2`, `res3`, `res4` | reserved |
//! | 56 | `magic` u32 | `"ARM\x64"` (0x644d5241) |
//! | 60 | `res5` u32 | reserved (PE header offset for EFI stubs) |

use crate::layout::{LEGACY_TEXT_OFFSET, MAX_TEXT_OFFSET};
use alloc::borrow::Cow;
use alloc::vec::Vec;
use core::fmt;
use stage2::Granule;

/// Size of the Image header.
pub const HEADER_SIZE: usize = 64;
/// `"ARM\x64"` read as a little-endian u32.
pub const MAGIC: u32 = 0x644d_5241;
/// Largest Image (file or `image_size`) accepted: 1 GiB. Debian's kernels are ~44 MiB.
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;

/// The decoded Image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// `text_offset` (0x80000 for a legacy header).
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address, BSS included: `image_size`, or for a
    /// legacy header (image_size 0) the file length.
    pub image_size: u64,
    /// `image_size` was 0 (a pre-3.17 kernel: no flags, text_offset assumed 0x80000).
    pub legacy: bool,
    /// The raw `flags` field (0 for a legacy header).
    pub flags: u64,
    /// Flags bit 0: the kernel is big-endian.
    pub big_endian: bool,
    /// Flags bits 1-2: the page size the kernel was built for, `None` when unspecified (a
    /// boot-time page size kernel takes any).
    pub page_size: Option<Granule>,
    /// Flags bit 3: the kernel may be placed anywhere in RAM (else as low as possible).
    pub anywhere: bool,
}

/// Why an Image cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the 64-byte header.
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// No `ARM\x64` at offset 56.
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// Flags bit 0: a big-endian kernel.
    BigEndian,
    /// `text_offset` beyond 2 MiB.
    TextOffsetTooLarge {
        /// The header's value.
        text_offset: u64,
    },
    /// `image_size` (or a file) beyond [`MAX_IMAGE_SIZE`].
    TooLarge {
        /// The size.
        size: u64,
    },
    /// The file holds more bytes than its header's `image_size`.
    FileLargerThanImage {
        /// File length.
        file: u64,
        /// The header's image_size.
        image_size: u64,
    },
    /// The gzip wrapper is malformed or the data is corrupt.
    Gzip(GzipError),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Truncated { len } => write!(
                f,
                "not an arm64 Image: the file has {len} bytes, fewer than the 64-byte header; \
                 point `kernel` at the kernel's Image (e.g. /boot/vmlinuz-*)"
            ),
            ImageError::BadMagic { found } => write!(
                f,
                "not an arm64 Image: magic at offset 56 is {found:02x?}, expected \"ARM\\x64\" \
                 (41 52 4d 64); point `kernel` at an uncompressed or gzip arm64 Image, not an \
                 ELF vmlinux or a zImage"
            ),
            ImageError::BigEndian => f.write_str(
                "the Image header's flags bit 0 says big-endian; hyp runs little-endian kernels \
                 only",
            ),
            ImageError::TextOffsetTooLarge { text_offset } => write!(
                f,
                "the Image header's text_offset {text_offset:#x} is beyond 2M; the header is \
                 corrupt"
            ),
            ImageError::TooLarge { size } => write!(
                f,
                "the Image is {size} bytes, more than the 1G limit; the header is corrupt or \
                 this is not a kernel"
            ),
            ImageError::FileLargerThanImage { file, image_size } => write!(
                f,
                "the Image file has {file} bytes but its header's image_size is {image_size}; \
                 the header is corrupt"
            ),
            ImageError::Gzip(e) => write!(f, "gzip Image: {e}"),
        }
    }
}

/// Why a gzip stream cannot be inflated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// Shorter than a gzip header and trailer.
    Truncated,
    /// Not deflate (`CM` ≠ 8) or reserved flag bits set.
    Unsupported {
        /// Compression method.
        method: u8,
        /// Flags byte.
        flags: u8,
    },
    /// The deflate data is corrupt or ends early.
    Corrupt,
    /// Inflating would exceed the limit.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The CRC-32 in the trailer does not match.
    Crc {
        /// From the trailer.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The length in the trailer does not match.
    Length {
        /// From the trailer (mod 2^32).
        expected: u32,
        /// Inflated bytes.
        actual: u64,
    },
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::Truncated => f.write_str("truncated gzip header or trailer"),
            GzipError::Unsupported { method, flags } => write!(
                f,
                "unsupported gzip stream (method {method}, flags {flags:#04x}); recompress \
                 with `gzip -9`"
            ),
            GzipError::Corrupt => f.write_str("corrupt or truncated deflate data"),
            GzipError::TooLarge { limit } => write!(
                f,
                "inflates to more than {limit} bytes; use a smaller kernel or more memory"
            ),
            GzipError::Crc { expected, actual } => write!(
                f,
                "CRC-32 mismatch (trailer {expected:#010x}, data {actual:#010x}): the file is \
                 corrupt"
            ),
            GzipError::Length { expected, actual } => write!(
                f,
                "length mismatch (trailer {expected}, data {actual}): the file is corrupt"
            ),
        }
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

impl ImageHeader {
    /// Decodes and validates the header at the start of `image` (the whole file: its length is
    /// checked against `image_size`).
    pub fn parse(image: &[u8]) -> Result<ImageHeader, ImageError> {
        if image.len() < HEADER_SIZE {
            return Err(ImageError::Truncated { len: image.len() });
        }
        let magic = le_u32(image, 56);
        if magic != MAGIC {
            return Err(ImageError::BadMagic {
                found: magic.to_le_bytes(),
            });
        }
        let file = image.len() as u64;
        if file > MAX_IMAGE_SIZE {
            return Err(ImageError::TooLarge { size: file });
        }
        let image_size = le_u64(image, 16);
        if image_size == 0 {
            // booting.rst: "if image_size is zero, text_offset can be assumed to be 0x80000";
            // the flags field did not exist yet.
            return Ok(ImageHeader {
                text_offset: LEGACY_TEXT_OFFSET,
                image_size: file,
                legacy: true,
                flags: 0,
                big_endian: false,
                page_size: None,
                anywhere: false,
            });
        }
        let text_offset = le_u64(image, 8);
        let flags = le_u64(image, 24);
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        if text_offset >= MAX_TEXT_OFFSET {
            return Err(ImageError::TextOffsetTooLarge { text_offset });
        }
        if image_size > MAX_IMAGE_SIZE {
            return Err(ImageError::TooLarge { size: image_size });
        }
        if file > image_size {
            return Err(ImageError::FileLargerThanImage { file, image_size });
        }
        let page_size = match (flags >> 1) & 3 {
            1 => Some(Granule::K4),
            2 => Some(Granule::K16),
            3 => Some(Granule::K64),
            _ => None,
        };
        Ok(ImageHeader {
            text_offset,
            image_size,
            legacy: false,
            flags,
            big_endian: false,
            page_size,
            anywhere: flags & (1 << 3) != 0,
        })
    }

    /// The header's page-size field (flags bits 1-2) as written.
    pub const fn page_size_field(&self) -> u64 {
        (self.flags >> 1) & 3
    }
}

/// A kernel ready to load: its header and its (inflated) bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel<'a> {
    /// The decoded header.
    pub header: ImageHeader,
    /// The Image bytes (borrowed when the file was not compressed).
    pub data: Cow<'a, [u8]>,
    /// The file was gzip-compressed.
    pub gzip: bool,
}

/// Whether `file` starts like a gzip stream.
pub fn is_gzip(file: &[u8]) -> bool {
    file.len() >= 2 && file[0] == 0x1f && file[1] == 0x8b
}

/// Reads a kernel file: inflates gzip (at most `limit` bytes, itself capped at
/// [`MAX_IMAGE_SIZE`]) and decodes the header.
pub fn load_kernel(file: &[u8], limit: u64) -> Result<Kernel<'_>, ImageError> {
    if is_gzip(file) {
        let data = gunzip(file, limit.min(MAX_IMAGE_SIZE)).map_err(ImageError::Gzip)?;
        let header = ImageHeader::parse(&data)?;
        Ok(Kernel {
            header,
            data: Cow::Owned(data),
            gzip: true,
        })
    } else {
        let header = ImageHeader::parse(file)?;
        Ok(Kernel {
            header,
            data: Cow::Borrowed(file),
            gzip: false,
        })
    }
}

/// Inflates a single-member gzip stream (RFC 1952) of at most `limit` output bytes, checking
/// the trailer's CRC-32 and length.
pub fn gunzip(file: &[u8], limit: u64) -> Result<Vec<u8>, GzipError> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    if file.len() < 18 || !is_gzip(file) {
        return Err(GzipError::Truncated);
    }
    let (method, flags) = (file[2], file[3]);
    if method != 8 || flags & 0xe0 != 0 {
        return Err(GzipError::Unsupported { method, flags });
    }
    let body_end = file.len() - 8;
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = file.get(at..at + 2).ok_or(GzipError::Truncated)?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = file.get(at..body_end).ok_or(GzipError::Truncated)?;
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(GzipError::Truncated)?;
            at += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let body = file.get(at..body_end).ok_or(GzipError::Truncated)?;
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let data = miniz_oxide::inflate::decompress_to_vec_with_limit(body, limit_usize).map_err(
        |e| match e.status {
            miniz_oxide::inflate::TINFLStatus::HasMoreOutput => GzipError::TooLarge { limit },
            _ => GzipError::Corrupt,
        },
    )?;
    let expected_crc = le_u32(file, body_end);
    let expected_len = le_u32(file, body_end + 4);
    let actual = crc32(&data);
    if actual != expected_crc {
        return Err(GzipError::Crc {
            expected: expected_crc,
            actual,
        });
    }
    if data.len() as u32 != expected_len {
        return Err(GzipError::Length {
            expected: expected_len,
            actual: data.len() as u64,
        });
    }
    Ok(data)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as gzip uses it.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Test and fuzz helpers: synthesized Image files (the `synth` feature).
#[cfg(any(test, feature = "synth"))]
pub mod synth {
    use super::*;
    use alloc::vec;

    /// An Image of `file_len` bytes (≥ 64) with the given header fields.
    pub fn image(text_offset: u64, image_size: u64, flags: u64, file_len: usize) -> Vec<u8> {
        let mut v = vec![0u8; file_len.max(HEADER_SIZE)];
        // code0: `b` to the kernel's entry code (0x14000000 | imm26), code1 0, as Linux writes.
        v[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        v[8..16].copy_from_slice(&text_offset.to_le_bytes());
        v[16..24].copy_from_slice(&image_size.to_le_bytes());
        v[24..32].copy_from_slice(&flags.to_le_bytes());
        v[56..60].copy_from_slice(&MAGIC.to_le_bytes());
        v
    }

    /// Wraps `data` in a gzip member (stored deflate blocks: no compressor needed).
    pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        let mut chunks = data.chunks(0xffff).peekable();
        if chunks.peek().is_none() {
            v.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        while let Some(c) = chunks.next() {
            let last = u8::from(chunks.peek().is_none());
            let len = c.len() as u16;
            v.push(last);
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&(!len).to_le_bytes());
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&crc32(data).to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::*;
    use alloc::string::ToString;

    /// Debian 6.12 `arm64` (4K) and `arm64-16k` headers as measured: text_offset 0, flags 0xa
    /// and 0xc.
    #[test]
    fn debian_style_headers() {
        let img = image(0, 0x2c5_0000, 0xa, 4096);
        let h = ImageHeader::parse(&img).unwrap();
        assert_eq!(h.page_size, Some(Granule::K4));
        assert!(h.anywhere);
        assert!(!h.big_endian && !h.legacy);
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x2c5_0000);
        let h = ImageHeader::parse(&image(0, 0x2c5_0000, 0xc, 4096)).unwrap();
        assert_eq!(h.page_size, Some(Granule::K16));
        let h = ImageHeader::parse(&image(0, 0x100_0000, 0xe, 4096)).unwrap();
        assert_eq!(h.page_size, Some(Granule::K64));
        let h = ImageHeader::parse(&image(0, 0x100_0000, 0x8, 4096)).unwrap();
        assert_eq!(h.page_size, None);
        assert_eq!(h.page_size_field(), 0);
        // Reserved bits 4-63 are ignored.
        let h = ImageHeader::parse(&image(0, 0x100_0000, 0xf0 | 0x2, 4096)).unwrap();
        assert_eq!(h.page_size, Some(Granule::K4));
        assert!(!h.anywhere);
    }

    #[test]
    fn legacy_header() {
        let h = ImageHeader::parse(&image(0x1234, 0, 0xc, 5000)).unwrap();
        assert!(h.legacy);
        assert_eq!(h.text_offset, LEGACY_TEXT_OFFSET);
        assert_eq!(h.image_size, 5000);
        assert_eq!(h.page_size, None);
    }

    #[test]
    fn bad_headers() {
        let good = image(0, 0x10_0000, 0xa, 4096);
        // Truncated at every length below the header.
        for len in 0..HEADER_SIZE {
            assert_eq!(
                ImageHeader::parse(&good[..len]),
                Err(ImageError::Truncated { len })
            );
        }
        let mut bad = good.clone();
        bad[56] = b'X';
        let e = ImageHeader::parse(&bad).unwrap_err();
        assert!(matches!(e, ImageError::BadMagic { .. }));
        assert!(e.to_string().contains("expected \"ARM\\x64\""), "{e}");
        // An ELF file.
        let mut elf = good.clone();
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[56..60].copy_from_slice(&[0; 4]);
        assert!(matches!(
            ImageHeader::parse(&elf),
            Err(ImageError::BadMagic { .. })
        ));
        assert_eq!(
            ImageHeader::parse(&image(0, 0x10_0000, 0xb, 4096)),
            Err(ImageError::BigEndian)
        );
        assert_eq!(
            ImageHeader::parse(&image(2 << 20, 0x10_0000, 0xa, 4096)),
            Err(ImageError::TextOffsetTooLarge {
                text_offset: 2 << 20
            })
        );
        assert_eq!(
            ImageHeader::parse(&image(0, u64::MAX, 0xa, 4096)),
            Err(ImageError::TooLarge { size: u64::MAX })
        );
        assert_eq!(
            ImageHeader::parse(&image(0, (1 << 30) + 1, 0xa, 4096)),
            Err(ImageError::TooLarge {
                size: (1 << 30) + 1
            })
        );
        assert_eq!(
            ImageHeader::parse(&image(0, 100, 0xa, 4096)),
            Err(ImageError::FileLargerThanImage {
                file: 4096,
                image_size: 100
            })
        );
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn gzip_images() {
        let img = image(0, 0x20_0000, 0xc, 70_000);
        let gz = gzip_stored(&img);
        let k = load_kernel(&gz, 1 << 30).unwrap();
        assert!(k.gzip);
        assert_eq!(k.header.page_size, Some(Granule::K16));
        assert_eq!(&*k.data, &img[..]);
        // Plain images are borrowed, not copied.
        let k = load_kernel(&img, 1 << 30).unwrap();
        assert!(!k.gzip && matches!(k.data, Cow::Borrowed(_)));
        // Limit.
        assert_eq!(
            load_kernel(&gz, 1000).unwrap_err(),
            ImageError::Gzip(GzipError::TooLarge { limit: 1000 })
        );
        // Truncated at every byte: always an error, never a panic.
        for len in 0..gz.len() {
            assert!(load_kernel(&gz[..len], 1 << 30).is_err(), "len {len}");
        }
        // Corrupt CRC.
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(matches!(
            load_kernel(&bad, 1 << 30),
            Err(ImageError::Gzip(GzipError::Crc { .. }))
        ));
        // Corrupt length.
        let mut bad = gz.clone();
        bad[n - 1] ^= 1;
        assert!(matches!(
            load_kernel(&bad, 1 << 30),
            Err(ImageError::Gzip(GzipError::Length { .. }))
        ));
        // Corrupt block type (reserved BTYPE 11).
        let mut bad = gz.clone();
        bad[10] = 0x07;
        assert_eq!(
            load_kernel(&bad, 1 << 30),
            Err(ImageError::Gzip(GzipError::Corrupt))
        );
        // Unsupported method.
        let mut bad = gz.clone();
        bad[2] = 7;
        assert!(matches!(
            load_kernel(&bad, 1 << 30),
            Err(ImageError::Gzip(GzipError::Unsupported { method: 7, .. }))
        ));
        // A gzip of a non-Image.
        let e = load_kernel(
            &gzip_stored(
                b"hello world, not a kernel at all.........................................",
            ),
            1 << 30,
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::BadMagic { .. }));
    }

    #[test]
    fn gzip_with_optional_fields() {
        let img = image(0, 0x20_0000, 0xa, 100);
        let plain = gzip_stored(&img);
        // FEXTRA + FNAME + FCOMMENT + FHCRC.
        let mut v = plain[..10].to_vec();
        v[3] = 0x04 | 0x08 | 0x10 | 0x02;
        v.extend_from_slice(&[3, 0, 1, 2, 3]);
        v.extend_from_slice(b"Image\0");
        v.extend_from_slice(b"comment\0");
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&plain[10..]);
        assert_eq!(&*load_kernel(&v, 1 << 20).unwrap().data, &img[..]);
        // Unterminated name.
        let mut w = plain[..10].to_vec();
        w[3] = 0x08;
        w.extend_from_slice(&[b'x'; 20]);
        assert!(gunzip(&w, 1 << 20).is_err());
        // Reserved flag bits.
        let mut r = plain.clone();
        r[3] = 0x20;
        assert!(matches!(
            gunzip(&r, 1 << 20),
            Err(GzipError::Unsupported { .. })
        ));
    }
}
