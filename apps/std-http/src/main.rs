//! std-http: a static-file HTTP server on tiny_http (crates.io, used unchanged), the kind of
//! small server people write in Rust: a `tiny_http::Server` on a port, a pool of threads
//! each taking requests from it (`incoming_requests`), files read with `std::fs` from a root
//! directory. GET and HEAD; `/` and directories serve their `index.html`; a path with `..`
//! is refused; other methods get 405. An ordinary std program: the same source runs on Linux
//! (`cargo run -p std-http -- --port 8080 --root apps/httpd/www`).
//!
//! Arguments: `--port N` (80), `--root DIR` (`/`: on xenrt, the files baked into the image
//! from apps/httpd/www, see Cargo.toml), `--threads N` (4, 1-64). A wrong
//! argument is an error on the console and exit status 2.
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

struct Config {
    port: u16,
    root: PathBuf,
    threads: usize,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut c = Config {
        port: 80,
        root: PathBuf::from("/"),
        threads: 4,
    };
    let mut args = args;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--port" => {
                let v = value()?;
                c.port = v.parse().map_err(|_| format!("--port {v}: not a port"))?;
            }
            "--root" => c.root = PathBuf::from(value()?),
            "--threads" => {
                let v = value()?;
                c.threads = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or(format!("--threads {v}: not a number from 1 to 64"))?;
            }
            _ => {
                return Err(format!(
                    "unknown argument {a:?} (--port N, --root DIR, --threads N)"
                ))
            }
        }
    }
    Ok(c)
}

fn main() {
    let c = match parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("std-http: {e}");
            std::process::exit(2);
        }
    };
    let server = match Server::http(("0.0.0.0", c.port)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("std-http: port {}: {e}", c.port);
            std::process::exit(1);
        }
    };
    println!(
        "std-http: serving {} on port {} with {} threads",
        c.root.display(),
        c.port,
        c.threads
    );
    let root = Arc::new(c.root);
    let workers: Vec<_> = (0..c.threads)
        .map(|_| {
            let (server, root) = (server.clone(), root.clone());
            thread::spawn(move || {
                for rq in server.incoming_requests() {
                    if let Err(e) = serve(rq, &root) {
                        // The client went away mid-answer: nothing to tell it.
                        let _ = e;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn serve(rq: Request, root: &Path) -> io::Result<()> {
    if !matches!(rq.method(), Method::Get | Method::Head) {
        return rq.respond(text(405, "method not allowed\n"));
    }
    let Some(path) = file_path(root, rq.url()) else {
        return rq.respond(text(400, "bad path\n"));
    };
    match fs::read(&path) {
        Ok(body) => {
            let ty = content_type(&path);
            let r = Response::from_data(body).with_header(header("Content-Type", ty));
            rq.respond(r)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => rq.respond(text(404, "not found\n")),
        Err(_) => rq.respond(text(500, "cannot read the file\n")),
    }
}

/// The file a URL names under `root` (`index.html` for a directory), or None for a path that
/// would leave the root.
fn file_path(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut p = root.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => p.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if path.ends_with('/') || fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
        p.push("index.html");
    }
    Some(p)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(code: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(StatusCode(code))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/www");
        assert_eq!(
            file_path(root, "/a/b.css?x=1"),
            Some(PathBuf::from("/www/a/b.css"))
        );
        assert_eq!(file_path(root, "/"), Some(PathBuf::from("/www/index.html")));
        assert_eq!(file_path(root, "/../etc/passwd"), None);
        assert_eq!(file_path(root, "/a/../../x"), None);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let a = |v: &[&str]| parse(v.iter().map(|s| s.to_string()));
        assert!(a(&["--port", "x"]).is_err());
        assert!(a(&["--threads", "0"]).is_err());
        assert!(a(&["--bogus"]).is_err());
        let c = a(&["--port", "8080", "--threads", "2"]).unwrap();
        assert_eq!((c.port, c.threads), (8080, 2));
    }
}
