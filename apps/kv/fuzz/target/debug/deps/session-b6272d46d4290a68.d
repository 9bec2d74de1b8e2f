/work/main/apps/kv/fuzz/target/debug/deps/session-b6272d46d4290a68.d: fuzz_targets/session.rs

/work/main/apps/kv/fuzz/target/debug/deps/libsession-b6272d46d4290a68.rmeta: fuzz_targets/session.rs

fuzz_targets/session.rs:
