//! PostgreSQL replication driven through the instance agent's `POST /role`, with
//! real agents and servers: three instances on their own loopback addresses clone
//! and stream, switch to synchronous replication, fail over (the old primary is
//! fenced while SIGSTOPped, then rewound), switch over cleanly, refuse stale
//! epochs, and re-clone a wiped replica.
//!
//! Skips (with a message) when PostgreSQL is not installed or the agent cannot run
//! as a non-root user.

mod common;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use common::agent_host::{
    agent_command, alive, children_where, http, is_root, signal, skip_reason,
};

const AGENT_PORT: u16 = 8000;
const DB_PORT: u16 = 5432;
const TOKEN: &str = "agent-token-for-replication-tests";
const PASSWORD: &str = "Superuser-pw-for-replication";
const REPLICATION_PASSWORD: &str = "Replication-pw:with\\odd'chars";
const CONVERGE: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

fn children(parent: u32) -> Vec<u32> {
    children_where(parent, |_| true)
}

/// Polls `ok` every 100 ms; panics with `context()` after `timeout`.
fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- instances

/// One instance: its directory, address and (while it runs) its agent.
struct Node {
    name: &'static str,
    env_role: &'static str,
    ip: Ipv4Addr,
    dir: tempfile::TempDir,
    runs: u32,
    agent: Option<Child>,
    log: PathBuf,
}

impl Node {
    fn new(name: &'static str, env_role: &'static str, ip: Ipv4Addr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rm-repl-")
            .tempdir()
            .unwrap();
        for sub in ["data", "run"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let node = Self {
            name,
            env_role,
            ip,
            dir,
            runs: 0,
            agent: None,
            log: PathBuf::new(),
        };
        node.chown_all();
        node
    }

    fn chown_all(&self) {
        if !is_root() {
            return;
        }
        let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        for p in [
            self.dir.path().to_path_buf(),
            self.data_dir(),
            self.dir.path().join("run"),
        ] {
            nix::unistd::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn agent_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), AGENT_PORT)
    }

    fn upstream(&self) -> Value {
        json!({"name": self.name, "host": self.ip.to_string(), "port": DB_PORT})
    }

