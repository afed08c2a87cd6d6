//! Test vectors of the ring's key hash, from PostgreSQL 15's `hashtextextended(k, 0)`,
//! and a live cross-check against a throwaway PostgreSQL when one is installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ringmaster::ring::{hash_bytes_extended, hash_tag, key_hash};

/// One vector: the key, its byte length, `hashtextextended(key, 0)` as PostgreSQL
/// prints it (signed), the same 64 bits as hex, and the ring position after the
/// hash-tag rule (`key_hash`).
struct Vector {
    key: &'static str,
    len: usize,
    signed: i64,
    hex: u64,
    key_hash: u64,
}

const fn v(key: &'static str, len: usize, signed: i64, hex: u64, key_hash: u64) -> Vector {
    Vector {
        key,
        len,
        signed,
        hex,
        key_hash,
    }
}

/// `select k, hashtextextended(k, 0), lpad(to_hex(hashtextextended(k, 0)), 16, '0')`
/// on PostgreSQL 15.
#[rustfmt::skip]
const VECTORS: &[Vector] = &[
    v("", 0, -6939563903564495251, 0x9fb1b765a7ea466d, 0x9fb1b765a7ea466d),
    v("a", 1, 3591986179850072241, 0x31d94c66401370b1, 0x31d94c66401370b1),
    v("z", 1, -3868743897552952514, 0xca4f75ec3365633e, 0xca4f75ec3365633e),
    v("hello", 5, 3449563369152288809, 0x2fdf4f9b90859829, 0x2fdf4f9b90859829),
    v("user1000", 8, -4394116920489932257, 0xc304f5f11caa0a1f, 0xc304f5f11caa0a1f),
    v("123456789", 9, 5342912370613372840, 0x4a25d67e3c7347a8, 0x4a25d67e3c7347a8),
    v("0123456789", 10, -3778403198889400811, 0xcb906a4f37ff6615, 0xcb906a4f37ff6615),
    v("hello world", 11, 6947366892317592103, 0x606a01613ce64a27, 0x606a01613ce64a27),
    v("hello world!", 12, -2866487628948787489, 0xd83830b05374aedf, 0xd83830b05374aedf),
    v("hello, world!", 13, 3799359542181020837, 0x34ba095fadb0c4a5, 0x34ba095fadb0c4a5),
    v("abcdefghijklmnopqrstuvwx", 24, -1933194731779935345, 0xe52be9a24a99b38f, 0xe52be9a24a99b38f),
    v("abcdefghijklmnopqrstuvwxy", 25, 5649064133428767341, 0x4e6581e63a6bea6d, 0x4e6581e63a6bea6d),
    v("The quick brown fox jumps over the lazy dog", 43, 2182139051089226439, 0x1e4883e7ceae6ac7, 0x1e4883e7ceae6ac7),
    v("héllo wörld ☃", 17, -36145998458369313, 0xff7f9567e9d64adf, 0xff7f9567e9d64adf),
    v("😀 emoji key 𝄞", 19, -7651301554850758133, 0x95d11dc631ba020b, 0x95d11dc631ba020b),
    v("{user1000}.following", 20, -3630925898810361294, 0xcd9c5c21eba47a32, 0xc304f5f11caa0a1f),
    v("{user1000}.followers", 20, 3025521985201222626, 0x29fcd037340db3e2, 0xc304f5f11caa0a1f),
    v("key:{a}", 7, 7631855395702284018, 0x69e9cc0c0dfb9ef2, 0x31d94c66401370b1),
    v("foo{}bar", 8, 1228930438180503252, 0x110e09b8ed69fed4, 0x110e09b8ed69fed4),
    v("{}{x}", 5, 6691229275145201619, 0x5cdc0592f7b967d3, 0x5cdc0592f7b967d3),
];

#[test]
fn vectors_match_postgres() {
    for vector in VECTORS {
        let bytes = vector.key.as_bytes();
        assert_eq!(bytes.len(), vector.len, "{:?}", vector.key);
        assert_eq!(
            vector.signed as u64, vector.hex,
            "table row {:?}",
            vector.key
        );
        let hash = hash_bytes_extended(bytes, 0);
        assert_eq!(hash, vector.hex, "hash of {:?}: {hash:#018x}", vector.key);
        assert_eq!(hash as i64, vector.signed, "{:?}", vector.key);
        assert_eq!(
            key_hash(bytes),
            vector.key_hash,
            "key_hash of {:?}",
            vector.key
        );
        assert_eq!(
            hash_bytes_extended(hash_tag(bytes), 0),
            vector.key_hash,
            "{:?}",
            vector.key
        );
    }
}

/// splitmix64: a fixed-seed generator, so the random keys are the same in every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 200 keys of 0..64 characters: even ones ASCII (1..=127, PostgreSQL text has no NUL),
/// odd ones mixing ASCII with 2-, 3- and 4-byte UTF-8.
fn random_keys() -> Vec<String> {
    const WIDE: &[char] = &[
        'é', 'ö', 'ß', 'Ω', 'ж', '☃', '€', '漢', '字', '😀', '𝄞', '🦀',
    ];
    let mut rng = SplitMix(0x7269_6e67_6d61_7374);
    (0..200)
        .map(|i| {
            let len = rng.below(64);
            (0..len)
                .map(|_| {
                    if i % 2 == 1 && rng.below(2) == 0 {
                        WIDE[rng.below(WIDE.len() as u64) as usize]
                    } else {
                        char::from(1 + rng.below(127) as u8)
                    }
                })
                .collect()
        })
        .collect()
}

/// `initdb` on the PATH or in Debian's `/usr/lib/postgresql/<version>/bin`.
fn find_bindir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Runs a shell command as `nobody` when we are root (PostgreSQL refuses to run as
/// root), else as ourselves.
fn sh(as_nobody: bool, command: &str) -> Output {
    let output = if as_nobody {
        Command::new("su")
            .args(["-s", "/bin/sh", "nobody", "-c", command])
            .output()
    } else {
        Command::new("sh").args(["-c", command]).output()
    };
    output.unwrap_or_else(|e| panic!("running {command}: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A PostgreSQL server in a temporary directory, stopped when dropped (also on panic).
struct Postgres {
    bindir: PathBuf,
    dir: tempfile::TempDir,
    as_nobody: bool,
    port: u16,
}

const USER: &str = "ringvectors";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Postgres {
    fn start(bindir: PathBuf) -> Self {
        let as_nobody = nix::unistd::geteuid().is_root();
        let dir = tempfile::Builder::new()
            .prefix("ring-vectors-pg")
            .tempdir()
            .expect("temporary directory");
        if as_nobody {
            let nobody = nix::unistd::User::from_name("nobody")
                .expect("user lookup")
                .expect("running as root needs a user `nobody` to run PostgreSQL");
            nix::unistd::chown(dir.path(), Some(nobody.uid), Some(nobody.gid))
                .expect("chown the temporary directory to nobody");
        }
        let server = Self {
            bindir,
            dir,
            as_nobody,
            port: free_port(),
        };
        let initdb = format!(
            "{} -D {} -U {USER} -A trust -E UTF8 --locale=C --no-sync",
            quote(&server.bindir.join("initdb")),
            quote(&server.data()),
        );
        let output = sh(as_nobody, &initdb);
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Unix socket only, in the temporary directory; no waiting here (see `ready`).
        let start = format!(
            "{} -D {} -l {} -W -o \"-k {} -p {} -c listen_addresses= -c fsync=off\" start",
            quote(&server.bindir.join("pg_ctl")),
            quote(&server.data()),
            quote(&server.log()),
            quote(server.dir.path()),
            server.port,
        );
        let output = sh(as_nobody, &start);
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            server.log_text()
        );
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Connects, retrying until the server accepts connections or the timeout passes.
    async fn connect(&self) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user(USER)
            .dbname("postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!(
                    "PostgreSQL in {} not ready after {READY_TIMEOUT:?}: {error}\nserver log:\n{}",
                    self.dir.path().display(),
                    self.log_text()
                ),
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let stop = format!(
            "{} -D {} -m immediate -w -t 30 stop",
            quote(&self.bindir.join("pg_ctl")),
            quote(&self.data()),
        );
        let output = sh(self.as_nobody, &stop);
        if !output.status.success() {
            eprintln!(
                "pg_ctl stop: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}

#[tokio::test]
async fn live_postgres_agrees() {
    let Some(bindir) = find_bindir() else {
        eprintln!("skipped: no initdb on PATH or in /usr/lib/postgresql/*/bin");
        return;
    };
    let server = Postgres::start(bindir);
    let client = server.connect().await;

    let mut keys: Vec<String> = VECTORS.iter().map(|v| v.key.to_owned()).collect();
    keys.extend(random_keys());
    let tags: Vec<String> = keys
        .iter()
        .map(|k| {
            String::from_utf8(hash_tag(k.as_bytes()).to_vec())
                .expect("a tag of UTF-8 is UTF-8 here")
        })
        .collect();
    let rows = client
        .query(
            "select hashtextextended(k, 0), hashtextextended(t, 0) \
             from unnest($1::text[], $2::text[]) with ordinality as u(k, t, i) order by i",
            &[&keys, &tags],
        )
        .await
        .expect("hashtextextended query");
    assert_eq!(rows.len(), keys.len());
    for (key, row) in keys.iter().zip(&rows) {
        let (full, tagged): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            hash_bytes_extended(key.as_bytes(), 0) as i64,
            full,
            "hashtextextended({key:?}, 0)"
        );
        assert_eq!(key_hash(key.as_bytes()) as i64, tagged, "key_hash({key:?})");
    }
    eprintln!(
        "checked {} keys against PostgreSQL {}",
        keys.len(),
        server.bindir.display()
    );
}
