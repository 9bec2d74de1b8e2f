//! [`SockRef`]: a [`Socket`] view of a descriptor someone else owns.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::fd::AsFd;

use crate::{sys, Socket};

/// A [`Socket`] borrowed from anything that has a file descriptor (a std or mio or tokio
/// socket), to set options on it; it never closes the descriptor.
pub struct SockRef<'s> {
    socket: ManuallyDrop<Socket>,
    _borrow: PhantomData<&'s Socket>,
}

impl Deref for SockRef<'_> {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        &self.socket
    }
}

impl<'s, S: AsFd> From<&'s S> for SockRef<'s> {
    fn from(s: &'s S) -> SockRef<'s> {
        SockRef {
            socket: ManuallyDrop::new(sys::borrowed(s.as_fd())),
            _borrow: PhantomData,
        }
    }
}

impl fmt::Debug for SockRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.socket, f)
    }
}
