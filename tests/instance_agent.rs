//! `ringmaster instance` against real servers: the built binary runs as a
//! non-root user with a data directory in a temporary directory, its own
//! loopback IP and the contract's ports, and is exercised through its HTTP API,
//! the real database clients and signals.
//!
//! Each test skips (with a message) when its server is not installed or when
//! the agent cannot be run as a non-root user.

mod common;

use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::agent_host::{
    agent_command, agent_path, children_where, http, installed, is_root, proc_state, signal,
    skip_reason,
};

const AGENT_PORT: u16 = 8000;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "agent-token-for-tests";

fn nobody() -> (nix::unistd::Uid, nix::unistd::Gid) {
    let user = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody exists");
    (user.uid, user.gid)
}

fn zombie_children(parent: u32) -> Vec<u32> {
    children_where(parent, |s| s == 'Z')
}

/// `GET path` with an optional bearer token: status and body.
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path, token, None)
}

// ---------------------------------------------------------------- fixture

/// One instance: its directories, address and credentials.
struct Instance {
    engine: &'static str,
    role: &'static str,
    username: &'static str,
    password: String,
    ip: Ipv4Addr,
    dir: tempfile::TempDir,
    runs: u32,
    extra_env: Vec<(&'static str, &'static str)>,
}

impl Instance {
    fn new(engine: &'static str, role: &'static str, last_octet: u8) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rm-agent-")
            .tempdir()
            .unwrap();
        for sub in ["data", "run"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        if is_root() {
            let (uid, gid) = nobody();
            for p in [
                dir.path(),
                &dir.path().join("data"),
                &dir.path().join("run"),
            ] {
                nix::unistd::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let password = format!(
            "Pw{}x{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        Self {
            engine,
            role,
            username: if engine == "redis" {
                "default"
            } else {
                "postgres"
            },
            password,
            ip: Ipv4Addr::new(127, 0, 50, last_octet),
            dir,
            runs: 0,
            extra_env: Vec::new(),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn db_port(&self) -> u16 {
        if self.engine == "redis" { 6379 } else { 5432 }
    }

    fn agent_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), AGENT_PORT)
    }

    fn marker(&self) -> String {
        std::fs::read_to_string(self.data_dir().join(".ringmaster-initialised"))
            .expect("the marker exists")
    }

    /// Starts the agent with the contract's environment.
    fn start(&mut self) -> Agent {
        self.runs += 1;
        let log = self.dir.path().join(format!("agent-{}.log", self.runs));
        let out = File::create(&log).unwrap();
        let mut cmd = agent_command();
        cmd.env("RINGMASTER_ENGINE", self.engine)
            .env("RINGMASTER_CLUSTER", "c")
            .env("RINGMASTER_SHARD", "0")
            .env("RINGMASTER_ROLE", self.role)
            .env("RINGMASTER_DATA_DIR", self.data_dir())
            .env("RINGMASTER_RUN_DIR", self.dir.path().join("run"))
            .env("RINGMASTER_USERNAME", self.username)
            .env("RINGMASTER_PASSWORD", &self.password)
            .env("RINGMASTER_AGENT_TOKEN", TOKEN)
            .env("RINGMASTER_LOG_FORMAT", "text")
            .env("POD_NAME", "c-0-0")
            .env("POD_NAMESPACE", "default")
            .env("POD_IP", self.ip.to_string())
            .envs(self.extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("the agent starts");
        Agent {
            child,
            log,
            addr: self.agent_addr(),
            started: Instant::now(),
            server_pid: None,
        }
    }
}

/// A running agent, killed (with its server) when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
    started: Instant,
    server_pid: Option<u32>,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        http_get(self.addr, path, token).unwrap_or((0, String::new()))
    }

