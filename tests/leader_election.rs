//! Leader election against the real apiserver: two candidates on one Lease.
//!
//! * exactly one leads, and the Lease names it;
//! * a leader that shuts down releases the Lease and the standby takes over within
//!   one retry period;
//! * a leader that dies without releasing is replaced once the Lease expires — not
//!   before;
//! * a leader whose Lease is taken from it says so within one renew period;
//! * a leader cut off from the apiserver (requests hang) steps down at its renew
//!   deadline, before the standby may take the Lease over;
//! * never are both leading at once (sampled every 20 ms throughout).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use ringmaster::runtime::leader::{DEFAULT_LEASE_NAME, LeaderElector, LeaderError};
use ringmaster::runtime::shutdown::Shutdown;
use ringmaster_e2e::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SAMPLE: Duration = Duration::from_millis(20);
/// First election: one retry period (2 s) plus API latency, generously.
const FIRST_LEADER_WITHIN: Duration = Duration::from_secs(10);

/// One candidate running in this process.
struct Candidate {
    identity: String,
    leading: Option<watch::Receiver<bool>>,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), LeaderError>>,
}

impl Candidate {
    fn spawn(client: kube::Client, ns: &str, identity: &str) -> Self {
        let (tx, rx) = watch::channel(false);
        let shutdown = Shutdown::new();
        let elector = LeaderElector::new(client, ns, DEFAULT_LEASE_NAME, identity);
        let task = tokio::spawn(elector.run(tx, shutdown.clone()));
        Self {
            identity: identity.to_owned(),
            leading: Some(rx),
            shutdown,
            task,
        }
    }

    /// Whether it currently says it leads (a candidate that stopped never leads).
    fn is_leading(&self) -> bool {
        self.leading.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// Graceful stop: shutdown, wait for `false`, let go of the receiver, await the task.
    async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(rx) = self.leading.as_mut() {
            tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|l| !*l))
                .await
                .expect("leadership not dropped at once on shutdown")
                .expect("elector gone before reporting");
        }
        self.leading = None;
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("elector did not finish after shutdown")
            .unwrap()
            .unwrap();
    }

    /// Crash: the task is aborted; nothing is released.
    async fn crash(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let rx = self.leading.take().unwrap();
        assert!(!*rx.borrow(), "an aborted elector must publish false");
    }
}

/// Samples every 20 ms for `duration`, failing if both lead at once; returns the index
/// of the first candidate seen leading once `until` says stop (`None` = sample the
/// whole duration).
async fn sample(
    candidates: &[&Candidate],
    duration: Duration,
    until: impl Fn(&[bool]) -> bool,
) -> Option<(usize, Duration)> {
    let start = Instant::now();
    while start.elapsed() < duration {
        let states: Vec<bool> = candidates.iter().map(|c| c.is_leading()).collect();
        let leaders = states.iter().filter(|l| **l).count();
        assert!(
            leaders <= 1,
            "two leaders at once after {:?}",
            start.elapsed()
        );
        if until(&states) {
            return states.iter().position(|l| *l).map(|i| (i, start.elapsed()));
        }
        tokio::time::sleep(SAMPLE).await;
    }
    None
}

async fn wait_for_leader(candidates: &[&Candidate], within: Duration) -> (usize, Duration) {
    sample(candidates, within, |s| s.iter().any(|l| *l))
        .await
        .unwrap_or_else(|| panic!("no leader within {within:?}"))
}

