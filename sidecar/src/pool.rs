//! Connections to one endpoint, reused across requests.
//!
//! HTTP/1.1 connections carry one request at a time: a connection goes back
//! to the idle list when the response body it carried has ended, right
//! where the body ends, so returning it costs no task and no timer. HTTP/2
//! connections are shared: one per endpoint, opened on first use and
//! replaced when it closes.
//!
//! This sits directly on hyper's connection API because the endpoint is
//! already chosen (by the balancer) and the pool therefore needs no key: a
//! general-purpose client would hash the authority, spawn a task per
//! response to return its connection and keep a timer per pool.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::tls::{ALPN_H2, ALPN_HTTP1};
use crate::upstream::{Body, BoxError, Target};

/// Idle HTTP/1.1 connections kept per endpoint; more are closed.
const MAX_IDLE: usize = 64;
/// An idle connection unused this long is closed: shorter than the header
/// read timeout of Weft's own servers (30 s by default, which also closes
/// idle kept-alive connections), so the pool normally closes a connection
/// before the peer does rather than racing it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(25);
/// Stale pooled connections tried before a request gives up on the pool
/// (each failure costs nothing: the request was not written).
const STALE_RETRIES: usize = 3;

/// Why a request did not get a response from the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The connections of one endpoint.
#[derive(Debug)]
pub struct Pool {
    target: Arc<Target>,
    idle: Arc<IdleList>,
    /// The shared HTTP/2 connection and its generation (which connection
    /// a failed request used, so that only that one is forgotten).
    http2: Mutex<Option<(u64, http2::SendRequest<Body>)>>,
    /// Held while an HTTP/2 connection is being opened, so that concurrent
    /// first requests share one connection instead of opening one each.
    http2_connecting: tokio::sync::Mutex<()>,
    http2_generation: std::sync::atomic::AtomicU64,
    /// Connections opened, counted as attempts start.
    connects: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct IdleList {
    /// Most recently used last: it is the one taken next, so few
    /// connections stay warm and the rest age out.
    entries: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready connection, most recently used first. Closed and expired
    /// connections are dropped on the way; one that is still finishing its
    /// last exchange stays for later.
    fn take(&self, now: Instant) -> Option<http1::SendRequest<Body>> {
        let mut entries = self.lock();
        let mut i = entries.len();
        while i > 0 {
            i -= 1;
            let e = &entries[i];
            if e.sender.is_closed() || now.saturating_duration_since(e.since) >= IDLE_TIMEOUT {
                entries.swap_remove(i);
            } else if e.sender.is_ready() {
                return Some(entries.swap_remove(i).sender);
            }
        }
        None
    }

    fn put(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() < MAX_IDLE {
            entries.push(Idle { sender, since: Instant::now() });
        }
    }

    fn sweep(&self, now: Instant) {
        self.lock().retain(|e| !e.sender.is_closed() && now.saturating_duration_since(e.since) < IDLE_TIMEOUT);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Pool {
    pub fn new(target: Arc<Target>) -> Self {
        Pool {
            target,
            idle: Arc::default(),
            http2: Mutex::new(None),
            http2_connecting: tokio::sync::Mutex::new(()),
            http2_generation: std::sync::atomic::AtomicU64::new(0),
            connects: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sends a request with an origin-form URI (HTTP/1.1) or an absolute
    /// one (HTTP/2), on a pooled connection when one is free.
    pub async fn send(&self, req: Request<Body>, use_h2: bool) -> Result<Response<Body>, SendError> {
        self.send_or_return(req, use_h2).await.map_err(|(e, _)| e)
    }

    /// [`Pool::send`], giving the request back with the error when it was
    /// never written (no connection could be opened), so that it can go to
    /// another endpoint.
    pub async fn send_or_return(
        &self,
        req: Request<Body>,
        use_h2: bool,
    ) -> Result<Response<Body>, (SendError, Option<Request<Body>>)> {
        if use_h2 { self.send_h2(req).await } else { self.send_h1(req).await }
    }

    async fn send_h1(&self, mut req: Request<Body>) -> Result<Response<Body>, (SendError, Option<Request<Body>>)> {
        let mut stale = 0;
        loop {
            let pooled = if stale < STALE_RETRIES { self.idle.take(Instant::now()) } else { None };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(s) => s,
                None => match self.connect_h1().await {
                    Ok(s) => s,
                    Err(e) => return Err((e, Some(req))),
                },
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.pooled_response(resp, sender)),
                Err(mut e) => match e.take_message() {
                    // The pooled connection closed before the request was
                    // written: nothing was sent, so another may carry it.
                    Some(unsent) if reused => {
                        stale += 1;
                        req = unsent;
                    }
                    _ => return Err((SendError::Http(e.into_error()), None)),
                },
            }
        }
    }

    /// Connections opened so far (a request that opened one spent part of
    /// its time connecting, which is not the endpoint's latency).
    pub fn connects(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<Body>, SendError> {
        self.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let io = self.target.connect(ALPN_HTTP1).await.map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
        let addr = self.target.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(endpoint = %addr, error = %e, "HTTP/1.1 connection to endpoint ended");
            }
        });
        Ok(sender)
    }

    /// The response, with the connection going back to the idle list when
    /// its body ends (at once when it has none). A switched protocol keeps
    /// the connection for itself.
    fn pooled_response(&self, resp: Response<Incoming>, sender: http1::SendRequest<Body>) -> Response<Body> {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return resp.map(|b| b.map_err(BoxError::from).boxed());
        }
        if resp.body().is_end_stream() {
            self.idle.put(sender);
            return resp.map(|b| b.map_err(BoxError::from).boxed());
        }
        let idle = self.idle.clone();
        resp.map(|inner| PooledBody { inner, release: Some((idle, sender)) }.boxed())
    }

