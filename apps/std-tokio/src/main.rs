//! std-tokio: tokio (crates.io, unchanged) on xenrt. An ordinary std program; the same source
//! runs on Linux (`cargo run -p std-tokio -- check`, `cargo run -p std-tokio -- 7007`).
//!
//! - no argument or a port: a TCP echo server (`#[tokio::main]`, a listener on port 7 or the
//!   given one, a task per connection), over [`net`] (tokio's own `net` does not build for
//!   this target: see there);
//! - `check`: runs tokio's runtime pieces and prints one line per check (the tests assert
//!   them), then exits with status 0: tasks on the current-thread runtime (spawn, join,
//!   `join!`, `select!`, sleeps, `interval`, `timeout`, mpsc/oneshot/watch channels, `Mutex`,
//!   `Notify`, `spawn_blocking`) and on a multi-thread runtime with two workers.
mod net;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Mutex, Notify};
use tokio::time::{interval, sleep, timeout};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "check" => {
            let t = Instant::now();
            current_thread();
            multi_thread();
            println!("std-tokio: checks done in {} ms", t.elapsed().as_millis());
        }
        port => {
            let port = if port.is_empty() {
                Ok(7)
            } else {
                port.parse::<u16>()
            };
            let Ok(port) = port else {
                eprintln!("std-tokio: usage: std-tokio [PORT | check]");
                std::process::exit(2);
            };
            if let Err(e) = echo(port) {
                eprintln!("std-tokio: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// The echo server: a task per connection, each echoing what it reads until the peer closes.
#[tokio::main]
async fn echo(port: u16) -> std::io::Result<()> {
    let listener = net::TcpListener::bind(([0, 0, 0, 0], port).into())?;
    println!("std-tokio: listening on {}", listener.local_addr()?);
    let done = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut conn, peer) = listener.accept().await?;
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut total = 0u64;
            let r: std::io::Result<()> = async {
                loop {
                    let n = conn.read(&mut buf).await?;
                    if n == 0 {
                        return conn.shutdown().await;
                    }
                    conn.write_all(&buf[..n]).await?;
                    total += n as u64;
                }
            }
            .await;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            match r {
                Ok(()) => println!("std-tokio: {peer}: echoed {total} bytes ({n} served)"),
                Err(e) => println!("std-tokio: {peer}: {e} after {total} bytes ({n} served)"),
            }
        });
    }
}