async fn holder(api: &Api<Lease>) -> Option<String> {
    let lease = api.get(DEFAULT_LEASE_NAME).await.unwrap();
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_when_the_leader_shuts_down() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("leader-release").await;
    let client = cluster.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());

    let mut a = Candidate::spawn(client.clone(), ns.name(), "candidate-a");
    let mut b = Candidate::spawn(client.clone(), ns.name(), "candidate-b");
    let (first, _) = wait_for_leader(&[&a, &b], FIRST_LEADER_WITHIN).await;
    // Exactly one keeps leading through two renewals.
    assert!(
        sample(&[&a, &b], Duration::from_secs(11), |s| !s
            .iter()
            .any(|l| *l))
        .await
        .is_none()
    );
    let (leader, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(leader.is_leading() && !standby.is_leading());
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(leader.identity.as_str())
    );

    let stopped = Instant::now();
    leader.stop().await;
    wait_for_leader(&[&*standby], Duration::from_secs(5)).await;
    let takeover = stopped.elapsed();
    eprintln!("release: the standby took over {takeover:?} after the leader was stopped");
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(standby.identity.as_str())
    );
    let lease = leases.get(DEFAULT_LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_duration_seconds, Some(15));
    assert!(lease.lease_transitions.unwrap_or(0) >= 2, "{lease:?}");
    standby.stop().await;
    assert_eq!(
        holder(&leases).await,
        None,
        "the last leader released the lease"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crashed_leader_is_replaced_only_after_the_lease_expires() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("leader-crash").await;
    let client = cluster.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());

    let mut a = Candidate::spawn(client.clone(), ns.name(), "candidate-a");
    let mut b = Candidate::spawn(client.clone(), ns.name(), "candidate-b");
    let (first, _) = wait_for_leader(&[&a, &b], FIRST_LEADER_WITHIN).await;
    let (leader, standby) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let crashed = Instant::now();
    leader.crash().await;
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(leader.identity.as_str())
    );

    // The last renewal was at most one renew period (5 s) before the crash, and the
    // standby waits a full lease duration (15 s) after seeing it (≤ 2 s late) and
    // retries every 2 s: ≥ 10 s, ≤ 19 s plus API latency.
    wait_for_leader(&[&*standby], Duration::from_secs(25)).await;
    let takeover = crashed.elapsed();
    eprintln!("crash: the standby took over {takeover:?} after the leader crashed");
    assert!(
        takeover >= Duration::from_secs(9),
        "lease stolen early: {takeover:?}"
    );
    assert!(
        takeover <= Duration::from_secs(22),
        "takeover took {takeover:?}"
    );
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(standby.identity.as_str())
    );
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_reports_loss_when_its_lease_is_taken() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("leader-loss").await;
    let client = cluster.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns.name());

    let mut a = Candidate::spawn(client.clone(), ns.name(), "candidate-a");
    wait_for_leader(&[&a], FIRST_LEADER_WITHIN).await;

    // Someone else (an operator of another version, a human) takes the Lease.
    let mut lease = leases.get(DEFAULT_LEASE_NAME).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".to_owned());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases
        .replace(DEFAULT_LEASE_NAME, &PostParams::default(), &lease)
        .await
        .unwrap();
    let taken = Instant::now();

    // The next renewal (≤ 5 s) notices and the leader steps down.
    let rx = a.leading.as_mut().unwrap();
    tokio::time::timeout(Duration::from_secs(8), rx.wait_for(|l| !*l))
        .await
        .expect("leader did not notice its lease was taken")
        .unwrap();
    assert!(taken.elapsed() <= Duration::from_secs(8));
    assert_eq!(holder(&leases).await.as_deref(), Some("intruder"));
    // It stays a candidate and does not steal the (unexpired) lease back.
    assert!(
        sample(&[&a], Duration::from_secs(5), |s| s[0])
            .await
            .is_none()
    );
    a.stop().await;
}

/// A TCP proxy to the apiserver that can turn into a black hole: once cut, it keeps
/// every connection open and forwards nothing, so requests hang (a network partition).
struct Partition {
    addr: std::net::SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(forward(cr, sw, cut_rx.clone()));
                tokio::spawn(forward(sr, cw, cut_rx.clone()));
            }
        });
        Self { addr, cut, accept }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until EOF; once cut, holds both open and copies nothing.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *cut.borrow() {
            let _ = cut.wait_for(|c| !*c).await; // never: the proxy stays cut
            return;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            },
            _ = cut.changed() => {}
        }
    }
}

/// An admin client that reaches the apiserver through `proxy`.
async fn client_via(cluster: &Cluster, proxy: std::net::SocketAddr) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    // The apiserver's certificate names 127.0.0.1, so TLS verifies through the proxy.
    config.cluster_url = format!("https://{proxy}").parse().unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_leader_steps_down_before_the_standby_takes_over() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("leader-partition").await;
    let client = cluster.client().await;
    let upstream = cluster
        .apiserver_url()
        .trim_start_matches("https://")
        .to_owned();
    let partition = Partition::start(upstream).await;

    let mut a = Candidate::spawn(
        client_via(cluster, partition.addr).await,
        ns.name(),
        "cut-off",
    );
    wait_for_leader(&[&a], FIRST_LEADER_WITHIN).await;
    let mut b = Candidate::spawn(client.clone(), ns.name(), "standby");
    // b sees a renew at least once before the cut.
    assert!(
        sample(&[&a, &b], Duration::from_secs(6), |s| !s[0])
            .await
            .is_none()
    );

    partition.cut();
    let cut = Instant::now();
    sample(&[&a, &b], Duration::from_secs(15), |s| !s[0]).await;
    let stepped_down = cut.elapsed();
    assert!(
        !a.is_leading(),
        "the cut-off leader still leads after {stepped_down:?}"
    );
    assert!(
        stepped_down <= Duration::from_secs(11),
        "stepped down after {stepped_down:?}"
    );
    // The standby takes over only once the lease has expired, never overlapping.
    wait_for_leader(&[&a, &b], Duration::from_secs(20)).await;
    assert!(b.is_leading());
    let takeover = cut.elapsed();
    assert!(
        takeover > stepped_down,
        "takeover {takeover:?} before step-down {stepped_down:?}"
    );
    eprintln!(
        "partition: leader stepped down after {stepped_down:?}, standby took over after {takeover:?}"
    );
    a.crash().await; // its requests hang forever: nothing to release
    b.stop().await;
}
