//! Watch streams: chunked JSON lines of ADDED, MODIFIED, DELETED, BOOKMARK and ERROR events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::objects::Filter;
use super::{Body, Call, table};
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::server::State;
use crate::store::{Event, EventType};

/// The server's default when the client gives no `timeoutSeconds` (its minimum request timeout).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where a watch starts: objects to announce as ADDED, events to replay, the live feed.
struct Start {
    initial: Vec<Value>,
    backlog: Vec<Arc<Event>>,
    rv: u64,
    live: broadcast::Receiver<Arc<Event>>,
}

/// How a watch ends and which bookmarks it gets.
struct Options {
    initial_end_bookmark: bool,
    bookmarks: bool,
    bookmark_every: Duration,
    timeout: Duration,
}

struct Stream {
    rt: &'static ResourceType,
    namespace: Option<String>,
    filter: Filter,
    as_table: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Stream {
    async fn send(&self, kind: &str, object: Value) -> bool {
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    fn render(&self, obj: &Value) -> Value {
        if self.as_table {
            table::table(self.rt, std::slice::from_ref(obj), None)
        } else {
            obj.clone()
        }
    }

    fn in_scope(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| crate::meta::namespace(obj) == ns)
    }

    /// The event this watcher sees for a change, if any: an object that starts matching the
    /// selectors is ADDED, one that stops matching is DELETED.
    async fn forward(&self, event: &Event) -> bool {
        if !std::ptr::eq(event.resource, self.rt) || !self.in_scope(&event.object) {
            return true;
        }
        let now = self.filter.matches(&event.object);
        let before = event.old.as_ref().is_some_and(|o| self.filter.matches(o));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Deleted, true, false) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return true,
        };
        self.send(kind, self.render(&event.object)).await
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata})
    }
}

fn expired(requested: u64, oldest: u64) -> Value {
    ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status()
}

pub(super) fn watch(state: Arc<State>, call: &Call) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_call(call)?;
    let rv_param = call.query.get("resourceVersion").unwrap_or("");
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let initial_events = call.query.flag("sendInitialEvents");
    let timeout = call
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let t = &call.target;
    let requested: Option<u64> =
        if rv_param.is_empty() || rv_param == "0" || initial_events {
            None
        } else {
            Some(rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?)
        };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let stream = Stream {
        rt: t.rt,
        namespace: t.namespace.clone(),
        filter,
        as_table: call.as_table,
        tx,
    };
    state.counters.add_watch();
    let options = Options {
        initial_end_bookmark: bookmarks && initial_events,
        bookmarks,
        bookmark_every: state.timings.bookmark_interval,
        timeout,
    };
    tokio::spawn(async move {
        let start = match requested {
            None => {
                let (initial, rv, live) = state
                    .store
                    .list_and_subscribe(stream.rt, stream.namespace.as_deref());
                Start {
                    initial,
                    backlog: Vec::new(),
                    rv,
                    live,
                }
            }
            Some(rv) => match state.store.subscribe(rv) {
                Ok(sub) => Start {
                    initial: Vec::new(),
                    backlog: sub.backlog,
                    rv,
                    live: sub.live,
                },
                Err(oldest) => {
                    stream.send("ERROR", expired(rv, oldest)).await;
                    return;
                }
            },
        };
        drop(state);
        run(stream, start, options).await;
    });
    let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::io::Error>(Frame::data(bytes)), rx))
    }));
    let mut resp = Response::new(body.boxed_unsync());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn run(stream: Stream, start: Start, options: Options) {
    let Start {
        initial,
        backlog,
        rv: start_rv,
        mut live,
    } = start;
    for obj in initial.iter().filter(|o| stream.filter.matches(o)) {
        if !stream.send("ADDED", stream.render(obj)).await {
            return;
        }
    }
    if options.initial_end_bookmark
        && !stream
            .send("BOOKMARK", stream.bookmark(start_rv, true))
            .await
    {
        return;
    }
    let mut last_rv = start_rv;
    for event in &backlog {
        last_rv = event.rv;
        if !stream.forward(event).await {
            return;
        }
    }
    let deadline = tokio::time::sleep(options.timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + options.bookmark_every,
        options.bookmark_every,
    );
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = stream.tx.closed() => return,
            _ = tick.tick(), if options.bookmarks => {
                if !stream.send("BOOKMARK", stream.bookmark(last_rv, false)).await {
                    return;
                }
            }
            event = live.recv() => match event {
                Ok(event) => {
                    if event.rv <= last_rv {
                        continue;
                    }
                    last_rv = event.rv;
                    if !stream.forward(&event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // A guess: a watcher too slow for the feed is cut off like one whose window expired.
                    stream.send("ERROR", expired(last_rv, last_rv + 1)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
