//! Watch streams: newline-delimited `{"type","object"}` events, from the
//! history ring (resume) or a snapshot (initial events), then live from the
//! per-type broadcast channel; selectors applied with ADDED/DELETED
//! transitions; bookmarks; 410 Expired as an ERROR event after HTTP 200;
//! `timeoutSeconds`; abrupt termination on `drop_watches`.

use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::{Body, Shared};
use crate::store::{Event, EventKind, at_version};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

#[derive(Debug, Clone)]
pub struct WatchParams {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub partial: bool,
    /// `group/version` requested (filled by [`start`]).
    pub api_version: String,
}

impl WatchParams {
    fn in_scope(&self, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| crate::util::namespace_of(obj) == ns)
            && self.labels.matches_object(obj)
            && self.fields.matches(obj)
    }

    fn render_obj(&self, obj: &Value) -> Value {
        let o = at_version(obj, &self.rt.api_version(&self.version));
        if self.partial { partial_metadata(&o) } else { o }
    }

    /// The event a watcher sees for a change, if any. The common case (the
    /// stored version, full objects, no type change by selectors) is encoded
    /// once per event and shared by every watcher.
    fn line(&self, ev: &Event) -> Option<Bytes> {
        let now_in = self.in_scope(&ev.object);
        let kind = match ev.kind {
            EventKind::Added => now_in.then_some("ADDED"),
            EventKind::Deleted => {
                let was = ev.old.as_deref().map(|o| self.in_scope(o)).unwrap_or(now_in);
                (was || now_in).then_some("DELETED")
            }
            EventKind::Modified => {
                let was = ev.old.as_deref().is_some_and(|o| self.in_scope(o));
                match (was, now_in) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }?;
        let same_version = ev.object.get("apiVersion").and_then(Value::as_str) == Some(self.api_version.as_str());
        if !self.partial && same_version && kind == ev.kind.as_str() {
            return Some(ev.encoded.get_or_init(|| encode(kind, &ev.object)).clone());
        }
        Some(encode(kind, &self.render_obj(&ev.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, av) = if self.partial {
            ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string())
        } else {
            (self.rt.kind.clone(), self.rt.api_version(&self.version))
        };
        encode("BOOKMARK", &json!({"kind": kind, "apiVersion": av, "metadata": meta}))
    }
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

fn encode(kind: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

type Frames = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// What a watch sends before live events, taken under the lock and encoded
/// outside it.
enum Initial {
    Snapshot(Vec<Arc<Value>>),
    History(Vec<Arc<Event>>),
}

/// Starts a watch; the returned body streams until the watch ends.
pub fn start(shared: &Arc<Shared>, mut p: WatchParams) -> Result<Body, ApiError> {
    p.api_version = p.rt.api_version(&p.version);
    let (initial, rx, start_rv, expired): (Initial, broadcast::Receiver<Arc<Event>>, u64, Option<String>) = {
        let st = shared.lock();
        let ks = st.kinds.get(&p.rt.key()).ok_or_else(|| ApiError::not_found(&p.rt.gr(), ""))?;
        let rx = ks.tx.subscribe();
        let rv_param = p.resource_version.as_deref().filter(|s| !s.is_empty());
        let from_snapshot = p.send_initial_events || rv_param.is_none() || rv_param == Some("0");
        if from_snapshot {
            let objs: Vec<Arc<Value>> = st.objects_in(&p.rt.key(), p.namespace.as_deref()).cloned().collect();
            (Initial::Snapshot(objs), rx, st.rv, None)
        } else {
            let r: u64 = rv_param.and_then(|s| s.parse().ok()).ok_or_else(|| {
                ApiError::bad_request(format!("invalid resource version: {}", rv_param.unwrap_or("")))
            })?;
            if r < ks.floor {
                (Initial::History(vec![]), rx, r, Some(format!("too old resource version: {r} ({})", ks.floor)))
            } else {
                let events: Vec<Arc<Event>> = ks.history.iter().filter(|e| e.rv > r).cloned().collect();
                let last = ks.history.back().map(|e| e.rv).unwrap_or(r).max(r);
                (Initial::History(events), rx, last, None)
            }
        }
    };
    let (tx, mut frx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let shared2 = shared.clone();
    tokio::spawn(async move {
        run(shared2, p, tx, initial, rx, start_rv, expired).await;
    });
    let stream = futures::stream::poll_fn(move |cx| frx.poll_recv(cx));
    Ok(http_body_util::StreamBody::new(stream).boxed_unsync())
}

async fn send(tx: &Frames, b: Bytes) -> bool {
    tx.send(Ok(Frame::data(b))).await.is_ok()
}

async fn run(
    shared: Arc<Shared>,
    p: WatchParams,
    tx: Frames,
    initial: Initial,
    mut rx: broadcast::Receiver<Arc<Event>>,
    start_rv: u64,
    expired: Option<String>,
) {
    if let Some(msg) = expired {
        let status = ApiError::expired(msg).to_status();
        let _ = send(&tx, encode("ERROR", &status)).await;
        return;
    }
    match initial {
        Initial::Snapshot(objs) => {
            for o in objs.iter().filter(|o| p.in_scope(o)) {
                if !send(&tx, encode("ADDED", &p.render_obj(o))).await {
                    return;
                }
            }
        }
        Initial::History(events) => {
            for line in events.iter().filter_map(|e| p.line(e)) {
                if !send(&tx, line).await {
                    return;
                }
            }
        }
    }
    let mut last = start_rv;
    if p.send_initial_events && !send(&tx, p.bookmark(last, true)).await {
        return;
    }
    let mut drops = shared.drop_tx.subscribe();
    drops.mark_unchanged();
    let interval = shared.bookmark_interval.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);
    let timeout = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => futures::future::pending::<()>().await,
        }
    };
    tokio::pin!(timeout);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last {
                        continue;
                    }
                    last = ev.rv;
                    if let Some(line) = p.line(&ev)
                        && !send(&tx, line).await {
                            return;
                        }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow: end abruptly; the client resumes from its
                    // last resourceVersion (or relists after a 410).
                    let _ = tx.send(Err(std::io::Error::other("watch consumer lagged"))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick(), if p.bookmarks => {
                let published = shared.published_rv.load(Ordering::SeqCst);
                loop {
                    match rx.try_recv() {
                        Ok(ev) => {
                            if ev.rv <= last {
                                continue;
                            }
                            last = ev.rv;
                            if let Some(line) = p.line(&ev)
                                && !send(&tx, line).await {
                                    return;
                                }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => {
                            let _ = tx.send(Err(std::io::Error::other("watch consumer lagged"))).await;
                            return;
                        }
                    }
                }
                last = last.max(published);
                if !send(&tx, p.bookmark(last, false)).await {
                    return;
                }
            }
            _ = drops.changed() => {
                let _ = tx.send(Err(std::io::Error::other("watch dropped by fault injection"))).await;
                return;
            }
            _ = &mut timeout => return,
            _ = tx.closed() => return,
        }
    }
}