    fn start(&mut self) {
        self.runs += 1;
        self.log = self.dir.path().join(format!("agent-{}.log", self.runs));
        let out = File::create(&self.log).unwrap();
        let mut cmd = agent_command();
        cmd.env("RINGMASTER_ENGINE", "postgres")
            .env("RINGMASTER_ROLE", self.env_role)
            .env("RINGMASTER_DATA_DIR", self.data_dir())
            .env("RINGMASTER_RUN_DIR", self.dir.path().join("run"))
            .env("RINGMASTER_USERNAME", "postgres")
            .env("RINGMASTER_PASSWORD", PASSWORD)
            .env("RINGMASTER_REPLICATION_PASSWORD", REPLICATION_PASSWORD)
            .env("RINGMASTER_AGENT_TOKEN", TOKEN)
            .env("RINGMASTER_LOG_FORMAT", "text")
            .env("RINGMASTER_STOP_TIMEOUT", "15")
            .env("POD_NAME", self.name)
            .env("POD_IP", self.ip.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        self.agent = Some(cmd.spawn().expect("the agent starts"));
    }

    fn logs(&self) -> String {
        (1..=self.runs)
            .map(|r| {
                std::fs::read_to_string(self.dir.path().join(format!("agent-{r}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} agent log (tail)\n{}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    fn status(&self) -> Value {
        match http(self.agent_addr(), "GET", "/status", Some(TOKEN), None) {
            Ok((200, body)) => serde_json::from_str(&body).expect("/status is JSON"),
            _ => Value::Null,
        }
    }

    /// `POST /role`: (HTTP status, answer).
    fn command(&self, command: Value) -> (u16, Value) {
        let (code, body) = http(
            self.agent_addr(),
            "POST",
            "/role",
            Some(TOKEN),
            Some(&command.to_string()),
        )
        .unwrap_or_else(|e| panic!("POST /role to {}: {e}\n{}", self.name, self.log_tail()));
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn accept(&self, command: Value) {
        let (code, answer) = self.command(command);
        assert_eq!(code, 202, "{}: {answer}", self.name);
        assert_eq!(answer["accepted"], true, "{answer}");
    }

    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        wait_for(
            &format!("{} {what}", self.name),
            CONVERGE,
            || {
                last = self.status();
                ok(&last)
            },
            || format!("last status: {}\n{}", self.status(), self.log_tail()),
        );
        last
    }

    fn wait_streaming_from(&self, upstream: &Node) -> Value {
        let addr = format!("{}:{DB_PORT}", upstream.ip);
        self.wait_status(&format!("streaming from {}", upstream.name), |s| {
            s["role"] == "replica"
                && s["replication"]["streaming"] == true
                && s["replication"]["upstream"] == addr.as_str()
        })
    }

    fn wait_primary(&self, epoch: u64) -> Value {
        self.wait_status("primary", |s| {
            s["role"] == "primary" && s["epoch"] == epoch && s["serverUp"] == true
        })
    }

    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.agent.take().expect("the agent runs");
        signal(child.id(), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < STOP_TIMEOUT,
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let agent_lines: Vec<String> = self
                .logs()
                .lines()
                .filter(|l| {
                    l.contains("ringmaster") || l.contains("pg_rewind") || l.contains("FATAL")
                })
                .map(String::from)
                .collect();
            eprintln!(
                "--- {} agent log (agent lines)\n{}",
                self.name,
                agent_lines.join("\n")
            );
        }
        if let Some(mut child) = self.agent.take() {
            let server = self.status()["pid"].as_u64();
            let _ = child.kill();
            let _ = child.wait();
            if let Some(pid) = server {
                signal(pid as u32, Signal::SIGKILL);
            }
        }
    }
}

fn primary_cmd(epoch: u64, replicas: &[&Node], mode: &str) -> Value {
    let names: Vec<&str> = replicas.iter().map(|n| n.name).collect();
    json!({"epoch": epoch, "role": "primary", "replicas": names, "mode": mode})
}

fn replica_cmd(epoch: u64, upstream: &Node, stop: &str) -> Value {
    json!({"epoch": epoch, "role": "replica", "upstream": upstream.upstream(), "stop": stop})
}

// ---------------------------------------------------------------- SQL

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(node: &Node) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.hostaddr(IpAddr::V4(node.ip))
        .port(DB_PORT)
        .user("postgres")
        .password(PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sql(node: &Node, statements: &str) {
    rt().block_on(async {
        let c = connect(node).await.unwrap();
        c.batch_execute(statements)
            .await
            .unwrap_or_else(|e| panic!("{} on {}: {e}", statements, node.name));
    });
}

/// The first column of every row, as text.
fn query(node: &Node, q: &str) -> Vec<String> {
    rt().block_on(async {
        let c = connect(node).await.unwrap();
        c.query(q, &[])
            .await
            .unwrap_or_else(|e| panic!("{q} on {}: {e}", node.name))
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect()
    })
}

fn count(node: &Node, table: &str) -> i64 {
    rt().block_on(async {
        let c = connect(node).await.unwrap();
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    })
}

fn wait_rows(node: &Node, table: &str, rows: i64) {
    wait_for(
        &format!("{} to hold {rows} rows of {table}", node.name),
        CONVERGE,
        || {
            rt().block_on(async {
                let Ok(c) = connect(node).await else {
                    return false;
                };
                c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) == rows)
            })
        },
        || node.log_tail(),
    );
}

fn position(s: &Value, key: &str) -> u64 {
    s["replication"][key].as_u64().unwrap_or_default()
}

// ---------------------------------------------------------------- the scenario

/// Replicas clone and stream; every received byte matches the primary.
fn check_streaming(primary: &Node, replicas: &[&Node]) {
    for r in replicas {
        r.wait_streaming_from(primary);
    }
    let slots = query(
        primary,
        "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
    );
    let expected: Vec<String> = replicas.iter().map(|r| r.name.replace('-', "_")).collect();
    for slot in &expected {
        assert!(slots.contains(slot), "slot {slot} in {slots:?}");
    }
    wait_for(
        "pg_stat_replication to list the replicas",
        CONVERGE,
        || {
            let names = query(primary, "SELECT application_name FROM pg_stat_replication");
            replicas.iter().all(|r| names.iter().any(|n| n == r.name))
        },
        || primary.log_tail(),
    );
    let p = primary.status();
    let listed: Vec<&str> = p["replication"]["replicas"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    for r in replicas {
        assert!(listed.contains(&r.name), "{p}");
    }
}

/// A write on the primary: every replica receives up to the primary's position.
fn check_write_reaches(primary: &Node, replicas: &[&Node], table: &str, rows: i64) {
    sql(
        primary,
        &format!("INSERT INTO {table} SELECT FROM generate_series(1, 1)"),
    );
    let total = count(primary, table);
    assert_eq!(total, rows);
    for r in replicas {
        let last = std::cell::Cell::new((0, 0));
        wait_for(
            &format!("{} to receive the primary's position", r.name),
            CONVERGE,
            || {
                let p = position(&primary.status(), "position");
                let got = position(&r.status(), "received");
                last.set((p, got));
                p > 0 && got == p
            },
            || {
                format!(
                    "primary/replica positions {:?}\n{}",
                    last.get(),
                    r.log_tail()
                )
            },
        );
        wait_rows(r, table, rows);
    }
}

#[test]
fn postgres_replication_failover_switchover_and_reclone() {
    if let Some(why) = skip_reason("pg_rewind") {
        eprintln!("SKIPPED postgres_replication_failover_switchover_and_reclone: {why}");
        return;
    }
    let t0 = Instant::now();
    let mut a = Node::new("c-0-0", "primary", Ipv4Addr::new(127, 0, 71, 1));
    let mut b = Node::new("c-0-1", "replica", Ipv4Addr::new(127, 0, 71, 2));
    let mut c = Node::new("c-0-2", "replica", Ipv4Addr::new(127, 0, 71, 3));
    for n in [&mut a, &mut b, &mut c] {
        n.start();
    }

    // replicas from the environment wait for an upstream; the primary initialises
    a.wait_primary(0);
    for r in [&b, &c] {
        let s = r.wait_status("waiting", |s| s["phase"] == "waiting");
        assert_eq!(s["serverUp"], false, "{s}");
        assert_eq!(s["desiredRole"], "replica", "{s}");
    }

    // epoch 1: a leads b and c
    a.accept(primary_cmd(1, &[&b, &c], "async"));
    b.accept(replica_cmd(1, &a, "clean"));
    c.accept(replica_cmd(1, &a, "clean"));
    check_streaming(&a, &[&b, &c]);
    sql(&a, "CREATE TABLE t (x int)");
    check_write_reaches(&a, &[&b, &c], "t", 1);
    let first_timeline = a.status()["replication"]["timeline"].as_u64().unwrap();
    eprintln!("streaming to two replicas after {:?}", t0.elapsed());

    // a repeated command is a no-op; a stale one is refused
    let (code, answer) = b.command(replica_cmd(1, &a, "clean"));
    assert_eq!((code, &answer["accepted"]), (202, &json!(true)), "{answer}");
    let (code, answer) = b.command(replica_cmd(0, &a, "clean"));
    assert_eq!(code, 409, "{answer}");
    assert_eq!(answer["accepted"], false, "{answer}");
    assert_eq!(answer["epoch"], 1, "{answer}");

    // epoch 2: synchronous replication
    a.accept(primary_cmd(2, &[&b, &c], "sync"));
    wait_for(
        "synchronous_standby_names on the primary",
        CONVERGE,
        || query(&a, "SHOW synchronous_standby_names") == [r#"ANY 1 ("c-0-1", "c-0-2")"#],
        || a.log_tail(),
    );
    check_write_reaches(&a, &[&b, &c], "t", 2);
    // with no replica connected a commit waits (statement_timeout does not cover
    // the commit's wait: the client gives up after 2 s and cancels it)
    assert!(b.terminate().success(), "{}", b.log_tail());
    assert!(c.terminate().success(), "{}", c.log_tail());
    rt().block_on(async {
        let cl = connect(&a).await.unwrap();
        let insert = cl.batch_execute("INSERT INTO t VALUES (3)");
        let waited = tokio::time::timeout(Duration::from_secs(2), insert).await;
        assert!(
            waited.is_err(),
            "a synchronous commit without replicas returned: {waited:?}"
        );
        cl.cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await
            .unwrap();
    });
    // restarted agents keep their persisted role and stream again
    b.start();
    c.start();
    check_streaming(&a, &[&b, &c]);
    wait_rows(&b, "t", 3);

    // epoch 3: failover to b. a hangs (SIGSTOP), is fenced, then rewinds
    let a_server = a.status()["pid"].as_u64().unwrap() as u32;
    let mut frozen = children(a_server);
    frozen.push(a_server);
    for &p in &frozen {
        signal(p, Signal::SIGSTOP);
    }
    a.accept(json!({"epoch": 3, "role": "fenced", "stop": "immediate"}));
    wait_for(
        "every process of the fenced server to be gone",
        Duration::from_secs(20),
        || frozen.iter().all(|&p| !alive(p)),
        || a.log_tail(),
    );
    let s = a.wait_status("fenced", |s| s["phase"] == "fenced");
    assert_eq!(s["serverUp"], false, "{s}");
    assert!(s["pid"].is_null(), "{s}");

    b.accept(primary_cmd(3, &[&a, &c], "async"));
    let s = b.wait_primary(3);
    let new_timeline = s["replication"]["timeline"].as_u64().unwrap();
    assert!(new_timeline > first_timeline, "{s}");
    c.accept(replica_cmd(3, &b, "clean"));
    a.accept(replica_cmd(3, &b, "immediate"));
    let s = a.wait_streaming_from(&b);
    c.wait_streaming_from(&b);
    a.wait_status("on the new timeline", |s| {
        s["replication"]["timeline"].as_u64() == Some(new_timeline)
    });
    assert!(
        a.logs().contains("rewound to the upstream"),
        "{s}\n{}",
        a.log_tail()
    );
    check_write_reaches(&b, &[&a, &c], "t", 4);
    check_streaming(&b, &[&a, &c]);
    eprintln!("failed over with a rewind after {:?}", t0.elapsed());

    // stale epochs are refused by every instance
    let (code, _) = a.command(primary_cmd(2, &[], "async"));
    assert_eq!(code, 409);

    // epoch 4: clean switchover b → c loses no committed row
    sql(
        &b,
        "CREATE TABLE s (x int); INSERT INTO s SELECT generate_series(1, 500)",
    );
    b.accept(replica_cmd(4, &c, "clean"));
    b.wait_status("a replica at epoch 4", |s| {
        s["epoch"] == 4 && s["role"] == "replica" && s["serverUp"] == true
    });
    c.accept(primary_cmd(4, &[&a, &b], "async"));
    c.wait_primary(4);
    assert_eq!(
        count(&c, "s"),
        500,
        "every committed row survived the switchover"
    );
    a.accept(replica_cmd(4, &c, "clean"));
    check_streaming(&c, &[&a, &b]);
    check_write_reaches(&c, &[&a, &b], "t", 5);
    wait_rows(&a, "s", 500);
    assert!(
        !b.logs().contains("rewinding with pg_rewind"),
        "a clean switchover needs no rewind\n{}",
        b.log_tail()
    );
    eprintln!("switched over cleanly after {:?}", t0.elapsed());

    // a replica whose data directory is lost clones again, from its persisted role
    assert!(a.terminate().success(), "{}", a.log_tail());
    std::fs::remove_dir_all(a.data_dir().join("pgdata")).unwrap();
    std::fs::remove_file(a.data_dir().join(".ringmaster-initialised")).unwrap();
    a.start();
    a.wait_streaming_from(&c);
    wait_rows(&a, "t", 5);
    wait_rows(&a, "s", 500);
    assert!(a.logs().contains("cloning with pg_basebackup"));

    // no secret in any log, and every agent stops cleanly
    for n in [&mut a, &mut b, &mut c] {
        let status = n.terminate();
        assert!(status.success(), "{}: {status}\n{}", n.name, n.log_tail());
        let logs = n.logs();
        assert!(!logs.contains(PASSWORD) && !logs.contains(REPLICATION_PASSWORD));
    }
    eprintln!("replication scenario done in {:?}", t0.elapsed());
}
