//! The netif ring ABI (xen/io/netif.h) as plain values read from and written to byte slots.
//!
//! Each ring entry is copied out of shared memory once, as a little-endian byte array, and decoded
//! from that copy ([`TxResponse::parse`], [`RxResponse::parse`], [`ExtraInfo::parse`]): the
//! backend writing the slot meanwhile can change what we copied, never what we decoded. Requests
//! are encoded into a byte array and written in one copy ([`TxRequest::emit`],
//! [`RxRequest::emit`]). Nothing here validates semantics (ids, offsets, sizes): that is the
//! driver's job, against its own state.
//!
//! Layouts (offsets checked against gcc's view of netif.h in the tests below):
//!
//! | struct | bytes | fields (offset) |
//! | --- | --- | --- |
//! | `netif_tx_request` | 12 | gref u32 (0), offset u16 (4), flags u16 (6), id u16 (8), size u16 (10) |
//! | `netif_tx_response` | 4 (slot 12) | id u16 (0), status i16 (2) |
//! | `netif_extra_info` | 8 | type u8 (0), flags u8 (1), gso: size u16 (2), type u8 (4), features u16 (6) |
//! | `netif_rx_request` | 8 | id u16 (0), pad u16 (2), gref u32 (4) |
//! | `netif_rx_response` | 8 | id u16 (0), offset u16 (2), flags u16 (4), status i16 (6) |

use xen::shmem::{OutOfBounds, ShMem};

/// Size of a page a slot may reference (and never cross).
pub const PAGE_SIZE: usize = 4096;

/// Bytes of one TX ring slot (`union netif_tx_sring_entry`).
pub const TX_ENTRY_SIZE: usize = 12;
/// Bytes of one RX ring slot (`union netif_rx_sring_entry`).
pub const RX_ENTRY_SIZE: usize = 8;

/// Largest packet a TX request can describe (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_TX_SIZE: usize = 0xFFFF;
/// Slots per packet every backend must accept (`XEN_NETIF_NR_SLOTS_MIN`).
pub const NR_SLOTS_MIN: usize = 18;

/// `NETTXF_csum_blank`: the protocol checksum field is blank (checksum offload).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: the packet data has been validated against its checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: the request is followed by extra-info slot(s).
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`: the packet data has been validated against its checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`: the protocol checksum field is blank (partial checksum).
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: the response is followed by extra-info slot(s).
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `NETRXF_gso_prefix` (deprecated): a GSO prefix slot precedes the packet.
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// `NETIF_RSP_DROPPED`: the backend dropped the packet.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`: the backend failed the request.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`: success.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: no response (the slot of an extra-info request).
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_EXTRA_TYPE_NONE` (never valid).
pub const EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const GSO_TYPE_TCPV6: u8 = 2;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Copies the `N` bytes of the slot at `offset` out of shared memory.
pub fn read_slot<const N: usize>(mem: &ShMem, offset: usize) -> Result<[u8; N], OutOfBounds> {
    let mut b = [0u8; N];
    mem.read(offset, &mut b)?;
    Ok(b)
}

/// `netif_tx_request`: one slot of a packet we transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxRequest {
    /// Grant of the page holding this slot's bytes.
    pub gref: u32,
    /// Offset of the bytes in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Request id, echoed in the response.
    pub id: u16,
    /// Total packet size in the first slot of a packet; this slot's size in the others.
    pub size: u16,
}

impl TxRequest {
    /// Encodes the request.
    pub fn emit(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.gref.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Decodes a request (the backend's view, used by the simulated netback).
    pub fn parse(b: &[u8; 12]) -> Self {
        TxRequest {
            gref: u32_at(b, 0),
            offset: u16_at(b, 4),
            flags: u16_at(b, 6),
            id: u16_at(b, 8),
            size: u16_at(b, 10),
        }
    }

    /// Writes the request into the slot at `offset`.
    pub fn write(&self, mem: &ShMem, offset: usize) -> Result<(), OutOfBounds> {
        mem.write(offset, &self.emit())
    }

    /// Reads the request in the slot at `offset`.
    pub fn read(mem: &ShMem, offset: usize) -> Result<Self, OutOfBounds> {
        Ok(Self::parse(&read_slot(mem, offset)?))
    }
}

/// `netif_tx_response`: the backend is done with one TX slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxResponse {
    /// The id of the request answered.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl TxResponse {
    /// Encodes the response (the backend's side).
    pub fn emit(&self) -> [u8; 4] {
        let mut b = [0u8; 4];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// Decodes a response.
    pub fn parse(b: &[u8; 4]) -> Self {
        TxResponse {
            id: u16_at(b, 0),
            status: u16_at(b, 2) as i16,
        }
    }

    /// Writes the response into the slot at `offset`.
    pub fn write(&self, mem: &ShMem, offset: usize) -> Result<(), OutOfBounds> {
        mem.write(offset, &self.emit())
    }

    /// Reads the response in the slot at `offset` (one copy).
    pub fn read(mem: &ShMem, offset: usize) -> Result<Self, OutOfBounds> {
        Ok(Self::parse(&read_slot(mem, offset)?))
    }
}

/// `netif_rx_request`: a page we offer the backend to copy a received packet into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxRequest {
    /// Request id, echoed in the response.
    pub id: u16,
    /// Grant of the page (writable by the backend).
    pub gref: u32,
}

impl RxRequest {
    /// Encodes the request (pad zero).
    pub fn emit(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.gref.to_le_bytes());
        b
    }

    /// Decodes a request (the backend's view).
    pub fn parse(b: &[u8; 8]) -> Self {
        RxRequest {
            id: u16_at(b, 0),
            gref: u32_at(b, 4),
        }
    }

    /// Writes the request into the slot at `offset`.
    pub fn write(&self, mem: &ShMem, offset: usize) -> Result<(), OutOfBounds> {
        mem.write(offset, &self.emit())
    }

    /// Reads the request in the slot at `offset`.
    pub fn read(mem: &ShMem, offset: usize) -> Result<Self, OutOfBounds> {
        Ok(Self::parse(&read_slot(mem, offset)?))
    }
}

/// `netif_rx_response`: one slot of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxResponse {
    /// The id of the request answered.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes in this slot when >= 0, else `NETIF_RSP_*`.
    pub status: i16,
}

impl RxResponse {
    /// Encodes the response (the backend's side).
    pub fn emit(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..6].copy_from_slice(&self.flags.to_le_bytes());
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// Decodes a response.
    pub fn parse(b: &[u8; 8]) -> Self {
        RxResponse {
            id: u16_at(b, 0),
            offset: u16_at(b, 2),
            flags: u16_at(b, 4),
            status: u16_at(b, 6) as i16,
        }
    }

    /// Writes the response into the slot at `offset`.
    pub fn write(&self, mem: &ShMem, offset: usize) -> Result<(), OutOfBounds> {
        mem.write(offset, &self.emit())
    }
}

/// `netif_extra_info`, as it overlays an RX response or a TX request slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub kind: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The six type-specific bytes (for GSO: size u16, type u8, pad, features u16).
    pub data: [u8; 6],
}

impl ExtraInfo {
    /// Decodes the first 8 bytes of a slot.
    pub fn parse(b: &[u8; 8]) -> Self {
        let mut data = [0u8; 6];
        data.copy_from_slice(&b[2..8]);
        ExtraInfo {
            kind: b[0],
            flags: b[1],
            data,
        }
    }

    /// Encodes the extra info (8 bytes; a TX slot pads it to 12).
    pub fn emit(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.kind;
        b[1] = self.flags;
        b[2..8].copy_from_slice(&self.data);
        b
    }

    /// A GSO extra: `(size, type, features)` of `u.gso`.
    pub fn gso(&self) -> Option<(u16, u8, u16)> {
        (self.kind == EXTRA_TYPE_GSO)
            .then(|| (u16_at(&self.data, 0), self.data[2], u16_at(&self.data, 4)))
    }

    /// Whether another extra-info slot follows.
    pub fn more(&self) -> bool {
        self.flags & EXTRA_FLAG_MORE != 0
    }
}

/// Parses a MAC address as xenstore holds it: six two-digit hex octets separated by `:`
/// (`00:16:3e:12:34:56`; a trailing NUL or newline tolerated). Multicast and all-zero addresses
/// are refused: they cannot name one interface.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let text = text.trim_end_matches(['\0', '\n']);
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for octet in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *octet = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 || mac == [0; 6] {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets and sizes as gcc lays out netif.h (see `gcc_agrees` for the program).
    #[test]
    fn layouts_match_netif_h() {
        let r = TxRequest {
            gref: 0x0403_0201,
            offset: 0x0605,
            flags: 0x0807,
            id: 0x0a09,
            size: 0x0c0b,
        };
        assert_eq!(r.emit(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(TxRequest::parse(&r.emit()), r);
        let r = TxResponse {
            id: 0x0201,
            status: -2,
        };
        assert_eq!(r.emit(), [1, 2, 0xfe, 0xff]);
        assert_eq!(TxResponse::parse(&r.emit()), r);
        let r = RxRequest {
            id: 0x0201,
            gref: 0x0807_0605,
        };
        assert_eq!(r.emit(), [1, 2, 0, 0, 5, 6, 7, 8]);
        assert_eq!(RxRequest::parse(&r.emit()), r);
        let r = RxResponse {
            id: 0x0201,
            offset: 0x0403,
            flags: 0x0605,
            status: 0x0807,
        };
        assert_eq!(r.emit(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(RxResponse::parse(&r.emit()), r);
        let e = ExtraInfo::parse(&[1, 1, 0xb4, 0x05, 1, 0, 0, 0]);
        assert_eq!(e.gso(), Some((1460, GSO_TYPE_TCPV4, 0)));
        assert!(e.more());
        assert_eq!(ExtraInfo::parse(&e.emit()), e);
        assert_eq!(xen::ring::ring_size(PAGE_SIZE, TX_ENTRY_SIZE), 256);
        assert_eq!(xen::ring::ring_size(PAGE_SIZE, RX_ENTRY_SIZE), 256);
    }

    /// Compiles a C program against the installed netif.h and compares its offsets with ours
    /// (skipped where gcc or the Xen headers are missing).
    #[test]
    fn gcc_agrees() {
        use std::process::Command;
        const PROG: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <xen/xen.h>
#include <xen/io/netif.h>
#define P(t, f) printf("%zu:%zu ", offsetof(struct t, f), sizeof(((struct t *)0)->f))
int main(void) {
    printf("%zu %zu ", sizeof(union netif_tx_sring_entry), sizeof(union netif_rx_sring_entry));
    P(netif_tx_request, gref); P(netif_tx_request, offset); P(netif_tx_request, flags);
    P(netif_tx_request, id); P(netif_tx_request, size);
    P(netif_tx_response, id); P(netif_tx_response, status);
    P(netif_rx_request, id); P(netif_rx_request, gref);
    P(netif_rx_response, id); P(netif_rx_response, offset); P(netif_rx_response, flags);
    P(netif_rx_response, status);
    P(netif_extra_info, type); P(netif_extra_info, flags); P(netif_extra_info, u.gso.size);
    P(netif_extra_info, u.gso.type); P(netif_extra_info, u.gso.features);
    printf("%u %u %u %u %d %d %d %d\n", NETTXF_csum_blank | NETTXF_data_validated << 4
        | NETTXF_more_data << 8 | NETTXF_extra_info << 12, NETRXF_data_validated
        | NETRXF_csum_blank << 4 | NETRXF_more_data << 8 | NETRXF_extra_info << 12,
        XEN_NETIF_NR_SLOTS_MIN, XEN_NETIF_MAX_TX_SIZE, NETIF_RSP_DROPPED, NETIF_RSP_ERROR,
        NETIF_RSP_OKAY, NETIF_RSP_NULL);
    return 0;
}
"#;
        if !std::path::Path::new("/usr/include/xen/io/netif.h").exists() {
            eprintln!("skipped: no /usr/include/xen/io/netif.h");
            return;
        }
        let dir = std::env::temp_dir().join(format!("netif-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("l.c");
        let bin = dir.join("l");
        std::fs::write(&src, PROG).unwrap();
        match Command::new("gcc").arg("-o").arg(&bin).arg(&src).status() {
            Ok(s) if s.success() => {}
            _ => {
                eprintln!("skipped: gcc unavailable or failed");
                return;
            }
        }
        let out = Command::new(&bin).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let flags_tx = NETTXF_CSUM_BLANK
            | NETTXF_DATA_VALIDATED << 4
            | NETTXF_MORE_DATA << 8
            | NETTXF_EXTRA_INFO << 12;
        let flags_rx = NETRXF_DATA_VALIDATED
            | NETRXF_CSUM_BLANK << 4
            | NETRXF_MORE_DATA << 8
            | NETRXF_EXTRA_INFO << 12;
        let want = format!(
            "{TX_ENTRY_SIZE} {RX_ENTRY_SIZE} 0:4 4:2 6:2 8:2 10:2 0:2 2:2 0:2 4:4 0:2 2:2 4:2 6:2 \
             0:1 1:1 2:2 4:1 6:2 {flags_tx} {flags_rx} {NR_SLOTS_MIN} {MAX_TX_SIZE} \
             {NETIF_RSP_DROPPED} {NETIF_RSP_ERROR} {NETIF_RSP_OKAY} {NETIF_RSP_NULL}\n"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }

    #[test]
    fn slots_round_trip_through_shared_memory() {
        let m = ShMem::new(64);
        let r = TxRequest {
            gref: 9,
            offset: 100,
            flags: NETTXF_MORE_DATA,
            id: 3,
            size: 1514,
        };
        r.write(&m, 12).unwrap();
        assert_eq!(TxRequest::read(&m, 12).unwrap(), r);
        TxResponse { id: 3, status: -1 }.write(&m, 24).unwrap();
        assert_eq!(
            TxResponse::read(&m, 24).unwrap(),
            TxResponse { id: 3, status: -1 }
        );
        assert!(TxRequest::read(&m, 60).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("00:16:3e:0a:Bc:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff])
        );
        assert_eq!(
            parse_mac("00:16:3e:00:00:01\0"),
            Some([0, 0x16, 0x3e, 0, 0, 1])
        );
        for bad in [
            "",
            "00:16:3e:00:00",
            "00:16:3e:00:00:01:02",
            "00-16-3e-00-00-01",
            "0:16:3e:00:00:01",
            "00:16:3e:00:00:0g",
            "01:16:3e:00:00:01",
            "00:00:00:00:00:00",
            "+0:16:3e:00:00:01",
            "00:16:3e:00:00:01 ",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
