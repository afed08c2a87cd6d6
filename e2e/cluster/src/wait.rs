//! Bounded waits.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `probe` every `interval` until it returns `Ok(Some(value))`, for at most
/// `timeout`.
///
/// `Ok(None)` means "not yet"; an `Err` is treated as a transient observation (the
/// object may not exist yet, the server may be starting) and polling goes on. A
/// probe that itself hangs is cut off at the deadline. The timeout error says what
/// was awaited, for how long, and the last observation.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut polls = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        polls += 1;
        let last = match tokio::time::timeout(remaining, probe()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => "not yet".to_string(),
            Ok(Err(err)) => format!("{err:#}"),
            Err(_) => "the last probe was still running at the deadline".to_string(),
        };
        if Instant::now() + interval > deadline {
            bail!(
                "timed out after {:.1?} waiting for {what} ({polls} polls every {interval:?}); \
                 last observation: {last}",
                start.elapsed()
            );
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value() {
        let mut n = 0;
        let got = wait_for(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let n = n;
                async move { Ok((n >= 3).then_some(n)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn timeout_names_what_and_the_last_observation() {
        let err = wait_for::<(), _, _>(
            "the moon",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { anyhow::bail!("still cheese") },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the moon"), "{err}");
        assert!(err.contains("last observation: still cheese"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_probe_is_cut_off() {
        let started = Instant::now();
        let err = wait_for::<(), _, _>(
            "a hanging probe",
            Duration::from_millis(100),
            Duration::from_millis(10),
            std::future::pending,
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(err.to_string().contains("still running"), "{err}");
    }
}