    /// Polls `ok` every 100 ms until it holds; panics with the agent's log after `timeout`.
    fn wait_until(&mut self, what: &str, timeout: Duration, mut ok: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the agent exited ({status}) while waiting for {what}; log:\n{}",
                    self.log_tail()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `/startupz` then `/readyz`; returns the times since start.
    fn wait_ready(&mut self) -> (Duration, Duration) {
        self.wait_until("/startupz", START_TIMEOUT, |a| {
            a.get("/startupz", None).0 == 200
        });
        let startup = self.started.elapsed();
        self.wait_until("/readyz", START_TIMEOUT, |a| {
            a.get("/readyz", None).0 == 200
        });
        let ready = self.started.elapsed();
        (startup, ready)
    }

    fn status(&mut self) -> Value {
        let (code, body) = self.get("/status", Some(TOKEN));
        assert_eq!(code, 200, "/status with the token: {body}");
        let v: Value = serde_json::from_str(&body).expect("/status is JSON");
        self.server_pid = v["pid"].as_u64().map(|p| p as u32);
        v
    }

    /// SIGTERM, then the exit status within the bound.
    fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > STOP_TIMEOUT {
                panic!(
                    "the agent did not exit within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // the server gets a parent-death signal; make sure all the same
        if let Some(pid) = self.server_pid {
            std::thread::sleep(Duration::from_millis(200));
            if proc_state(pid).is_some_and(|(s, _)| s != 'Z') {
                signal(pid, Signal::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------- shared checks

/// The API answers as the contract says; returns the server's pid.
fn check_api(agent: &mut Agent, engine: &str, role: &str) -> u32 {
    assert_eq!(agent.get("/healthz", None).0, 200);
    let (code, _) = agent.get("/status", None);
    assert_eq!(code, 401, "/status without a token");
    let (code, _) = agent.get("/status", Some("not-the-token"));
    assert_eq!(code, 401, "/status with a wrong token");
    let s = agent.status();
    assert_eq!(s["engine"], engine, "{s}");
    assert_eq!(s["role"], role, "{s}");
    assert_eq!(s["serverUp"], true, "{s}");
    assert_eq!(s["dataDirInitialised"], true, "{s}");
    assert!(
        s["serverVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{s}"
    );
    assert!(
        s["startedAt"].as_str().is_some_and(|v| v.contains('T')),
        "{s}"
    );
    let pid = s["pid"].as_u64().expect("a server pid") as u32;
    assert!(proc_state(pid).is_some(), "the server process {pid} exists");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("RINGMASTER_PASSWORD") && !environ.contains("RINGMASTER_AGENT_TOKEN"),
        "the server's environment holds no secret"
    );
    pid
}

/// SIGTERM: exit 0 in time, the server is gone, and the password never reached the log.
fn check_clean_stop(mut agent: Agent, password: &str) {
    let server = agent.server_pid.expect("the server pid is known");
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exit status {status}; log:\n{}",
        agent.log_tail()
    );
    assert!(
        proc_state(server).is_none(),
        "the server process {server} is gone after the agent exited"
    );
    let log = agent.log();
    assert!(
        log.contains("the server stopped cleanly"),
        "{}",
        agent.log_tail()
    );
    assert!(!log.contains(password), "the password appears in the log");
}

/// kill -9 of the server: the agent restarts it and reaps what it leaves.
fn check_crash_recovery(agent: &mut Agent) {
    let old = agent.server_pid.expect("the server pid is known");
    signal(old, Signal::SIGKILL);
    let t = Instant::now();
    agent.wait_until("a restarted server", RECOVER_TIMEOUT, |a| {
        a.status()["pid"].as_u64().is_some_and(|p| p as u32 != old)
    });
    agent.wait_until("/readyz after the restart", RECOVER_TIMEOUT, |a| {
        a.get("/readyz", None).0 == 200
    });
    eprintln!("  kill -9 of the server → ready again in {:?}", t.elapsed());
    assert_eq!(agent.get("/healthz", None).0, 200);
    let s = agent.status();
    assert!(s["restarts"].as_u64() >= Some(1), "{s}");
    let parent = agent.pid();
    agent.wait_until(
        "no zombie children of the agent",
        Duration::from_secs(10),
        |_| zombie_children(parent).is_empty(),
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- Redis

fn redis_client(inst: &Instance, password: &str) -> redis::Client {
    let url = format!("redis://default:{password}@{}:{}/", inst.ip, inst.db_port());
    redis::Client::open(url).unwrap()
}

async fn redis_con(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

fn redis_set(inst: &Instance, key: &str, value: &str) {
    rt().block_on(async {
        let mut con = redis_con(&redis_client(inst, &inst.password))
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut con)
            .await
            .unwrap();
    });
}

fn redis_get(inst: &Instance, key: &str) -> Option<String> {
    rt().block_on(async {
        let mut con = redis_con(&redis_client(inst, &inst.password))
            .await
            .unwrap();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut con)
            .await
            .unwrap()
    })
}

fn redis_rejects_wrong_password(inst: &Instance) {
    rt().block_on(async {
        let err = redis_con(&redis_client(inst, "wrong-password")).await.err();
        assert!(err.is_some(), "a wrong password is rejected");
        // and without credentials commands are refused
        let url = format!("redis://{}:{}/", inst.ip, inst.db_port());
        let mut con = redis_con(&redis::Client::open(url).unwrap()).await.unwrap();
        let r: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg("k").query_async(&mut con).await;
        let e = r.expect_err("an unauthenticated GET is refused");
        assert!(e.to_string().contains("NOAUTH"), "{e}");
    });
}

#[test]
fn redis_instance_lifecycle() {
    if let Some(why) = skip_reason("redis-server") {
        eprintln!("SKIPPED redis_instance_lifecycle: {why}");
        return;
    }
    let mut inst = Instance::new("redis", "primary", 11);
    let mut agent = inst.start();
    let (startup, ready) = agent.wait_ready();
    eprintln!("redis: agent start → /startupz {startup:?}, → /readyz {ready:?}");
    check_api(&mut agent, "redis", "primary");

    let conf = inst.data_dir().join("redis/redis.conf");
    let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "redis.conf holds the password: mode 0600");

    redis_set(&inst, "greeting", "hello");
    assert_eq!(redis_get(&inst, "greeting").as_deref(), Some("hello"));
    redis_rejects_wrong_password(&inst);
    let marker = inst.marker();
    check_clean_stop(agent, &inst.password);

    // restart on the same data directory: data kept, no new initialisation
    let mut agent = inst.start();
    let (_, ready) = agent.wait_ready();
    eprintln!("redis: restart on existing data → /readyz {ready:?}");
    check_api(&mut agent, "redis", "primary");
    assert_eq!(redis_get(&inst, "greeting").as_deref(), Some("hello"));
    assert_eq!(inst.marker(), marker, "initialisation is not redone");
    assert!(
        agent.log().contains("keeping its data"),
        "{}",
        agent.log_tail()
    );
    assert!(!agent.log().contains("initialising the data directory"));

    check_crash_recovery(&mut agent);
    assert_eq!(redis_get(&inst, "greeting").as_deref(), Some("hello"));
    check_clean_stop(agent, &inst.password);
}

#[test]
fn redis_that_keeps_dying_fails_liveness() {
    if let Some(why) = skip_reason("redis-server") {
        eprintln!("SKIPPED redis_that_keeps_dying_fails_liveness: {why}");
        return;
    }
    let mut inst = Instance::new("redis", "primary", 15);
    inst.extra_env = vec![("RINGMASTER_MAX_RESTARTS", "2")];
    // the server's port is taken: every start fails at once
    let _squatter = std::net::TcpListener::bind((inst.ip, inst.db_port())).unwrap();
    let mut agent = inst.start();
    agent.wait_until("/healthz to fail", START_TIMEOUT, |a| {
        a.get("/healthz", None).0 == 503
    });
    assert_eq!(agent.get("/readyz", None).0, 503);
    assert_eq!(agent.get("/startupz", None).0, 503);
    let s = agent.status();
    assert_eq!(s["phase"], "failed", "{s}");
    assert_eq!(s["serverUp"], false, "{s}");
    assert_eq!(s["restarts"], 2, "{s}");
    assert!(s["pid"].is_null(), "{s}");
    let status = agent.terminate();
    assert!(status.success(), "agent exit status {status}");
}

#[test]
fn agent_death_takes_the_server_down() {
    if let Some(why) = skip_reason("redis-server") {
        eprintln!("SKIPPED agent_death_takes_the_server_down: {why}");
        return;
    }
    let mut inst = Instance::new("redis", "primary", 16);
    let mut agent = inst.start();
    agent.wait_ready();
    check_api(&mut agent, "redis", "primary");
    let server = agent.server_pid.unwrap();
    signal(agent.pid(), Signal::SIGKILL);
    let start = Instant::now();
    while proc_state(server).is_some_and(|(s, _)| s != 'Z') {
        assert!(
            start.elapsed() < STOP_TIMEOUT,
            "the server {server} outlived its agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- PostgreSQL

async fn pg_connect(
    inst: &Instance,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.hostaddr(IpAddr::V4(inst.ip))
        .port(inst.db_port())
        .user(inst.username)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn pg_write(inst: &Instance) {
    rt().block_on(async {
        let c = pg_connect(inst, &inst.password).await.unwrap();
        c.batch_execute(
            "CREATE TABLE items (k text PRIMARY KEY, v text NOT NULL);
             INSERT INTO items VALUES ('greeting', 'hello');",
        )
        .await
        .unwrap();
    });
}

fn pg_read(inst: &Instance) -> String {
    rt().block_on(async {
        let c = pg_connect(inst, &inst.password).await.unwrap();
        c.query_one("SELECT v FROM items WHERE k = 'greeting'", &[])
            .await
            .unwrap()
            .get(0)
    })
}

fn pg_rejects_wrong_password(inst: &Instance) {
    rt().block_on(async {
        let err = pg_connect(inst, "wrong-password")
            .await
            .expect_err("a wrong password is rejected");
        let code = err.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("28P01"), "{err}");
    });
}

#[test]
fn postgres_instance_lifecycle() {
    if let Some(why) = skip_reason("postgres") {
        eprintln!("SKIPPED postgres_instance_lifecycle: {why}");
        return;
    }
    let mut inst = Instance::new("postgres", "primary", 12);
    let mut agent = inst.start();
    let (startup, ready) = agent.wait_ready();
    eprintln!("postgres: agent start (with initdb) → /startupz {startup:?}, → /readyz {ready:?}");
    check_api(&mut agent, "postgres", "primary");
    let pgdata = inst.data_dir().join("pgdata");
    assert!(pgdata.join("ringmaster.conf").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(inst.dir.path().join("run"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("pwfile"))
        .collect();
    assert!(leftovers.is_empty(), "the initdb password file is removed");

    pg_write(&inst);
    assert_eq!(pg_read(&inst), "hello");
    pg_rejects_wrong_password(&inst);
    let marker = inst.marker();
    check_clean_stop(agent, &inst.password);

    let mut agent = inst.start();
    let (_, ready) = agent.wait_ready();
    eprintln!("postgres: restart on existing data → /readyz {ready:?}");
    check_api(&mut agent, "postgres", "primary");
    assert_eq!(pg_read(&inst), "hello");
    assert_eq!(inst.marker(), marker, "initialisation is not redone");
    assert!(
        agent.log().contains("keeping its data"),
        "{}",
        agent.log_tail()
    );
    assert!(!agent.log().contains("running initdb"));

    check_crash_recovery(&mut agent);
    assert_eq!(pg_read(&inst), "hello");
    check_clean_stop(agent, &inst.password);
}

#[test]
fn postgres_interrupted_initialisation_is_redone() {
    if let Some(why) = skip_reason("postgres") {
        eprintln!("SKIPPED postgres_interrupted_initialisation_is_redone: {why}");
        return;
    }
    let mut inst = Instance::new("postgres", "primary", 13);
    // what a crash in the middle of initdb leaves: a pgdata, no marker
    let pgdata = inst.data_dir().join("pgdata");
    std::fs::create_dir(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "junk").unwrap();
    if is_root() {
        let (uid, gid) = nobody();
        nix::unistd::chown(&pgdata, Some(uid), Some(gid)).unwrap();
        nix::unistd::chown(&pgdata.join("PG_VERSION"), Some(uid), Some(gid)).unwrap();
    }
    let mut agent = inst.start();
    agent.wait_ready();
    check_api(&mut agent, "postgres", "primary");
    let version = std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap();
    assert!(
        version.trim().parse::<u32>().is_ok(),
        "initdb ran again: PG_VERSION {version:?}"
    );
    assert!(
        agent.log().contains("interrupted initialisation"),
        "{}",
        agent.log_tail()
    );
    check_clean_stop(agent, &inst.password);
}

// ---------------------------------------------------------------- configuration errors

fn run_with_env(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmaster"))
        .arg("instance")
        .env_clear()
        .env("PATH", agent_path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the agent did not exit on a configuration error");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn missing_settings_are_named() {
    let (status, stderr) = run_with_env(&[]);
    assert!(!status.success());
    assert!(stderr.contains("RINGMASTER_ENGINE"), "{stderr}");

    let (status, stderr) = run_with_env(&[
        ("RINGMASTER_ENGINE", "redis"),
        ("RINGMASTER_ROLE", "primary"),
        ("RINGMASTER_USERNAME", "default"),
        ("RINGMASTER_PASSWORD", "pw"),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("RINGMASTER_AGENT_TOKEN"), "{stderr}");
    assert!(!stderr.contains("pw\n"), "{stderr}");

    let (status, stderr) = run_with_env(&[("RINGMASTER_ENGINE", "mysql")]);
    assert!(!status.success());
    assert!(
        stderr.contains("invalid value of RINGMASTER_ENGINE"),
        "{stderr}"
    );
}

#[test]
fn postgres_refuses_root_clearly() {
    if !is_root() || !installed("postgres") {
        eprintln!("SKIPPED postgres_refuses_root_clearly: needs root and PostgreSQL");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    let (status, stderr) = run_with_env(&[
        ("RINGMASTER_ENGINE", "postgres"),
        ("RINGMASTER_ROLE", "primary"),
        ("RINGMASTER_USERNAME", "postgres"),
        ("RINGMASTER_PASSWORD", "pw"),
        ("RINGMASTER_AGENT_TOKEN", "tok"),
        ("RINGMASTER_DATA_DIR", data.to_str().unwrap()),
        ("RINGMASTER_RUN_DIR", run.to_str().unwrap()),
        ("RINGMASTER_BIND", "127.0.50.14"),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("refuses to run as root"), "{stderr}");
    assert!(!data.exists(), "nothing was initialised");
}
