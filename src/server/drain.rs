//! The drain after a shutdown signal. The listener stays open (a load balancer that has not
//! yet seen the pod leave gets a fast 503 instead of a refused connection), so the server
//! cannot wait for connections to close: it waits for the API requests in flight to end.
//! This counts them, and when `--shutdown-timeout` passes it cuts the ones still running —
//! a stream then ends with an error event and `[DONE]`, a non-streamed request with a 503,
//! rather than a connection dropped mid-response.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, watch};

pub struct Drain {
    in_flight: AtomicUsize,
    idle: Notify,
    cut: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            cut: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// An API request started (its record was created).
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// An API request ended (answered, failed, or its client went away).
    pub fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no API request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The shutdown timeout passed: every request still running is to end now.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Resolves once [`Self::cut`] has been called (at once if it already was).
    pub async fn cut_signal(&self) {
        let mut rx = self.cut.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_the_last_request() {
        let d = Arc::new(Drain::default());
        d.idle().await;
        d.begin();
        d.begin();
        let w = tokio::spawn({
            let d = d.clone();
            async move { d.idle().await }
        });
        d.end();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!w.is_finished());
        d.end();
        tokio::time::timeout(Duration::from_secs(1), w)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn cut_reaches_waiters_and_late_comers() {
        let d = Arc::new(Drain::default());
        let w = tokio::spawn({
            let d = d.clone();
            async move { d.cut_signal().await }
        });
        d.cut();
        tokio::time::timeout(Duration::from_secs(1), w)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), d.cut_signal())
            .await
            .unwrap();
    }
}
