//! A private `redis-server` process: started on a free loopback port in a directory of its own,
//! answering (its data loaded) when `start` returns, and killed with SIGKILL when dropped. `drover
//! dev` runs its Redis with it (AOF on, in the data directory, so dev resumes where it stopped); the
//! integration tests and the benchmarks run theirs (a temporary directory, AOF off or fsynced on
//! every write, killed and restarted on the same port and data to test crash recovery).
//!
//! It lives in the store because launching Redis is Redis-specific and the store is the one library
//! the binary, the tests and the benchmarks all depend on (they cannot import from the binary).
//! Blocking: it starts processes and waits on sockets with `std`, not tokio.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the server keeps writes. RDB snapshots are always off (`--save ""`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aof {
    /// No persistence (`--appendonly no`): the data dies with the process.
    #[default]
    Off,
    /// `--appendonly yes --appendfsync everysec`: a crash of the machine loses at most a second.
    EverySec,
    /// `--appendonly yes --appendfsync always`: every acknowledged write is on disk before the
    /// reply, so a SIGKILL loses nothing that was acknowledged.
    Always,
}

/// What to start: where the server keeps its files, how it persists, where its log goes.
#[derive(Clone, Debug)]
pub struct Options {
    dir: PathBuf,
    aof: Aof,
    log_file: bool,
    temporary: bool,
    replica_of: Option<u16>,
    cluster: bool,
}

impl Options {
    /// A server keeping its files in `dir` (created if missing, kept when the server stops).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Options {
        Options {
            dir: dir.into(),
            aof: Aof::Off,
            log_file: false,
            temporary: false,
            replica_of: None,
            cluster: false,
        }
    }

    /// A server in a fresh directory under `$TMPDIR` (`drover-redis-<pid>-<n>`), removed when the
    /// server is dropped.
    pub fn temporary() -> Options {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drover-redis-{}-{n}", std::process::id()));
        Options {
            temporary: true,
            ..Options::in_dir(dir)
        }
    }

    /// Persistence (default: [`Aof::Off`]).
    pub fn aof(self, aof: Aof) -> Options {
        Options { aof, ..self }
    }

    /// A replica of the server on loopback port `primary` (`--replicaof`). A replica that Sentinel
    /// promotes, or a primary it demotes, changes role at run time; this is only how it starts.
    pub fn replica_of(self, primary: u16) -> Options {
        Options {
            replica_of: Some(primary),
            ..self
        }
    }

    /// A Redis Cluster node (`--cluster-enabled yes`, its state in `nodes.conf` in the directory;
    /// port + 10000, the cluster bus, is free too). See [`RedisCluster`].
    pub fn cluster_node(self) -> Options {
        Options {
            cluster: true,
            ..self
        }
    }

    /// Redis's log goes to `redis.log` in the directory (by default its output is discarded).
    pub fn log_file(self) -> Options {
        Options {
            log_file: true,
            ..self
        }
    }
}

/// A running private `redis-server`, SIGKILLed when dropped (and its directory removed if it was
/// [`Options::temporary`]).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    options: Options,
    child: Option<Child>,
}