/// Tasks, timers and channels on one thread.
fn current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    rt.block_on(async {
        // Sleep: never early, and not absurdly late (10 s: a loaded host may stall the guest).
        let t = Instant::now();
        sleep(Duration::from_millis(50)).await;
        let e = t.elapsed();
        println!(
            "sleep 50 ms: {}",
            if e >= Duration::from_millis(50) && e < Duration::from_secs(10) {
                "ok"
            } else {
                "WRONG"
            }
        );

        // Spawn and join: 10 tasks, each sleeping a different time, results in order.
        let hs: Vec<_> = (1..=10u64)
            .map(|i| {
                tokio::spawn(async move {
                    sleep(Duration::from_millis(5 * (11 - i))).await;
                    i * i
                })
            })
            .collect();
        let mut got = Vec::new();
        for h in hs {
            got.push(h.await.expect("task"));
        }
        println!(
            "spawned tasks joined: sum of squares {}",
            got.iter().sum::<u64>()
        );

        // Tasks finish in the order their sleeps end.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hs: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let order = Arc::clone(&order);
                tokio::spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    order.lock().unwrap().push(ms);
                })
            })
            .collect();
        for h in hs {
            h.await.expect("task");
        }
        println!("wake order: {:?}", order.lock().unwrap());

        // join!: both run concurrently. Each half waits for the other's message, so this
        // completes only if join! polls both (a sequential run would wait forever: the
        // timeout says so); no wall-clock threshold, which a loaded host could miss.
        let (tx_a, rx_a) = tokio::sync::oneshot::channel::<u32>();
        let (tx_b, rx_b) = tokio::sync::oneshot::channel::<u32>();
        let joined = timeout(Duration::from_secs(10), async {
            tokio::join!(
                async {
                    tx_a.send(1).expect("send to b");
                    rx_b.await.expect("from b")
                },
                async {
                    let v = rx_a.await.expect("from a");
                    tx_b.send(2).expect("send to a");
                    v
                }
            )
        })
        .await;
        let concurrent = joined.is_ok();
        let (a, b) = joined.unwrap_or((0, 0));
        println!("join!: {} (concurrent: {concurrent})", a + b);

        // select!: the first to finish wins (the slow one is far off: if both were ready after
        // a stall of the guest, select! would pick either).
        let r = tokio::select! {
            _ = sleep(Duration::from_secs(10)) => "slow",
            _ = sleep(Duration::from_millis(10)) => "fast",
        };
        println!("select!: {r}");

        // timeout: one that expires, one that does not.
        let late = timeout(Duration::from_millis(20), sleep(Duration::from_secs(5))).await;
        let early = timeout(Duration::from_secs(5), async { 7 }).await;
        println!(
            "timeout: expired {}, in time {:?}",
            late.is_err(),
            early.ok()
        );

        // interval: 5 ticks 10 ms apart take at least 40 ms.
        let t = Instant::now();
        let mut iv = interval(Duration::from_millis(10));
        for _ in 0..5 {
            iv.tick().await;
        }
        println!(
            "interval: 5 ticks, {}",
            ok(t.elapsed() >= Duration::from_millis(40))
        );

        // mpsc: 4 producer tasks, one consumer.
        let (tx, mut rx) = mpsc::channel::<u64>(8);
        for p in 0..4u64 {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    tx.send(p * 1000 + i).await.expect("send");
                    if i % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        drop(tx);
        let (mut n, mut sum) = (0, 0);
        while let Some(v) = rx.recv().await {
            n += 1;
            sum += v;
        }
        println!("mpsc: {n} messages, sum {sum}");

        // oneshot from a task that sleeps first.
        let (otx, orx) = oneshot::channel();
        tokio::spawn(async move {
            sleep(Duration::from_millis(5)).await;
            let _ = otx.send("pong");
        });
        println!("oneshot: {}", orx.await.expect("oneshot"));

        // watch: the receiver sees the last value.
        let (wtx, mut wrx) = watch::channel(0u32);
        let w = tokio::spawn(async move {
            while wrx.changed().await.is_ok() {
                if *wrx.borrow() == 3 {
                    return 3;
                }
            }
            0
        });
        for v in 1..=3 {
            sleep(Duration::from_millis(2)).await;
            wtx.send(v).expect("watch");
        }
        println!("watch: saw {}", w.await.expect("task"));

        // Mutex shared by tasks that yield while holding it; Notify wakes a waiter.
        let m = Arc::new(Mutex::new(0u32));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let m = Arc::clone(&m);
                tokio::spawn(async move {
                    for _ in 0..250 {
                        let mut g = m.lock().await;
                        *g += 1;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in hs {
            h.await.expect("task");
        }
        println!("tokio mutex: {}", *m.lock().await);
        let note = Arc::new(Notify::new());
        let n2 = Arc::clone(&note);
        let waiter = tokio::spawn(async move {
            n2.notified().await;
            "notified"
        });
        sleep(Duration::from_millis(5)).await;
        note.notify_one();
        println!("notify: {}", waiter.await.expect("task"));

        // spawn_blocking runs on a thread of the blocking pool.
        let main_thread = std::thread::current().id();
        let other = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(10));
            std::thread::current().id() != main_thread
        })
        .await
        .expect("blocking task");
        println!("spawn_blocking on another thread: {other}");

        // A task aborted while it sleeps ends cancelled.
        let h = tokio::spawn(sleep(Duration::from_secs(60)));
        h.abort();
        println!(
            "abort: cancelled {}",
            h.await.err().is_some_and(|e| e.is_cancelled())
        );
    });
    println!("current_thread runtime: ok");
}

/// Tasks spread over a multi-thread runtime with two workers.
fn multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let done = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let hs: Vec<_> = (0..100u64)
            .map(|i| {
                let threads = Arc::clone(&threads);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    threads.lock().unwrap().insert(std::thread::current().id());
                    sleep(Duration::from_millis(i % 7)).await;
                    // Some work between the sleeps, so the tick can move a worker off the CPU.
                    let mut x = i;
                    for _ in 0..20_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                    threads.lock().unwrap().insert(std::thread::current().id());
                    done.fetch_add(1, Ordering::Relaxed);
                    i
                })
            })
            .collect();
        let mut sum = 0;
        for h in hs {
            sum += h.await.expect("task");
        }
        println!("multi_thread: 100 tasks, sum {sum}");
        let r = timeout(Duration::from_millis(30), sleep(Duration::from_secs(5))).await;
        println!("multi_thread timeout: expired {}", r.is_err());
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    println!(
        "multi_thread runtime: ok ({} done, {} worker threads used)",
        done.load(Ordering::Relaxed),
        threads.lock().unwrap().len()
    );
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "WRONG"
    }
}
