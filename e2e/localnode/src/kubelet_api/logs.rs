//! Container log files and their streaming.
//!
//! Layout (a contract with the pods module):
//! `<state_dir>/pods/<pod uid>/logs/<container>/<restart count>.log`, and
//! `<state_dir>/pods/by-name/<namespace>_<pod>` a symlink to the pod's uid directory.
//! The current log is the one with the highest restart count, the previous log the
//! one before it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::mpsc;

/// How often a followed log is polled for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Size of the chunks read from log files.
const CHUNK: usize = 32 * 1024;

/// The uid directory of a pod, from its by-name symlink.
pub fn pod_dir_by_name(state_dir: &Path, namespace: &str, pod: &str) -> Option<PathBuf> {
    let link = state_dir
        .join("pods/by-name")
        .join(format!("{namespace}_{pod}"));
    let target = std::fs::read_link(link).ok()?;
    let uid = target.file_name()?;
    Some(pod_dir(state_dir, &uid.to_string_lossy()))
}

/// The directory of the pod with this uid.
pub fn pod_dir(state_dir: &Path, uid: &str) -> PathBuf {
    state_dir.join("pods").join(uid)
}

/// The log directory of one container of a pod.
pub fn container_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(container)
}

/// Restart counts of the log files in a container's log directory.
pub fn restarts(container_dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(container_dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse().ok())
        {
            out.push(n);
        }
    }
    Ok(out)
}

/// The restart count of the current log, or of the previous one.
pub fn choose(mut restarts: Vec<u32>, previous: bool) -> Option<u32> {
    restarts.sort_unstable();
    restarts.dedup();
    let skip = usize::from(previous);
    restarts.iter().rev().nth(skip).copied()
}

/// The path of a container's log for one restart count.
pub fn log_file(container_dir: &Path, restart: u32) -> PathBuf {
    container_dir.join(format!("{restart}.log"))
}

/// Offset of the first of the last `lines` lines. A final newline ends the last line
/// rather than starting an empty one.
pub fn tail_start<R: Read + Seek>(r: &mut R, lines: u64) -> std::io::Result<u64> {
    let len = r.seek(SeekFrom::End(0))?;
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    if len > 0 {
        let mut last = [0u8];
        r.seek(SeekFrom::Start(len - 1))?;
        r.read_exact(&mut last)?;
        if last[0] == b'\n' {
            end -= 1; // the newline ending the last line
        }
    }
    let mut seen = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let chunk = &mut buf[..usize::try_from(end - start).unwrap_or(CHUNK)];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(chunk)?;
        if let Some(i) = nth_newline_from_end(chunk, lines - seen) {
            return Ok(start + i as u64 + 1);
        }
        seen += bytecount(chunk);
        end = start;
    }
    Ok(0)
}

/// Index of the `n`th newline counted from the end of `chunk`, if it has that many.
fn nth_newline_from_end(chunk: &[u8], n: u64) -> Option<usize> {
    let n = usize::try_from(n).ok()?.checked_sub(1)?;
    chunk
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n)
        .map(|(i, _)| i)
}

/// Number of newlines in `chunk`.
fn bytecount(chunk: &[u8]) -> u64 {
    chunk.iter().filter(|b| **b == b'\n').count() as u64
}

/// What to stream from a log file.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The log file.
    pub file: PathBuf,
    /// Offset to start at.
    pub start: u64,
    /// Stop after this many bytes.
    pub limit: Option<u64>,
    /// Keep streaming appended bytes until the pod directory disappears or a newer
    /// log (the container restarted) appears.
    pub follow: Option<Follow>,
}

/// When a followed log ends.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The pod's directory: when removed, the pod is gone.
    pub pod_dir: PathBuf,
    /// The container's log directory and the restart being followed.
    pub container_dir: PathBuf,
    /// The restart count being followed.
    pub restart: u32,
}

impl Follow {
    /// Whether the followed container instance is over.
    fn ended(&self) -> bool {
        !self.pod_dir.exists()
            || restarts(&self.container_dir)
                .map(|r| r.iter().any(|n| *n > self.restart))
                .unwrap_or(true)
    }
}

