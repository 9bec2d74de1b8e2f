//! std-hello: an ordinary std program. Prints a greeting, its arguments (the words after `--` in
//! the xl `extra=` line), exercises threads (spawn/join, a Mutex counter, a Condvar handshake, an
//! mpsc channel, sleep) and prints the time it took, then exits with status 0. Arguments
//! `exit N` make it exit with status N, `panic` makes it panic (for the tests of how a std
//! program ends).
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

/// Recurses without end on a thread with a 64 KiB stack: the guard page below it must stop it
/// (the domain crashes) before it writes over anything else.
fn overflow() {
    #[allow(unconditional_recursion)]
    fn down(depth: u64) -> u64 {
        let frame = std::hint::black_box([depth as u8; 1024]);
        if depth % 16 == 0 {
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
        Some("exit") => {
            let code = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            eprintln!("exiting with status {code}");
            std::process::exit(code);
        }
        _ => {}
    }
    threads();
    println!("took {:?}", start.elapsed());
}
