//! Running the binary and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_kiln");

/// A command for the project in `dir`, with a clean `KILN__` (and `OTEL_`) environment plus
/// `env`.
pub fn kiln_cmd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-p").arg(dir).arg("--quiet").args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KILN") || k.starts_with("OTEL_"))
    {
        c.env_remove(k);
    }
    c.env("KILN_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub fn kiln(dir: &Path, args: &[&str]) -> Output {
    kiln_env(dir, args, &[])
}

pub fn kiln_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    kiln_cmd(dir, args, env).output().expect("kiln runs")
}

/// Stdout of a run that must succeed.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[track_caller]
pub fn json(out: Output) -> serde_json::Value {
    let s = ok(out);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Stderr of a run that must fail.
#[track_caller]
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kiln should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A project made by `kiln init` in a temporary directory.
pub struct Project {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

pub fn init(extra: &[&str]) -> Project {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("proj");
    let mut args = vec!["init", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    ok(Command::new(BIN)
        .args(&args)
        .output()
        .expect("kiln init runs"));
    Project { _tmp: tmp, dir }
}

impl Project {
    pub fn run(&self, args: &[&str]) -> Output {
        kiln(&self.dir, args)
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.join(rel), text).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).expect("read")
    }
}

/// A running `kiln serve`, stopped (SIGTERM) on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = kiln_cmd(dir, &["serve", "--addr", "127.0.0.1:0"], env)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve printed its address")
                .expect("line");
            if let Some(rest) = line.split("on http://").nth(1) {
                break rest.split_whitespace().next().expect("addr").to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// Sends SIGTERM and waits; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        terminate(&self.child);
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        std::mem::forget(self);
        ok
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, _, body) = http_raw(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        payload.as_bytes(),
    );
    (status, String::from_utf8(body).expect("a UTF-8 body"))
}

/// One HTTP/1.1 request with any headers and body bytes: (status, response head, body bytes).
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).expect("send");
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head, resp[split + 4..].to_vec())
}

/// A response header's value (names compare case-insensitively).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn post(addr: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    post_to(addr, "/get-online-features", body)
}

/// POST a JSON body to `path`; the answer must be JSON.
pub fn post_to(addr: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, text) = http(addr, "POST", path, Some(&body));
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// Unique names for shared databases.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        kiln_core::time::now_micros()
    )
}

/// A file of the model fixtures (`crates/kiln-models/tests/fixtures`).
pub fn model_fixture(name: &str) -> String {
    format!(
        "{}/../kiln-models/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Registers the XGBoost fixture `driver_ranker.json` as model `ranker` on the example project's
/// feature service `driver_activity`; returns what the command printed.
pub fn register_ranker(p: &Project) -> String {
    ok(p.run(&[
        "models",
        "register",
        "ranker",
        "--path",
        &model_fixture("driver_ranker.json"),
        "--format",
        "xgboost",
        "--feature-service",
        "driver_activity",
    ]))
}

/// A Parquet file's rows as one batch.
pub fn read_parquet(path: &Path) -> arrow_array::RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<_> = reader.map(|b| b.expect("batch")).collect();
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("concat")
}

/// `kiln dataset build --entities ENTITIES SELECTION... --out OUT -o json` in the project; its
/// JSON answer.
pub fn build_dataset(
    p: &Project,
    entities: &Path,
    selection: &[&str],
    out: &Path,
) -> serde_json::Value {
    let mut args = vec![
        "dataset",
        "build",
        "--entities",
        entities.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(selection);
    args.extend_from_slice(&[
        "--out",
        out.to_str().expect("a UTF-8 path"),
        "--output",
        "json",
    ]);
    json(p.run(&args))
}

/// Serves `app` on a loopback port from a runtime of its own (the returned one: the server
/// stops when it is dropped), for fake model servers.
pub fn serve_app(app: axum::Router) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    runtime.spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}
