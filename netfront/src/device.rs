//! [`Netfront`] as a smoltcp [`Device`]: Ethernet, 1514-byte frames, and with transmit GSO TCP/IPv4
//! segments of up to `Netfront::tso_max` bytes (the token then fills TCP checksums, smoltcp
//! does not). smoltcp computes every other checksum we send; on receive it verifies TCP/UDP
//! checksums only when checksum offload is off (with it on, the driver trusted or verified each
//! packet already: see `driver`). Received frames may be larger than the MTU (receive GSO).
//!
//! Received bytes cannot be lent straight out of a granted page (the backend could write them
//! while smoltcp reads), so an [`NfRxToken`] lends the driver's frame buffer, into which the
//! packet was copied once. An [`NfTxToken`] lets smoltcp build the frame in the driver's scratch
//! buffer, then copies it into the TX buffer pages. Errors on either path are counted in
//! [`Stats`](crate::Stats) and logged; the frame is dropped.

use smoltcp::phy::{
    Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, PacketMeta, RxToken,
    TxToken,
};
use smoltcp::time::Instant;

use xen::hal::Hal;

use crate::driver::{fill_tcp_checksum, Netfront, RxFrame, Stats, TxQueue, MTU};
use crate::error::Error;

/// A received frame lent to smoltcp.
pub struct NfRxToken<'a> {
    frame: &'a mut RxFrame,
}

impl RxToken for NfRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        self.frame.ready = false;
        f(&self.frame.buf[..self.frame.len])
    }
}

/// Room to send one frame.
pub struct NfTxToken<'a, H: Hal> {
    tx: &'a mut TxQueue,
    hal: &'a mut H,
    port: u32,
    stats: &'a mut Stats,
    /// The MSS smoltcp asked the device to cut this frame to (transmit GSO).
    gso: Option<u16>,
}

impl<H: Hal> TxToken for NfTxToken<'_, H> {
    fn set_meta(&mut self, meta: PacketMeta) {
        self.gso = meta.segmentation_offload_size.map(|n| n.get());
    }

    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = core::mem::take(&mut self.tx.scratch);
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        let gso = self.gso.filter(|_| len > MTU);
        // With transmit GSO on, smoltcp computes no TCP checksum (it must not, for a GSO
        // segment): the complete one here, or the pseudo-header sum netback finishes.
        if self.tx.tso_max > 0 {
            fill_tcp_checksum(&mut buf, gso.is_some());
        }
        if let Err(e) = self.tx.send(self.hal, self.port, self.stats, &buf, gso) {
            Netfront::<H>::note(self.stats, &e);
        }
        self.tx.scratch = buf;
        r
    }
}

impl<H: Hal> Netfront<H> {
    /// Reclaims TX completions, ignoring (after counting) the backend's errors, then sends
    /// what is left to resend after a move. Whether all of that was sent.
    fn reclaim_quietly(&mut self) -> bool {
        let _ = self.reclaim_tx();
        self.flush_resend()
    }

    /// Polls RX until a frame is ready or nothing is left (bad responses are skipped, a bad ring
    /// index stops the poll).
    fn rx_ready(&mut self) -> bool {
        // Each error consumed at least one response; bound the loop anyway.
        for _ in 0..4096 {
            match self.poll_rx() {
                Ok(ready) => return ready,
                Err(Error::RxRing(_) | Error::Internal | Error::Moved) => return false,
                Err(_) => continue,
            }
        }
        false
    }

    fn tx_token(&mut self) -> NfTxToken<'_, H> {
        NfTxToken {
            tx: &mut self.tx,
            hal: &mut self.hal,
            port: self.port,
            stats: &mut self.stats,
            gso: None,
        }
    }
}

impl<H: Hal> Device for Netfront<H> {
    type RxToken<'a>
        = NfRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = NfTxToken<'a, H>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // After a move, nothing until reconnected: the rings and the port are void.
        if self.needs_reconnect() {
            return None;
        }
        self.reclaim_quietly();
        if !self.rx_ready() {
            return None;
        }
        let rx = NfRxToken {
            frame: &mut self.frame,
        };
        let tx = NfTxToken {
            tx: &mut self.tx,
            hal: &mut self.hal,
            port: self.port,
            stats: &mut self.stats,
            gso: None,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if self.needs_reconnect() {
            return None;
        }
        // Frames kept from before a move go first, in order; room for the largest frame
        // smoltcp may build with this token.
        if !self.reclaim_quietly() || !self.can_send(self.tso_max().max(MTU)) {
            self.stats.tx_full += 1;
            return None;
        }
        Some(self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // smoltcp computes every checksum we send, and verifies IPv4 header and ICMP checksums.
        caps.checksum = ChecksumCapabilities::default();
        if self.csum_offload() {
            // Every TCP/UDP packet handed up was flagged trusted by the backend or verified by
            // the driver (`RxQueue::finish`): do not verify again (a blank one would fail).
            caps.checksum.tcp = Checksum::Tx;
            caps.checksum.udp = Checksum::Tx;
        }
        if self.tso_max() > 0 {
            // Transmit GSO: smoltcp hands us TCP/IPv4 segments of up to this size (Ethernet
            // header included) with their MSS; it must then leave TCP checksums to the device
            // (the token fills them, see `NfTxToken::consume`).
            caps.segmentation.tcpv4 = core::num::NonZeroUsize::new(self.tso_max());
            caps.checksum.tcp = if self.csum_offload() {
                Checksum::None
            } else {
                Checksum::Rx
            };
        }
        caps
    }
}