/// How long `start` and `restart` wait for the server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports `start` tries when the server exits at once (another process took the port between
/// our probe and its bind).
const PORT_TRIES: usize = 3;

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    pub fn start(options: Options) -> io::Result<RedisServer> {
        if options.temporary {
            // A directory left by an earlier process with the same pid.
            let _ = std::fs::remove_dir_all(&options.dir);
        }
        std::fs::create_dir_all(&options.dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", options.dir.display()),
            )
        })?;
        let mut server = RedisServer {
            port: 0,
            options,
            child: None,
        };
        let mut tries = 0;
        loop {
            tries += 1;
            server.port = if server.options.cluster {
                free_bus_port()?
            } else {
                free_port()?
            };
            match server.spawn() {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < PORT_TRIES => continue,
                result => return result.map(|()| server),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the server keeps its files (and `redis.log`, with [`Options::log_file`]).
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: no shutdown save, no goodbye. Returns once the process is gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again on the same port and directory; returns once
    /// it answers, its AOF (if any) loaded.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill9();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
            .arg("--dir")
            .arg(&self.options.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match self.options.aof {
            Aof::Off => cmd.args(["--appendonly", "no"]),
            Aof::EverySec => cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]),
            Aof::Always => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        if self.options.log_file {
            cmd.args(["--logfile", "redis.log"]);
        }
        // A replica (this server's, or this one as a new replica after a failover) syncs at once
        // instead of waiting 5 s for others to join a diskless transfer.
        cmd.args(["--repl-diskless-sync-delay", "0"]);
        if self.options.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        if let Some(primary) = self.options.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot start redis-server ({e}); install it (apt-get install redis-server)"
                ),
            )
        })?;
        self.child = Some(self.wait_ready(child)?);
        Ok(())
    }

    /// Waits until the server answers PING with PONG (a server still loading its AOF accepts
    /// connections but answers `-LOADING`); kills it if it does not within [`READY_TIMEOUT`].
    fn wait_ready(&self, mut child: Child) -> io::Result<Child> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if pong(self.port) {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                // Most often the port was taken (redis-server logs why, if it has a log).
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "redis-server exited ({status}) before answering on port {}{}",
                        self.port,
                        self.log_hint()
                    ),
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "redis-server did not answer on port {} within {} s{}",
                        self.port,
                        READY_TIMEOUT.as_secs(),
                        self.log_hint()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_hint(&self) -> String {
        if self.options.log_file {
            format!("; see {}", self.options.dir.join("redis.log").display())
        } else {
            String::new()
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        if self.options.temporary {
            let _ = std::fs::remove_dir_all(&self.options.dir);
        }
    }
}

