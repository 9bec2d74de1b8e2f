/work/main/apps/kv/fuzz/target/debug/deps/kv-33de316a030dc410.d: /work/main/apps/kv/src/lib.rs /work/main/apps/kv/src/cmd.rs /work/main/apps/kv/src/glob.rs /work/main/apps/kv/src/resp.rs /work/main/apps/kv/src/session.rs /work/main/apps/kv/src/store.rs

/work/main/apps/kv/fuzz/target/debug/deps/libkv-33de316a030dc410.rmeta: /work/main/apps/kv/src/lib.rs /work/main/apps/kv/src/cmd.rs /work/main/apps/kv/src/glob.rs /work/main/apps/kv/src/resp.rs /work/main/apps/kv/src/session.rs /work/main/apps/kv/src/store.rs

/work/main/apps/kv/src/lib.rs:
/work/main/apps/kv/src/cmd.rs:
/work/main/apps/kv/src/glob.rs:
/work/main/apps/kv/src/resp.rs:
/work/main/apps/kv/src/session.rs:
/work/main/apps/kv/src/store.rs:
