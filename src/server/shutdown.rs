//! Shutdown: a signal (SIGTERM/SIGINT), the engine thread dying, or a caller's request
//! starts it; the server then drains (see `drain.rs`: the listener stays open answering
//! 503, in-flight requests get up to --shutdown-timeout), stops accepting, and exits.

use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// SIGTERM or SIGINT: exit 0 after draining.
    Signal,
    /// The engine loop is gone: in-flight requests have failed; exit non-zero.
    EngineDied,
    /// Asked for by the embedding program (tests).
    Requested,
}

/// Starts and awaits shutdown; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(Arc<watch::Sender<Option<Reason>>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(Arc::new(watch::channel(None).0))
    }
}

impl Shutdown {
    /// Starts shutting down; the first reason given wins.
    pub fn trigger(&self, reason: Reason) {
        self.0.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn reason(&self) -> Option<Reason> {
        *self.0.borrow()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) -> Reason {
        let mut rx = self.0.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or(Reason::Requested),
            Err(_) => Reason::Requested,
        }
    }
}

/// Resolves on SIGTERM or SIGINT, naming the signal.
pub async fn signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                s = ctrl_c => s,
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => ctrl_c.await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_reason_wins() {
        let s = Shutdown::default();
        let w = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.trigger(Reason::EngineDied);
        s.trigger(Reason::Signal);
        assert_eq!(w.await.unwrap(), Reason::EngineDied);
        assert_eq!(s.reason(), Some(Reason::EngineDied));
        assert_eq!(s.wait().await, Reason::EngineDied);
    }
}