/// A running `redis-sentinel` watching one master group on loopback, SIGKILLed when dropped. Its
/// configuration file (which Sentinel rewrites as it learns) lives in a temporary directory.
#[derive(Debug)]
pub struct SentinelServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl SentinelServer {
    /// Starts a Sentinel monitoring `master` at loopback port `primary`, agreeing to a failover
    /// with `quorum` Sentinels once the primary has not answered for `down_after`.
    pub fn start(
        master: &str,
        primary: u16,
        quorum: u32,
        down_after: Duration,
    ) -> io::Result<SentinelServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("drover-sentinel-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let ms = down_after.as_millis();
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {master} 127.0.0.1 {primary} {quorum}\n\
             sentinel down-after-milliseconds {master} {ms}\n\
             sentinel failover-timeout {master} {timeout}\n\
             sentinel parallel-syncs {master} 1\n",
            dir = dir.display(),
            timeout = (ms * 4).max(2000),
        );
        let path = dir.join("sentinel.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new("redis-sentinel")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start redis-sentinel ({e}); install it (apt-get install redis-sentinel)"
                    ),
                )
            })?;
        let mut sentinel = SentinelServer {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !pong(port) {
            if Instant::now() >= deadline {
                sentinel.kill9();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-sentinel did not answer on port {port}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(sentinel)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, `replicas` replicas (all `appendfsync always`) and `sentinels` Sentinels watching
/// them with a majority quorum, on loopback: what the HA tests and the failover benchmark run.
/// Its methods block (they ask the Sentinels with the redis crate's synchronous client).
#[derive(Debug)]
pub struct SentinelGroup {
    /// The data servers; `servers[0]` started as the primary.
    pub servers: Vec<RedisServer>,
    pub sentinels: Vec<SentinelServer>,
    master: String,
}

impl SentinelGroup {
    /// Starts the group and waits until every Sentinel knows every replica (in sync) and every
    /// other Sentinel, so a failover can be agreed.
    pub fn start(master: &str, replicas: usize, sentinels: usize) -> io::Result<SentinelGroup> {
        SentinelGroup::start_with(master, replicas, sentinels, Ok)
    }

    /// [`SentinelGroup::start`], with the replicas and the Sentinels reaching the primary at the
    /// port `front` returns for the primary's own port (a proxy that can cut them off, so the
    /// primary can be partitioned from them while clients still reach it directly).
    pub fn start_with(
        master: &str,
        replicas: usize,
        sentinels: usize,
        front: impl FnOnce(u16) -> io::Result<u16>,
    ) -> io::Result<SentinelGroup> {
        let primary = RedisServer::start(Options::temporary().aof(Aof::Always))?;
        let port = front(primary.port())?;
        let mut servers = vec![primary];
        for _ in 0..replicas {
            servers.push(RedisServer::start(
                Options::temporary().aof(Aof::Always).replica_of(port),
            )?);
        }
        let quorum = (sentinels / 2 + 1) as u32;
        let sentinels = (0..sentinels)
            .map(|_| SentinelServer::start(master, port, quorum, Duration::from_millis(1000)))
            .collect::<io::Result<Vec<_>>>()?;
        let group = SentinelGroup {
            servers,
            sentinels,
            master: master.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !group.ready() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the Sentinels did not learn the replicas and each other within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(group)
    }

    /// The store URL naming the primary through every Sentinel.
    pub fn url(&self) -> String {
        let hosts = loopback_hosts(self.sentinels.iter().map(SentinelServer::port));
        format!("redis+sentinel://{hosts}/{}/0", self.master)
    }

    fn ask<T: redis::FromRedisValue>(&self, i: usize, what: &[&str]) -> redis::RedisResult<T> {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinels[i].port()))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd("SENTINEL");
        for w in what {
            cmd.arg(*w);
        }
        cmd.arg(&self.master).query(&mut conn)
    }

    fn ready(&self) -> bool {
        let want = self.servers.len() - 1;
        (0..self.sentinels.len()).all(|i| {
            let replicas: Vec<std::collections::HashMap<String, String>> =
                self.ask(i, &["replicas"]).unwrap_or_default();
            let synced = replicas
                .iter()
                .filter(|r| {
                    r.get("master-link-status").map(String::as_str) == Some("ok")
                        && !r.get("flags").is_some_and(|f| f.contains("down"))
                })
                .count();
            let peers: Vec<redis::Value> = self.ask(i, &["sentinels"]).unwrap_or_default();
            synced == want && peers.len() + 1 == self.sentinels.len()
        })
    }

    /// The primary's port as the first Sentinel names it.
    pub fn primary_port(&self) -> io::Result<u16> {
        let (_, port): (String, u16) = self
            .ask(0, &["get-master-addr-by-name"])
            .map_err(|e| io::Error::other(format!("asking Sentinel for the primary: {e}")))?;
        Ok(port)
    }

    /// Closes every replica's link to the primary (`CLIENT KILL TYPE master` on each replica), as a
    /// network blip would: each replica reconnects at its next once-a-second check and catches up
    /// from the primary's backlog, and until then the primary acknowledges writes no replica has.
    pub fn cut_replica_links(&self) -> io::Result<()> {
        let primary = self.primary_port()?;
        for s in self.servers.iter().filter(|s| s.port() != primary) {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", s.port()))
                .map_err(io::Error::other)?;
            let mut conn = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(io::Error::other)?;
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("master")
                .query(&mut conn)
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// SIGKILLs the current primary; returns its index in `servers`.
    pub fn kill_primary(&mut self) -> io::Result<usize> {
        let port = self.primary_port()?;
        let i = self
            .servers
            .iter()
            .position(|s| s.port() == port)
            .ok_or_else(|| io::Error::other("Sentinel names a primary outside the group"))?;
        self.servers[i].kill9();
        Ok(i)
    }

    /// Waits (up to 30 s) until the Sentinels name a primary other than the one on port `old`;
    /// returns the new primary's port.
    pub fn wait_failover(&self, old: u16) -> io::Result<u16> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(port) = self.primary_port()
                && port != old
            {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "Sentinel did not promote a replica within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port nobody listens on now (bind port 0, read it back, let it go). Redis's own
/// `--port 0` would disable TCP rather than pick one.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_bus_port() -> io::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if port <= 55535 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free port with a free cluster bus port (+10000) found",
    ))
}

/// A local Redis Cluster (primaries, and replicas with [`RedisCluster::start_with_replicas`]), made
/// with `redis-cli --cluster create`, its nodes SIGKILLed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` nodes (at least 3, Redis's minimum) with `aof` and joins them; returns
    /// when every node reports `cluster_state:ok`.
    pub fn start(primaries: usize, aof: Aof) -> io::Result<RedisCluster> {
        RedisCluster::start_with_replicas(primaries, 0, aof)
    }

    /// [`RedisCluster::start`] with `replicas` replicas per primary (`--cluster-replicas`): the
    /// cluster promotes a replica when its primary fails.
    pub fn start_with_replicas(
        primaries: usize,
        replicas: usize,
        aof: Aof,
    ) -> io::Result<RedisCluster> {
        let total = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(RedisServer::start(
                Options::temporary().aof(aof).cluster_node().log_file(),
            )?);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run redis-cli: {e}")))?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            )));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:<port>,...`.
    pub fn url(&self) -> String {
        let nodes = loopback_hosts(self.nodes.iter().map(RedisServer::port));
        format!("redis+cluster://{nodes}")
    }

    /// The node at `addr` (`host:port`, as `CLUSTER NODES` and [`crate::shards`] name it).
    pub fn node_at(&mut self, addr: &str) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| {
            addr.rsplit_once(':')
                .is_some_and(|(_, p)| p == n.port().to_string())
        })
    }

    /// Waits until every node answers `cluster_state:ok` and agrees on the slots (a node that
    /// restarted rejoins from its `nodes.conf`).
    pub fn wait_ok(&self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().all(|n| {
                redis_cli(n.port(), &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            let check = Command::new("redis-cli")
                .args([
                    "--cluster",
                    "check",
                    &format!("127.0.0.1:{}", self.nodes[0].port()),
                ])
                .stdin(Stdio::null())
                .output();
            let agreed = check.is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.contains("[OK] All nodes agree about slots configuration")
                    && text.contains("[OK] All 16384 slots covered")
                    && !text.contains("[WARNING]")
            });
            if ok && agreed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the Redis Cluster did not reach cluster_state:ok within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `127.0.0.1:<port>,...`.
fn loopback_hosts(ports: impl Iterator<Item = u16>) -> String {
    ports
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `redis-cli -p <port> <args>` and returns its output.
pub fn redis_cli(port: u16, args: &[&str]) -> io::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the server on `port` answers an inline PING with `+PONG`.
fn pong(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs `redis-server` on PATH, like the integration tests.
    #[test]
    fn restarts_on_the_same_port_with_its_aof() {
        let mut server = RedisServer::start(Options::temporary().aof(Aof::Always)).unwrap();
        let (port, dir) = (server.port(), server.dir().to_path_buf());
        let set = |port: u16| {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
            s.write_all(b"SET k v\r\nGET k\r\n").unwrap();
            let mut reply = [0u8; 12];
            s.read_exact(&mut reply).unwrap();
            reply
        };
        assert_eq!(&set(port), b"+OK\r\n$1\r\nv\r\n");
        server.kill9();
        assert!(!pong(port), "killed");
        server.restart().unwrap();
        assert_eq!(server.port(), port);
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(b"GET k\r\n").unwrap();
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(
            &reply, b"$1\r\nv\r\n",
            "the acknowledged write survived SIGKILL"
        );
        drop(s);
        drop(server);
        assert!(!dir.exists(), "a temporary directory is removed");
    }
}
