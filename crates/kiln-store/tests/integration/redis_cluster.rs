//! A Redis Cluster for tests: three `redis-server` processes on free loopback ports, the slots
//! split in thirds, joined with `CLUSTER MEET`. Shared with the CLI tests (`#[path]`), so both
//! run against the real thing rather than a mock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis Cluster of three primaries (slots split in thirds), stopped when dropped.
pub struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Child>,
    pub ports: Vec<u16>,
}

impl Cluster {
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(3);
        let servers = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server (Debian package redis-server) on PATH")
            })
            .collect();
        let cluster = Cluster {
            _dir: dir,
            servers,
            ports,
        };
        let mut conns = Vec::new();
        for port in &cluster.ports {
            conns.push(wait_for(*port).await);
        }
        let thirds = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (conn, (lo, hi)) in conns.iter_mut().zip(thirds) {
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(lo)
                .arg(hi)
                .query_async(conn)
                .await
                .expect("ADDSLOTSRANGE");
        }
        for port in &cluster.ports[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(*port)
                .query_async(&mut conns[0])
                .await
                .expect("MEET");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for conn in &mut conns {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(conn)
                    .await
                    .expect("CLUSTER INFO");
                if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not form: {info}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Loopback ports free now, whose cluster bus ports (+10000) are free too.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    while out.len() < n {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            out.push(port);
        }
    }
    out
}

pub async fn wait_for(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("redis-server on {port} did not start: {e}"),
        }
    }
}