    async fn send_h2(&self, mut req: Request<Body>) -> Result<Response<Body>, (SendError, Option<Request<Body>>)> {
        let mut attempts = 0;
        loop {
            let (generation, mut sender) = match self.h2_sender().await {
                Ok(s) => s,
                Err(e) => return Err((e, Some(req))),
            };
            attempts += 1;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
                Err(mut e) => match e.take_message() {
                    // The connection went away (GOAWAY) before taking the
                    // request: open a new one, once.
                    Some(unsent) if attempts < 2 => {
                        self.forget_h2(generation);
                        req = unsent;
                    }
                    _ => return Err((SendError::Http(e.into_error()), None)),
                },
            }
        }
    }

    fn current_h2(&self) -> Option<(u64, http2::SendRequest<Body>)> {
        self.http2.lock().unwrap_or_else(|e| e.into_inner()).as_ref().filter(|(_, s)| !s.is_closed()).cloned()
    }

    fn forget_h2(&self, generation: u64) {
        let mut slot = self.http2.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    async fn h2_sender(&self) -> Result<(u64, http2::SendRequest<Body>), SendError> {
        if let Some(s) = self.current_h2() {
            return Ok(s);
        }
        let _connecting = self.http2_connecting.lock().await;
        if let Some(s) = self.current_h2() {
            return Ok(s);
        }
        self.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let io = self.target.connect(ALPN_H2).await.map_err(SendError::Connect)?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::Handshake)?;
        let addr = self.target.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %addr, error = %e, "HTTP/2 connection to endpoint ended");
            }
        });
        let generation = self.http2_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.http2.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, sender.clone()));
        Ok((generation, sender))
    }

    /// Closes idle connections past their timeout.
    pub fn sweep(&self, now: Instant) {
        self.idle.sweep(now);
    }

    /// Idle HTTP/1.1 connections held.
    pub fn idle_http1(&self) -> usize {
        self.idle.len()
    }
}

/// A response body that hands its connection back when it ends. Dropped
/// before its end, it drops the connection too (hyper then closes it, as
/// the rest of the body can no longer be read).
struct PooledBody {
    inner: Incoming,
    release: Option<(Arc<IdleList>, http1::SendRequest<Body>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((idle, sender)) = self.release.take() {
            idle.put(sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.release = None;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
