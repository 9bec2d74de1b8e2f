//! Event-channel operations (`EVTCHNOP_*`, public/event_channel.h) and `SCHEDOP_poll`: the
//! argument structures and typed calls. Dispatch and handlers are `xen::events`'.

use super::gnttab::{DomId, DOMID_SELF};
use super::{check, hypercall, nr, schedop, Errno};

/// An event-channel port (`evtchn_port_t`).
pub type Port = u32;

/// `EVTCHNOP_*` sub-commands.
#[allow(missing_docs)]
pub mod op {
    pub const BIND_INTERDOMAIN: usize = 0;
    pub const BIND_VIRQ: usize = 1;
    pub const CLOSE: usize = 3;
    pub const SEND: usize = 4;
    pub const ALLOC_UNBOUND: usize = 6;
}

/// `struct evtchn_bind_virq`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BindVirq {
    /// IN: the VIRQ.
    pub virq: u32,
    /// IN: the vCPU it is delivered to.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: Port,
}

/// `struct evtchn_alloc_unbound`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct AllocUnbound {
    /// IN: the domain allocating (normally [`DOMID_SELF`]).
    pub dom: DomId,
    /// IN: the domain that may bind it.
    pub remote_dom: DomId,
    /// OUT: the new port.
    pub port: Port,
}

/// `struct evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct BindInterdomain {
    /// IN: the domain that allocated the port.
    pub remote_dom: DomId,
    /// IN: its port.
    pub remote_port: Port,
    /// OUT: our new port.
    pub local_port: Port,
}

/// `struct sched_poll`.
#[repr(C)]
#[derive(Debug)]
pub struct SchedPoll {
    /// IN: guest address of `nr_ports` ports.
    pub ports: *const Port,
    /// IN: how many.
    pub nr_ports: u32,
    /// IN: absolute system time to give up at (0: none).
    pub timeout: u64,
}

/// One `EVTCHNOP_*` whose argument is `arg`.
///
/// # Safety
/// `T` must be the structure `cmd` takes, with no pointer inside.
unsafe fn evtchn_op<T>(cmd: usize, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: forwarded; Xen reads and writes `arg` for the call only.
    check(unsafe { hypercall(nr::EVENT_CHANNEL_OP, cmd, arg as *mut T as usize, 0, 0, 0) })
        .map(|_| ())
}

/// `EVTCHNOP_bind_virq`: VIRQ `virq` of `vcpu` on a new port.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<Port, Errno> {
    let mut a = BindVirq {
        virq,
        vcpu,
        port: 0,
    };
    // SAFETY: `a` is an evtchn_bind_virq.
    unsafe { evtchn_op(op::BIND_VIRQ, &mut a) }?;
    Ok(a.port)
}

/// `EVTCHNOP_alloc_unbound`: a port of ours that domain `remote` may bind.
pub fn alloc_unbound(remote: DomId) -> Result<Port, Errno> {
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: `a` is an evtchn_alloc_unbound.
    unsafe { evtchn_op(op::ALLOC_UNBOUND, &mut a) }?;
    Ok(a.port)
}

/// `EVTCHNOP_bind_interdomain`: binds port `remote_port` of domain `remote` to a new port.
pub fn bind_interdomain(remote: DomId, remote_port: Port) -> Result<Port, Errno> {
    let mut a = BindInterdomain {
        remote_dom: remote,
        remote_port,
        local_port: 0,
    };
    // SAFETY: `a` is an evtchn_bind_interdomain.
    unsafe { evtchn_op(op::BIND_INTERDOMAIN, &mut a) }?;
    Ok(a.local_port)
}

/// `EVTCHNOP_send`: signals the other end of `port`.
pub fn send(port: Port) -> Result<(), Errno> {
    let mut p = port;
    // SAFETY: evtchn_send is one port.
    unsafe { evtchn_op(op::SEND, &mut p) }
}

/// `EVTCHNOP_close`.
pub fn close(port: Port) -> Result<(), Errno> {
    let mut p = port;
    // SAFETY: evtchn_close is one port.
    unsafe { evtchn_op(op::CLOSE, &mut p) }
}

/// `SCHEDOP_poll`: blocks until one of `ports` is pending or system time `timeout_ns` passed
/// (0: no timeout).
pub fn poll(ports: &[Port], timeout_ns: u64) -> Result<(), Errno> {
    let mut a = SchedPoll {
        ports: ports.as_ptr(),
        nr_ports: u32::try_from(ports.len()).map_err(|_| Errno::EINVAL)?,
        timeout: timeout_ns,
    };
    // SAFETY: `a` is a sched_poll whose `ports` points at nr_ports live ports.
    check(unsafe {
        hypercall(
            nr::SCHED_OP,
            schedop::POLL,
            &mut a as *mut SchedPoll as usize,
            0,
            0,
            0,
        )
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    macro_rules! same_layout {
        ($ours:ty, $theirs:ty, $($f:ident),+) => {
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>());
            $(assert_eq!(offset_of!($ours, $f), offset_of!($theirs, $f));)+
        };
    }

    #[test]
    fn structures_agree_with_xen_sys() {
        same_layout!(BindVirq, xen_sys::evtchn_bind_virq, virq, vcpu, port);
        same_layout!(
            AllocUnbound,
            xen_sys::evtchn_alloc_unbound,
            dom,
            remote_dom,
            port
        );
        same_layout!(
            BindInterdomain,
            xen_sys::evtchn_bind_interdomain,
            remote_dom,
            remote_port,
            local_port
        );
        same_layout!(SchedPoll, xen_sys::sched_poll, ports, nr_ports, timeout);
    }

    #[test]
    fn numbers_agree_with_xen_sys() {
        assert_eq!(
            op::BIND_INTERDOMAIN,
            xen_sys::EVTCHNOP_bind_interdomain as usize
        );
        assert_eq!(op::BIND_VIRQ, xen_sys::EVTCHNOP_bind_virq as usize);
        assert_eq!(op::CLOSE, xen_sys::EVTCHNOP_close as usize);
        assert_eq!(op::SEND, xen_sys::EVTCHNOP_send as usize);
        assert_eq!(op::ALLOC_UNBOUND, xen_sys::EVTCHNOP_alloc_unbound as usize);
        assert_eq!(schedop::YIELD, xen_sys::SCHEDOP_yield as usize);
        assert_eq!(schedop::BLOCK, xen_sys::SCHEDOP_block as usize);
        assert_eq!(schedop::SHUTDOWN, xen_sys::SCHEDOP_shutdown as usize);
        assert_eq!(schedop::POLL, xen_sys::SCHEDOP_poll as usize);
    }
}
