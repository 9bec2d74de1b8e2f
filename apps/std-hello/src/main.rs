//! std-hello: an ordinary std program. Prints a greeting, its arguments (the words after `--` in
//! the xl `extra=` line), exercises threads (spawn/join, a Mutex counter, a Condvar handshake, an
//! mpsc channel, sleep) and files (std::fs on its baked files, from `files/`, and on the writable
//! in-memory tree), and prints the time it took, then exits with status 0. Arguments
//! `exit N` make it exit with status N, `panic` makes it panic (for the tests of how a std
//! program ends).
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Threads on the runtime: each line printed is checked by the tests.
fn threads() {
    // Spawn and join, each thread returning a value computed with its own thread-locals.
    thread_local!(static ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let handles: Vec<_> = (1..=4u64)
        .map(|i| {
            thread::spawn(move || {
                ID.with(|id| id.set(i));
                thread::yield_now();
                ID.with(|id| id.get()) * 10
            })
        })
        .collect();
    let got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("threads joined: {got:?}");

    // A Mutex<u64> incremented by 4 threads, 1000 times each, yielding inside the lock.
    let counter = Arc::new(Mutex::new(0u64));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let c = Arc::clone(&counter);
            thread::spawn(move || {
                for i in 0..1000 {
                    let mut g = c.lock().unwrap();
                    *g += 1;
                    if i % 100 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    println!("mutex counter: {}", *counter.lock().unwrap());

    // Condvar handshake: the main thread waits for a flag the other sets, then answers.
    let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
    let p2 = Arc::clone(&pair);
    let h = thread::spawn(move || {
        let (m, cv) = &*p2;
        *m.lock().unwrap() = 1;
        cv.notify_one();
        let g = cv.wait_while(m.lock().unwrap(), |v| *v != 2).unwrap();
        *g
    });
    {
        let (m, cv) = &*pair;
        let mut g = cv.wait_while(m.lock().unwrap(), |v| *v != 1).unwrap();
        *g = 2;
        cv.notify_one();
    }
    println!("condvar handshake: {}", h.join().unwrap());

    // mpsc: 3 producers, one consumer.
    let (tx, rx) = mpsc::channel::<u64>();
    for p in 0..3u64 {
        let tx = tx.clone();
        thread::spawn(move || {
            for i in 0..100 {
                tx.send(p * 1000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let (n, sum) = rx.iter().fold((0, 0), |(n, s), v| (n + 1, s + v));
    println!("mpsc received {n} messages, sum {sum}");

    // Sleep: a sleeping thread lets another run; both wake on time.
    let t0 = Instant::now();
    let sleeper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        t0.elapsed()
    });
    thread::sleep(Duration::from_millis(20));
    let main_slept = t0.elapsed();
    let other_slept = sleeper.join().unwrap();
    let ok = main_slept >= Duration::from_millis(20) && other_slept >= Duration::from_millis(50);
    println!(
        "sleep: main {} ms, thread {} ms, {}",
        main_slept.as_millis(),
        other_slept.as_millis(),
        if ok { "ok" } else { "TOO SHORT" }
    );

    // A timed Condvar wait that nobody notifies times out.
    let (m, cv) = (Mutex::new(()), Condvar::new());
    let (_g, r) = cv
        .wait_timeout(m.lock().unwrap(), Duration::from_millis(10))
        .unwrap();
    println!("condvar wait_timeout timed out: {}", r.timed_out());

    // Preemption: a thread that spins without blocking does not keep the main thread, whose
    // sleep ends meanwhile, from running and stopping it.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let spinner = thread::spawn(move || {
        let mut spins = 0u64;
        while !s2.load(Ordering::Relaxed) {
            spins += 1;
            std::hint::spin_loop();
        }
        spins
    });
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let spins = spinner.join().unwrap();
    println!(
        "preemption: main ran again after {} ms, spinner stopped ({})",
        t0.elapsed().as_millis(),
        if spins > 0 { "it spun" } else { "it never ran" }
    );
}

/// The hermit-abi calls std itself does not make (semaphores, mmap, ...), as a program
/// written against the hermit-abi crate calls them.
#[cfg(target_os = "hermit")]
#[allow(unsafe_code, deprecated)]
fn abi() {
    use hermit_abi as h;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    // SAFETY (the whole block): each call gets valid pointers to our own locals.
    unsafe {
        println!(
            "abi: pagesize {} pid {} cpus {}",
            h::getpagesize(),
            h::getpid(),
            h::get_processor_count()
        );
        let mut p: *mut u8 = std::ptr::null_mut();
        let r = h::mmap(10000, 3, &mut p);
        let zero = r == 0 && std::slice::from_raw_parts(p, 10000).iter().all(|&b| b == 0);
        p.write_bytes(7, 10000);
        println!(
            "abi: mmap {r} zeroed {zero} aligned {} exec {} mprotect-rw {} mprotect-ro {} munmap-part {} munmap {}",
            (p as usize).is_multiple_of(4096),
            h::mmap(4096, 4, &mut std::ptr::null_mut()),
            h::mprotect(p, 4096, 3),
            h::mprotect(p, 4096, 1),
            h::munmap(p, 4096),
            h::munmap(p, 10000)
        );
        let mut sem: h::sem_t = std::ptr::null();
        let init = h::sem_init(&mut sem, 0, 0);
        let try_empty = h::sem_trywait(&mut sem);
        let past = h::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timed = h::sem_timedwait(&mut sem, &past);
        struct S(h::sem_t);
        // SAFETY: the semaphore lives until after the join below.
        unsafe impl Send for S {}
        unsafe impl Sync for S {}
        let shared = Arc::new(S(sem));
        let got = Arc::new(AtomicU32::new(0));
        let (s2, g2) = (shared.clone(), got.clone());
        let t = std::thread::spawn(move || {
            for _ in 0..3 {
                let mut s = s2.0;
                if h::sem_timedwait(&mut s, std::ptr::null()) == 0 {
                    g2.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let mut s = shared.0;
            h::sem_post(&mut s);
        }
        let _ = t.join();
        let mut s = shared.0;
        println!(
            "abi: sem init {init} trywait-empty {try_empty} timedwait-past {timed} posted-and-taken {} destroy {}",
            got.load(Ordering::SeqCst),
            h::sem_destroy(&mut s)
        );
        println!("abi: queue {} errno {}", h::init_queue(1), h::errno());
        let mut a = [0u8; 4];
        let local = h::getaddrbyname(c"localhost".as_ptr(), a.as_mut_ptr(), 4);
        let mut b = [0u8; 16];
        let numeric = h::getaddrbyname(c"fd00::7".as_ptr(), b.as_mut_ptr(), 16);
        let bad = h::getaddrbyname(c"localhost".as_ptr(), a.as_mut_ptr(), 5);
        println!(
            "abi: getaddrbyname localhost {local} {a:?}, fd00::7 {numeric} last byte {}, len 5 {bad}",
            b[15]
        );
    }
}

/// Recurses without end on a thread with a 64 KiB stack: the guard page below it must stop it
/// (the domain crashes) before it writes over anything else.
fn overflow() {
    #[allow(unconditional_recursion)]
    fn down(depth: u64) -> u64 {
        let frame = std::hint::black_box([depth as u8; 1024]);
        if depth.is_multiple_of(16) {
            println!("overflow: depth {depth}");
        }
        frame[0] as u64 + down(depth + 1)
    }
    let t = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(|| {
            let here = 0u8;
            println!(
                "overflow: thread stack near {:#x}",
                &here as *const u8 as usize
            );
            down(0)
        })
        .expect("spawn");
    let _ = t.join();
    println!("overflow: FAIL returned");
}

/// Files on the runtime: the baked ones (read-only) and the writable tree; each line printed is
/// checked by the tests.
fn files() -> std::io::Result<()> {
    // Baked files (apps/std-hello/files): read, stat, list.
    let greeting = fs::read_to_string("/greeting.txt")?;
    println!("baked file: {:?}", greeting.trim_end());
    let numbers = fs::read_to_string("data/numbers.txt")?;
    let sum: u32 = numbers
        .split_whitespace()
        .filter_map(|n| n.parse::<u32>().ok())
        .sum();
    println!("baked numbers sum: {sum}");
    let m = fs::metadata("/greeting.txt")?;
    println!(
        "baked metadata: {} bytes, file {}, read-only {}",
        m.len(),
        m.is_file(),
        m.permissions().readonly()
    );
    // (xenrt lists a directory sorted by name.)
    let root: Vec<String> = fs::read_dir("/")?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    println!("root: {root:?}");
    match fs::OpenOptions::new().append(true).open("/greeting.txt") {
        Ok(_) => println!("write to baked file: SUCCEEDED (wrong)"),
        Err(e) => println!("write to baked file: {e}"),
    }
    match fs::remove_file("/data/numbers.txt") {
        Ok(()) => println!("remove baked file: SUCCEEDED (wrong)"),
        Err(e) => println!("remove baked file: {e}"),
    }

    // The writable tree: a directory, a file written, appended, sought in, read back, listed.
    fs::create_dir_all("/tmp/demo/sub")?;
    fs::write("/tmp/demo/notes.txt", "one\n")?;
    fs::OpenOptions::new()
        .append(true)
        .open("/tmp/demo/notes.txt")?
        .write_all(b"two\n")?;
    println!(
        "read back: {:?}",
        fs::read_to_string("/tmp/demo/notes.txt")?
    );
    let mut f = fs::File::open("/tmp/demo/notes.txt")?;
    f.seek(SeekFrom::Start(4))?;
    let mut tail = String::new();
    f.read_to_string(&mut tail)?;
    println!("after seek: {tail:?}");
    let m = fs::metadata("/tmp/demo/notes.txt")?;
    println!(
        "metadata: {} bytes, file {}, dir {}",
        m.len(),
        m.is_file(),
        fs::metadata("/tmp/demo")?.is_dir()
    );
    let mut names = String::new();
    for e in fs::read_dir("/tmp/demo")? {
        let e = e?;
        let kind = if e.file_type()?.is_dir() {
            "dir"
        } else {
            "file"
        };
        names += &format!(" {} ({kind})", e.file_name().to_string_lossy());
    }
    println!("read_dir:{names}");
    match fs::rename("/tmp/demo/notes.txt", "/tmp/demo/renamed.txt") {
        Ok(()) => println!("rename: ok"),
        Err(e) => println!("rename: {e}"),
    }
    match fs::create_dir("/tmp/demo") {
        Ok(()) => println!("create_dir again: SUCCEEDED (wrong)"),
        Err(e) => println!("create_dir again: {:?}", e.kind()),
    }
    match fs::remove_dir("/tmp/demo") {
        Ok(()) => println!("remove_dir of a full directory: SUCCEEDED (wrong)"),
        Err(e) => println!("remove_dir of a full directory: {e}"),
    }
    // An open file outlives its name.
    fs::remove_file("/tmp/demo/notes.txt")?;
    f.seek(SeekFrom::Start(0))?;
    let mut kept = String::new();
    f.read_to_string(&mut kept)?;
    drop(f);
    println!(
        "unlinked but open: {kept:?}, name gone: {}",
        fs::metadata("/tmp/demo/notes.txt").is_err()
    );
    fs::remove_dir("/tmp/demo/sub")?;
    fs::remove_dir("/tmp/demo")?;
    fs::remove_dir("/tmp")?;
    match fs::metadata("/tmp") {
        Ok(_) => println!("removed: STILL THERE"),
        Err(e) => println!("removed: {:?}", e.kind()),
    }
    Ok(())
}

fn main() {
    let start = Instant::now();
    println!("Hello from std on xenrt");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    println!("env: {env:?}");
    let v: Vec<u64> = (1..=1000).collect();
    println!("sum 1..=1000 = {}", v.iter().sum::<u64>());
    if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
        println!("unix time: {} s", t.as_secs());
    }
    match args.get(1).map(String::as_str) {
        Some("panic") => panic!("asked to panic"),
        Some("overflow") => overflow(),
        #[cfg(target_os = "hermit")]
        Some("abi") => return abi(),
        Some("exit") => {
            let code = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            eprintln!("exiting with status {code}");
            std::process::exit(code);
        }
        _ => {}
    }
    threads();
    if let Err(e) = files() {
        println!("files: FAILED: {e}");
    }
    println!("took {:?}", start.elapsed());
}
