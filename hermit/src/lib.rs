//! xenrt as the kernel behind the hermit-abi: what Rust's std for `x86_64-unknown-hermit` calls
//! (`sys_write`, `sys_malloc`, `sys_exit`, ...), implemented over the xenrt runtime, so that an
//! ordinary std program becomes a Xen PV image unchanged.
//!
//! How an image is put together: the app, std (built from source with `-Zbuild-std`), this crate,
//! `xen` and `arch` are all compiled for `x86_64-unknown-hermit` (with a static relocation model,
//! no red zone and frame pointers: see `.cargo/config.toml`) and linked by one `rust-lld` run with
//! `hermit/link.ld` (arch/link.ld plus the TLS template). There is one copy of `core`; std's
//! panic machinery and its `System` allocator (which calls `sys_malloc`) are used, so `xen`'s
//! `#[panic_handler]` and `#[global_allocator]` stay bare-metal-only.
//!
//! Start-up: Xen enters `_start` (arch), which runs xenrt's boot (xen::boot) as for any app; the
//! app `main` registered here ([`start`]) enables the FPU/SSE, sets up thread-local storage,
//! builds `argv` from the command line and calls std's `runtime_entry(argc, argv, envp)`, which
//! runs the program's `main` and ends in `sys_exit`.
//!
//! The surface (all 79 `sys_*` functions of hermit-abi 0.5):
//! - console: `sys_write`/`sys_writev` on fd 1 and 2 go to the Xen console; `sys_read` on fd 0
//!   returns end of file;
//! - exit: `sys_exit(0)` powers the domain off, any other status crashes it (the non-zero exit of
//!   `scripts/run`) after printing `xenrt: exit status N`; `sys_abort` crashes it;
//! - memory: `sys_malloc`/`sys_free`/`sys_realloc` over xenrt's heap ([`xen::mm::HEAP`]);
//! - time: `sys_clock_gettime` (monotonic: Xen system time; realtime: Xen's wall clock);
//! - entropy: `sys_read_entropy` from a generator seeded by the TSC and the wall clock: fine for
//!   HashMap seeds, **not** cryptographic;
//! - threads: `sys_spawn2`/`sys_spawn`, `sys_join`, `sys_yield`, `sys_usleep`/`sys_nanosleep`,
//!   `sys_futex_wait`/`sys_futex_wake` (std's Mutex, Condvar, park, mpsc), one TLS block and
//!   stack per thread (with an unmapped guard page below it), the errno per thread, scheduled on
//!   the one vCPU ([`sched`], `abi_thread`): at blocking calls, and preempted in app code by a
//!   10 ms timer tick (`preempt`); [`park_until`] is the blocking wait for code waiting on
//!   events (the scheduler runs the stack and checks the parked conditions itself);
//! - sockets (`sockets`, `sys_net`): TCP and UDP over IPv4 and IPv6 on our stack (the first
//!   vif, from the command line's `ip=`/`gw=`/`dns=` or DHCP, brought up at the first socket
//!   call), blocking and non-blocking, `poll`, `eventfd` (mio's waker), `fcntl`/
//!   `ioctl(FIONBIO)`, `dup`, `shutdown`, `recv`/`recvfrom` (`MSG_PEEK`), `send`/`sendto`, the
//!   common socket options (multicast ones: `ENOPROTOOPT`), `getaddrinfo` for numeric hosts,
//!   `localhost` and DNS names (through the stack's DNS client: `EAI_NONAME` for a name that
//!   does not exist, `EAI_AGAIN` after 5 s without an answer). A thread waiting in a socket
//!   call or a look-up parks while the stack and the other threads run ([`wait`]). Once a
//!   listener exists and the address is known, the program is announced ready as a no_std
//!   server is (`xenrt: listening on ADDR:PORT N.N ms after entry`, `data/xenrt/ready`);
//! - files (`fs`, `sys_fs`): `sys_open` (`O_RDONLY`/`O_WRONLY`/`O_RDWR`, `O_CREAT`, `O_EXCL`,
//!   `O_TRUNC`, `O_APPEND`, `O_DIRECTORY`), `sys_opendir`, `sys_read`/`sys_readv`,
//!   `sys_write`/`sys_writev`, `sys_lseek`, `sys_fstat`/`sys_stat`/`sys_lstat`,
//!   `sys_getdents64`, `sys_mkdir`, `sys_rmdir`, `sys_unlink`, `sys_close`, `sys_dup`, `sys_poll`
//!   (a file is always ready). The tree is the image's **baked files**, read-only and read in
//!   place from the image: an app declares them with `files = "DIR"` (relative to the app crate)
//!   under `[package.metadata.xenrt]`; scripts/build passes DIR (absolute) as `XENRT_FILES` to
//!   this crate's build.rs, which makes `$OUT_DIR/files.rs`, and `DIR/p` appears in the guest as
//!   `/p` (its parent directories implied; no `files`: no baked files). Everywhere else, a
//!   **writable tree** in memory of at most [`fs::WRITABLE_LIMIT`] (8 MiB). Relative paths
//!   resolve from `/`. Open files share the one descriptor table with the sockets;
//! - arguments and environment: the words after `--` on the xl `extra=` line
//!   ([`xen::cmdline::args`]); leading `NAME=VALUE` words are the environment, as in a shell
//!   ([`split_env`]: `extra="ip=... -- RUST_BACKTRACE=1 --port 80"`), the rest the arguments
//!   after `argv[0]`, which is `xenrt`;
//!
//! - the rest (`abi_rest`): the older allocator names, semaphores, `mmap`/`munmap`/`mprotect`
//!   (no executable or read-only heap memory: `EACCES`), `getpid` (1), `getpagesize`,
//!   `get_processor_count` (1), `network_init`, `getaddrbyname`; the old task queues are
//!   `ENOSYS`, and the three calls that return nothing and cannot be done
//!   (`sys_block_current_task[_with_timeout]`, `sys_wakeup_taskt`) stop the program.
//!
//! Calls refuse what they do not support with an errno, each named once on the console; never
//! a silent success.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(target_os = "hermit")]
mod abi;
#[cfg(target_os = "hermit")]
mod abi_rest;
#[cfg(target_os = "hermit")]
mod abi_thread;
pub mod entropy;
#[cfg(target_os = "hermit")]
mod errno;
pub mod fs;
pub mod layout;
#[cfg(target_os = "hermit")]
mod preempt;
pub mod sched;
pub mod sock;
#[cfg(target_os = "hermit")]
mod sockets;
#[cfg(target_os = "hermit")]
mod sys_fs;
#[cfg(target_os = "hermit")]
mod sys_net;
#[cfg(target_os = "hermit")]
mod tls;
#[cfg(target_os = "hermit")]
pub mod wait;

#[cfg(target_os = "hermit")]
pub use abi_thread::park_until;

use alloc::string::String;
use alloc::vec::Vec;

/// Splits the words after `--` into the environment and the arguments, as a shell reads
/// `NAME=VALUE program args`: the leading words of the form `NAME=VALUE` (NAME: a letter or
/// `_`, then letters, digits or `_`) are environment variables; the first other word starts the
/// arguments. A word `--` among them ends the environment and is dropped, so a first argument
/// may contain `=` (`-- RUST_BACKTRACE=1 -- a=b`).
pub fn split_env(words: &[String]) -> (&[String], &[String]) {
    let n = words.iter().take_while(|w| is_assignment(w)).count();
    let (env, rest) = words.split_at(n);
    match rest.first() {
        Some(w) if w == "--" => (env, &rest[1..]),
        _ => (env, rest),
    }
}

fn is_assignment(w: &str) -> bool {
    let Some((name, _)) = w.split_once('=') else {
        return false;
    };
    let mut c = name.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Strings as C strings (NUL-terminated; a NUL inside is dropped).
pub fn c_strings<'a>(words: impl Iterator<Item = &'a str>) -> Vec<Vec<u8>> {
    words
        .map(|s| {
            let mut v: Vec<u8> = s.bytes().filter(|&b| b != 0).collect();
            v.push(0);
            v
        })
        .collect()
}

/// The program's arguments as C strings: `xenrt`, then the arguments.
pub fn argv_strings(args: &[String]) -> Vec<Vec<u8>> {
    c_strings(core::iter::once("xenrt").chain(args.iter().map(|s| s.as_str())))
}

/// How a std exit status ends the domain: 0 powers off, anything else is a crash.
pub fn exit_code(status: i32) -> xen::boot::ExitCode {
    if status == 0 {
        xen::boot::ExitCode::Poweroff
    } else {
        xen::boot::ExitCode::Crash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_the_name_then_the_arguments() {
        let a = argv_strings(&["a b".into(), "c".into()]);
        assert_eq!(a, [&b"xenrt\0"[..], b"a b\0", b"c\0"]);
    }

    #[test]
    fn leading_assignments_are_the_environment() {
        let w = |v: &[&str]| v.iter().map(|s| String::from(*s)).collect::<Vec<String>>();
        let words = w(&["RUST_BACKTRACE=1", "_X2=a=b", "--port", "k=v"]);
        let (env, args) = split_env(&words);
        assert_eq!(env, &w(&["RUST_BACKTRACE=1", "_X2=a=b"])[..]);
        assert_eq!(args, &w(&["--port", "k=v"])[..]);
        let words = w(&["A=1", "--", "b=2"]);
        assert_eq!(split_env(&words), (&w(&["A=1"])[..], &w(&["b=2"])[..]));
        let words = w(&["1A=x", "=y", "a-b=c"]);
        assert_eq!(split_env(&words).0.len(), 0, "not names: arguments");
        assert_eq!(split_env(&[]).1.len(), 0);
    }

    #[test]
    fn only_status_zero_is_a_clean_exit() {
        assert_eq!(exit_code(0), xen::boot::ExitCode::Poweroff);
        assert_eq!(exit_code(1), xen::boot::ExitCode::Crash);
        assert_eq!(exit_code(-1), xen::boot::ExitCode::Crash);
    }
}