/// Sends the log bytes to `tx` until done or until the receiver goes away.
pub async fn pump(s: Stream, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    if let Err(e) = pump_inner(&s, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn pump_inner(s: &Stream, tx: &mpsc::Sender<std::io::Result<Bytes>>) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(&s.file).await?;
    file.seek(SeekFrom::Start(s.start)).await?;
    let mut left = s.limit.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; CHUNK];
    let mut last_round = false;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let n = file.read(&mut buf[..want]).await?;
        if n > 0 {
            left -= n as u64;
            if tx
                .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return Ok(()); // the client went away
            }
            continue;
        }
        let Some(follow) = &s.follow else {
            return Ok(());
        };
        if last_round {
            return Ok(());
        }
        // Read what was written before the end was noticed, then stop.
        last_round = follow.ended();
        if !last_round {
            tokio::select! {
                () = tx.closed() => return Ok(()),
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail(text: &str, n: u64) -> String {
        let start = tail_start(&mut Cursor::new(text.as_bytes()), n).unwrap();
        text[usize::try_from(start).unwrap()..].to_owned()
    }

    #[test]
    fn tail_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", 1), "c\n");
        assert_eq!(tail("a\nb\nc\n", 3), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc", 1), "c");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\n\n\n", 2), "\n\n");
        assert_eq!(tail("a\nb\n", 0), "");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn tail_spans_chunks() {
        let line = "x".repeat(1000) + "\n";
        let text = line.repeat(100);
        assert_eq!(tail(&text, 40), line.repeat(40));
    }

    #[test]
    fn chooses_current_and_previous() {
        assert_eq!(choose(vec![0, 2, 1], false), Some(2));
        assert_eq!(choose(vec![0, 2, 1], true), Some(1));
        assert_eq!(choose(vec![3], true), None);
        assert_eq!(choose(vec![], false), None);
    }

    #[test]
    fn finds_logs_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();
        let pod = pod_dir(state, "uid-1");
        let dir = container_dir(&pod, "app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(state.join("pods/by-name")).unwrap();
        std::os::unix::fs::symlink("../uid-1", state.join("pods/by-name/ns_web")).unwrap();
        for n in [0, 1, 10] {
            std::fs::write(log_file(&dir, n), "x").unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        assert_eq!(pod_dir_by_name(state, "ns", "web"), Some(pod.clone()));
        assert_eq!(pod_dir_by_name(state, "ns", "other"), None);
        assert_eq!(choose(restarts(&dir).unwrap(), false), Some(10));
        assert_eq!(choose(restarts(&dir).unwrap(), true), Some(1));
    }

    async fn collect(mut rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn streams_with_limit_and_follows_until_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = pod_dir(tmp.path(), "u");
        let dir = container_dir(&pod, "c");
        std::fs::create_dir_all(&dir).unwrap();
        let file = log_file(&dir, 0);
        std::fs::write(&file, "one\ntwo\n").unwrap();

        let (tx, rx) = mpsc::channel(4);
        let s = Stream {
            file: file.clone(),
            start: 4,
            limit: Some(2),
            follow: None,
        };
        tokio::spawn(pump(s, tx));
        assert_eq!(collect(rx).await, b"tw");

        let (tx, rx) = mpsc::channel(4);
        let follow = Follow {
            pod_dir: pod.clone(),
            container_dir: dir.clone(),
            restart: 0,
        };
        let s = Stream {
            file: file.clone(),
            start: 0,
            limit: None,
            follow: Some(follow),
        };
        let task = tokio::spawn(collect(rx));
        tokio::spawn(pump(s, tx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"three\n")
            .unwrap();
        std::fs::write(log_file(&dir, 1), "").unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, b"one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn follow_stops_when_the_pod_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = pod_dir(tmp.path(), "u");
        let dir = container_dir(&pod, "c");
        std::fs::create_dir_all(&dir).unwrap();
        let file = log_file(&dir, 0);
        std::fs::write(&file, "x\n").unwrap();
        let (tx, rx) = mpsc::channel(4);
        let follow = Follow {
            pod_dir: pod.clone(),
            container_dir: dir,
            restart: 0,
        };
        tokio::spawn(pump(
            Stream {
                file,
                start: 0,
                limit: None,
                follow: Some(follow),
            },
            tx,
        ));
        let task = tokio::spawn(collect(rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::remove_dir_all(&pod).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, b"x\n");
    }
}
