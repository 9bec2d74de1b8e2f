//! std-hello: an ordinary std program. Prints a greeting, its arguments (the words after `--` in
//! the xl `extra=` line) and the time it took, then exits with status 0. Arguments `exit N` make
//! it exit with status N, `panic` makes it panic (for the tests of how a std program ends).
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let start = Instant::now();
    println!("Hello from std on xenrt");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");
    let v: Vec<u64> = (1..=1000).collect();
    println!("sum 1..=1000 = {}", v.iter().sum::<u64>());
    if let Ok(t) = SystemTime::now().duration_since(UNIX_EPOCH) {
        println!("unix time: {} s", t.as_secs());
    }
    match args.get(1).map(String::as_str) {
        Some("panic") => panic!("asked to panic"),
        Some("exit") => {
            let code = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            eprintln!("exiting with status {code}");
            std::process::exit(code);
        }
        _ => {}
    }
    println!("took {:?}", start.elapsed());
}
