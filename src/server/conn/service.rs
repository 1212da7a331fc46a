//! The router as one connection's hyper service: each request gets the client's address
//! (`ConnectInfo<SocketAddr>`, as axum::serve gave it), a body deadline, and a guard that
//! keeps the connection busy until its response is done. While the server drains, every
//! response says `Connection: close`, so keep-alive clients reconnect (to another replica).

use super::bodies::{DeadlineBody, GuardedBody};
use super::registry::{ConnState, RequestGuard};
use crate::server::shutdown::Shutdown;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tower_service::Service;

pub struct ConnService {
    app: Router,
    remote: SocketAddr,
    state: Arc<ConnState>,
    body_timeout: Duration,
    draining: Shutdown,
}

impl ConnService {
    pub fn new(
        app: Router,
        remote: SocketAddr,
        state: Arc<ConnState>,
        body_timeout: Duration,
        draining: Shutdown,
    ) -> Self {
        Self {
            app,
            remote,
            state,
            body_timeout,
            draining,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::new(self.state.clone());
        let timeout = self.body_timeout;
        let mut req = req.map(|b| Body::new(DeadlineBody::new(b, timeout)));
        req.extensions_mut().insert(ConnectInfo(self.remote));
        let mut app = self.app.clone();
        let draining = self.draining.clone();
        Box::pin(async move {
            let mut resp = match app.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if draining.reason().is_some() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp.map(|b| Body::new(GuardedBody::new(b, guard))))
        })
    }
}
