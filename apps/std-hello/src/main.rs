//! std-hello: an ordinary std program. Prints a greeting, its arguments (the words after `--` in
//! the xl `extra=` line) and the time it took, then exits with status 0.
use std::time::Instant;

fn main() {
    let start = Instant::now();
    println!("Hello from std on xenrt");
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");
    let v: Vec<u64> = (1..=1000).collect();
    println!("sum 1..=1000 = {}", v.iter().sum::<u64>());
    println!("took {:?}", start.elapsed());
    std::process::exit(0);
}
