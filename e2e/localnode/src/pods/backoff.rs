//! Container restart back-off.

use std::time::Duration;

/// A container that ran this long without failing starts over at the initial delay.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Exponential restart delay: `initial`, doubling up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    last: Option<Duration>,
}

impl Backoff {
    /// A fresh back-off.
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            initial,
            cap: cap.max(initial),
            last: None,
        }
    }

    /// The delay before the next restart, given how long the last run lasted.
    pub fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= RESET_AFTER {
            self.last = None;
        }
        let d = match self.last {
            None => self.initial,
            Some(prev) => (prev * 2).min(self.cap),
        };
        self.last = Some(d);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(5));
        let short = s(2);
        let got: Vec<_> = (0..5).map(|_| b.next_delay(short)).collect();
        assert_eq!(got, vec![s(1), s(2), s(4), s(5), s(5)]);
        assert_eq!(b.next_delay(RESET_AFTER), s(1));
        assert_eq!(b.next_delay(short), s(2));
    }
}
