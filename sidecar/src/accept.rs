//! What an accept loop does when `accept` fails.
//!
//! Most failures are transient, but some persist: out of file descriptors
//! (`EMFILE`/`ENFILE`) or memory, `accept` fails again at once for as long
//! as the condition lasts. Retrying immediately spins a core and starves
//! the connections already open; so each failure waits, doubling from
//! [`MIN_DELAY`] to [`MAX_DELAY`], and a success resets the wait. Failures
//! are counted per listener and logged at most once per streak.

use std::io;
use std::time::Duration;

use crate::metrics::{ListenerLabels, Metrics};

/// The first wait after a failure.
pub const MIN_DELAY: Duration = Duration::from_millis(10);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// The backoff state of one accept loop.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Option<Duration>,
}

impl AcceptBackoff {
    pub fn new(listener: &'static str) -> Self {
        AcceptBackoff { listener, delay: None }
    }

    /// A connection was accepted: the next failure starts a new streak.
    pub fn accepted(&mut self) {
        self.delay = None;
    }

    /// The wait after this failure; the first of a streak is logged.
    pub fn next_delay(&mut self, error: &io::Error, metrics: &Metrics) -> Duration {
        metrics.accept_errors.get_or_create(&ListenerLabels { listener: self.listener }).inc();
        let delay = match self.delay {
            None => {
                tracing::warn!(
                    listener = self.listener,
                    %error,
                    out_of_descriptors = is_fd_exhaustion(error),
                    "accept failed; backing off while it keeps failing"
                );
                MIN_DELAY
            }
            Some(d) => (d * 2).min(MAX_DELAY),
        };
        self.delay = Some(delay);
        delay
    }

    /// Counts, logs and waits after a failed accept.
    pub async fn failed(&mut self, error: &io::Error, metrics: &Metrics) {
        let delay = self.next_delay(error, metrics);
        tokio::time::sleep(delay).await;
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE and ENFILE.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_limit_and_reset_on_success() {
        let metrics = Metrics::default();
        let emfile = io::Error::from_raw_os_error(24);
        let mut b = AcceptBackoff::new("admin");
        let waits: Vec<Duration> = (0..10).map(|_| b.next_delay(&emfile, &metrics)).collect();
        assert_eq!(waits[0], MIN_DELAY);
        assert_eq!(waits[1], MIN_DELAY * 2);
        assert_eq!(*waits.last().unwrap(), MAX_DELAY);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        b.accepted();
        assert_eq!(b.next_delay(&emfile, &metrics), MIN_DELAY);
        let (_, text) = metrics.encode(None);
        assert!(text.contains("weft_proxy_accept_errors_total{listener=\"admin\"} 11"), "{text}");
    }
}
