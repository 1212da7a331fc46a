//! What each open connection is doing, so the server can bound how long it may do it and,
//! at the connection cap, close the one that has waited longest without a request rather
//! than refuse a newcomer: a client holding a thousand idle sockets then only recycles its
//! own sockets, and `/health` keeps answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in progress and no byte of the next one yet (bounded by the keep-alive
    /// timeout).
    Idle,
    /// Bytes of a request head have arrived, the head is not complete (bounded by the
    /// header timeout).
    Headers,
    /// A request is being served (its body by the body timeout; the rest by the handler).
    Busy,
}

/// One connection's shared state: written by its I/O wrapper and its service, read by its
/// watchdog and by the accept loop when it looks for a connection to evict.
pub struct ConnState {
    phase: AtomicU8,
    /// Milliseconds since the registry's epoch when the phase last changed.
    since_ms: AtomicU64,
    in_flight: AtomicUsize,
    evicted: AtomicBool,
    /// Wakes the watchdog when the phase changes or the connection is evicted.
    pub changed: Notify,
    epoch: Instant,
}

impl ConnState {
    fn new(epoch: Instant) -> Self {
        let s = Self {
            phase: AtomicU8::new(0),
            since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
            epoch,
        };
        s.set(Phase::Idle);
        s
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, p: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::SeqCst);
        self.phase.store(p as u8, Ordering::SeqCst);
        self.changed.notify_one();
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Idle,
            1 => Phase::Headers,
            _ => Phase::Busy,
        }
    }

    /// How long the connection has been in its phase.
    pub fn in_phase_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.since_ms.load(Ordering::SeqCst)),
        )
    }

    /// The I/O wrapper read bytes: the first of a request head if the connection was idle.
    pub fn on_read(&self) {
        if self.phase() == Phase::Idle && self.in_flight.load(Ordering::SeqCst) == 0 {
            self.set(Phase::Headers);
        }
    }

    /// A request head is complete and its handler starts.
    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.set(Phase::Busy);
    }

    /// A response has been sent (or abandoned).
    pub fn end_request(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.set(Phase::Idle);
        }
    }

    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

/// Ends a request on drop (the response body finished, or the handler was cancelled).
pub struct RequestGuard(pub Arc<ConnState>);

impl RequestGuard {
    pub fn new(conn: Arc<ConnState>) -> Self {
        conn.begin_request();
        Self(conn)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Every open connection, up to a cap.
pub struct Registry {
    cap: usize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    epoch: Instant,
}

/// A registered connection; dropping it unregisters it.
pub struct Registered {
    pub id: u64,
    pub state: Arc<ConnState>,
    registry: Arc<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Registers a new connection. At the cap, the connection that has waited longest
    /// without a request in progress (idle or still sending its head) is evicted to make
    /// room; when every connection is serving a request, `None`: the caller refuses it.
    /// Evicted connections count until their task has closed them, so the number of open
    /// sockets stays within the cap plus those being closed.
    pub fn register(self: &Arc<Self>) -> Option<Registered> {
        let mut conns = self.lock();
        let live = conns.values().filter(|c| !c.is_evicted()).count();
        if live >= self.cap {
            let victim = conns
                .values()
                .filter(|c| !c.is_evicted() && c.phase() != Phase::Busy)
                .max_by_key(|c| c.in_phase_for())?;
            victim.evict();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(self.epoch));
        conns.insert(id, state.clone());
        Some(Registered {
            id,
            state,
            registry: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_an_idle_connection_makes_room_and_busy_ones_do_not() {
        let r = Registry::new(2);
        let a = r.register().unwrap();
        let b = r.register().unwrap();
        let _ga = RequestGuard::new(a.state.clone());
        // `b` is idle: it is evicted for `c`.
        let c = r.register().unwrap();
        assert!(b.state.is_evicted());
        assert!(!a.state.is_evicted());
        drop(b);
        let _gc = RequestGuard::new(c.state.clone());
        // Both live connections serve requests: refused.
        assert!(r.register().is_none());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn phases_follow_reads_and_requests() {
        let r = Registry::new(4);
        let a = r.register().unwrap();
        assert_eq!(a.state.phase(), Phase::Idle);
        a.state.on_read();
        assert_eq!(a.state.phase(), Phase::Headers);
        let g = RequestGuard::new(a.state.clone());
        a.state.on_read();
        assert_eq!(a.state.phase(), Phase::Busy);
        drop(g);
        assert_eq!(a.state.phase(), Phase::Idle);
    }
}
