//! Backup files: stored (uncompressed) ZIP archives, written by hand because the layout is a few
//! fixed records and a zip crate would be the largest dependency of the simulator.
//!
//! Real HiveMQ backup files are its own format; a ZIP stands in so that tests can check what they
//! downloaded with ordinary tools (`unzip -t`).

use chrono::{DateTime, Datelike, Timelike, Utc};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_RECORD: u32 = 0x0605_4b50;
/// ZIP 1.0 is enough for stored entries without ZIP64.
const VERSION_NEEDED: u16 = 10;
/// Made by: Unix (3) with spec 2.0, so that the external attributes carry a Unix mode.
const VERSION_MADE_BY: u16 = (3 << 8) | 20;
/// A regular file, mode 0644, in the high half of the external attributes.
const UNIX_FILE_ATTRS: u32 = 0o100_644 << 16;

/// The bytes the fixed records of one entry take besides its name and data: local header (30)
/// and central directory header (46).
const ENTRY_OVERHEAD: u64 = 30 + 46;
/// The end of central directory record.
const END_OVERHEAD: u64 = 22;

/// The name of the entry holding a generated backup's description.
const INFO_ENTRY: &str = "backup.json";
/// The name of the entry that pads a generated backup to its size.
const DATA_ENTRY: &str = "data.bin";

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
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
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, reflected), the checksum ZIP stores per entry.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// MS-DOS time and date fields; DOS dates start in 1980.
fn dos_time_date(t: DateTime<Utc>) -> (u16, u16) {
    if t.year() < 1980 {
        return (0, (1 << 5) | 1);
    }
    let time = (t.hour() << 11) | (t.minute() << 5) | (t.second() / 2);
    let date = ((t.year() as u32 - 1980).min(127) << 9) | (t.month() << 5) | t.day();
    (time as u16, date as u16)
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A ZIP archive of stored entries. Sizes and offsets must fit 32 bits (no ZIP64), which the
/// callers guarantee by capping archive sizes.
pub(crate) fn write(entries: &[(&str, &[u8])], modified: DateTime<Utc>) -> Vec<u8> {
    let (time, date) = dos_time_date(modified);
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32(data);
        let offset = out.len() as u32;
        let (name_len, size) = (name.len() as u16, data.len() as u32);

        put32(&mut out, LOCAL_HEADER);
        for v in [VERSION_NEEDED, 0, 0, time, date] {
            put16(&mut out, v);
        }
        for v in [crc, size, size] {
            put32(&mut out, v);
        }
        put16(&mut out, name_len);
        put16(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);

        put32(&mut central, CENTRAL_HEADER);
        for v in [VERSION_MADE_BY, VERSION_NEEDED, 0, 0, time, date] {
            put16(&mut central, v);
        }
        for v in [crc, size, size] {
            put32(&mut central, v);
        }
        for v in [name_len, 0, 0, 0, 0] {
            put16(&mut central, v);
        }
        put32(&mut central, UNIX_FILE_ATTRS);
        put32(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend_from_slice(&central);
    put32(&mut out, END_RECORD);
    for v in [0, 0, entries.len() as u16, entries.len() as u16] {
        put16(&mut out, v);
    }
    put32(&mut out, central.len() as u32);
    put32(&mut out, central_offset);
    put16(&mut out, 0);
    out
}

/// Deterministic filler that differs per backup, so that a client mixing up two backups or two
/// offsets reads different bytes. xorshift64: fast, and quality does not matter here.
fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut x = seed
        .bytes()
        .fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        })
        .max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The largest archive the simulator generates: the 32-bit ZIP limit.
pub const MAX_GENERATED_SIZE: u64 = u32::MAX as u64;

/// The file of a generated backup: a ZIP with `backup.json` (id and creation time) and
/// `data.bin` filling it up to exactly `size` bytes. Sizes below the smallest such archive give
/// the smallest one; sizes above [`MAX_GENERATED_SIZE`] are capped.
pub(crate) fn backup_file(id: &str, created_at: DateTime<Utc>, size: u64) -> Vec<u8> {
    let info = serde_json::json!({
        "id": id,
        "createdAt": created_at,
        "generator": "hivemqsim",
    })
    .to_string();
    let fixed = 2 * ENTRY_OVERHEAD
        + 2 * (INFO_ENTRY.len() + DATA_ENTRY.len()) as u64
        + info.len() as u64
        + END_OVERHEAD;
    let fill = size.min(MAX_GENERATED_SIZE).saturating_sub(fixed);
    let data = filler(id, fill as usize);
    write(
        &[(INFO_ENTRY, info.as_bytes()), (DATA_ENTRY, &data)],
        created_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn generated_backups_have_the_requested_size() {
        let t = at("2026-11-22T10:15:00Z");
        for size in [300, 1000, 65_536, 1 << 20] {
            assert_eq!(backup_file("20261122-101500", t, size).len() as u64, size);
        }
        let smallest = backup_file("x", t, 0);
        assert!(smallest.len() > 100 && smallest.len() < 300);
    }

    #[test]
    fn end_record_points_at_the_central_directory() {
        let zip = write(&[("a", b"hello"), ("b", b"")], at("2026-11-22T10:15:00Z"));
        let end = &zip[zip.len() - 22..];
        assert_eq!(
            u32::from_le_bytes(end[0..4].try_into().unwrap()),
            END_RECORD
        );
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 2);
        let cd_size = u32::from_le_bytes(end[12..16].try_into().unwrap()) as usize;
        let cd_offset = u32::from_le_bytes(end[16..20].try_into().unwrap()) as usize;
        assert_eq!(cd_offset + cd_size, zip.len() - 22);
        let cd = &zip[cd_offset..];
        assert_eq!(
            u32::from_le_bytes(cd[0..4].try_into().unwrap()),
            CENTRAL_HEADER
        );
        assert_eq!(
            u32::from_le_bytes(cd[16..20].try_into().unwrap()),
            crc32(b"hello")
        );
    }

    #[test]
    fn dos_dates_clamp_before_1980() {
        assert_eq!(dos_time_date(at("1970-01-01T00:00:00Z")), (0, 0x21));
        let (time, date) = dos_time_date(at("2026-11-22T10:15:31Z"));
        assert_eq!(time, (10 << 11) | (15 << 5) | 15);
        assert_eq!(date, (46 << 9) | (11 << 5) | 22);
    }

    #[test]
    fn filler_differs_per_backup() {
        assert_ne!(filler("a", 64), filler("b", 64));
        assert_eq!(filler("a", 13), filler("a", 13));
    }
}
