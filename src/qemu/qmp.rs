//! A small QMP client: line JSON over a socket, typed commands from `qapi`'s generated structs,
//! replies matched to requests by id, events kept as plain `{event, data}`.
//!
//! qapi's own stream deserialises events into its schema's enum and fails on events the schema
//! lacks (QEMU here may be newer than the schema). Here events stay untyped, so an unknown event
//! is just another event, and only command replies are typed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot, watch};

/// Longest QMP line accepted; QEMU's replies are far shorter.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// A QMP event, as QEMU sent it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// Event name, e.g. `SHUTDOWN`.
    pub event: String,
    /// Event payload (`null` when absent).
    #[serde(default)]
    pub data: Value,
}

/// What can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket I/O.
    #[error("QMP I/O")]
    Io(#[from] std::io::Error),
    /// QEMU did not greet like a QMP server.
    #[error("not a QMP greeting: {0}")]
    Greeting(String),
    /// QEMU refused a command.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        /// Command name.
        command: &'static str,
        /// QMP error class.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// A reply that does not fit the command's return type.
    #[error("unexpected reply to {command}")]
    Reply {
        /// Command name.
        command: &'static str,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The connection closed (QEMU exited).
    #[error("QMP connection closed")]
    Closed,
    /// QEMU did not answer in time (a hung QEMU must not hang the supervisor).
    #[error("QMP command {command} got no answer in {secs}s")]
    Timeout {
        /// Command name.
        command: &'static str,
        /// The limit, seconds.
        secs: u64,
    },
}

/// How long any QMP command may take to be answered. Long work (migration) is started by a
/// command that answers at once and reported by events, so this is generous.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The next event from `events`. A burst that overflowed the receiver's buffer is logged and
/// skipped, not taken for the end of the stream; `None` only once the connection is gone.
pub async fn next_event(events: &mut broadcast::Receiver<Event>) -> Option<Event> {
    loop {
        match events.recv().await {
            Ok(ev) => return Some(ev),
            Err(broadcast::error::RecvError::Lagged(missed)) => tracing::warn!(missed, "QMP events came faster than they were read; some were skipped"),
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

type Reply = Result<Value, (String, String)>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A negotiated QMP connection.
pub struct Qmp {
    writer: tokio::sync::Mutex<Writer>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<Event>,
    closed: watch::Receiver<bool>,
    greeting: Value,
}

impl Qmp {
    /// Reads the greeting, starts the reader and leaves capabilities negotiation mode.
    pub async fn handshake<S>(stream: S) -> Result<Qmp, QmpError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read);
        let mut first = String::new();
        read_line(&mut lines, &mut first).await?;
        let greeting: Value = serde_json::from_str(&first).map_err(|_| QmpError::Greeting(first.clone()))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(first));
        }
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(256);
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(read_loop(lines, pending.clone(), events.clone(), closed_tx));
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(Box::new(write)),
            pending,
            next_id: AtomicU64::new(1),
            events,
            closed,
            greeting,
        };
        qmp.execute_raw("qmp_capabilities", Value::Null, COMMAND_TIMEOUT).await?;
        Ok(qmp)
    }

    /// Connects to a QMP unix socket.
    pub async fn connect(path: &std::path::Path) -> Result<Qmp, QmpError> {
        Self::handshake(tokio::net::UnixStream::connect(path).await?).await
    }

    /// QEMU's greeting (version, capabilities).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Events from now on. Subscribe before the command whose event you await.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Resolves when the connection is gone (QEMU exited or closed it).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Runs a typed command (one of `qapi::qmp`'s structs) and returns its typed result.
    pub async fn execute<C: qapi::Command>(&self, command: &C) -> Result<C::Ok, QmpError> {
        self.execute_within(command, COMMAND_TIMEOUT).await
    }

    /// As [`Qmp::execute`] with another limit.
    pub async fn execute_within<C: qapi::Command>(&self, command: &C, limit: std::time::Duration) -> Result<C::Ok, QmpError> {
        let arguments = serde_json::to_value(command).map_err(|source| QmpError::Reply { command: C::NAME, source })?;
        let value = self.execute_raw(C::NAME, arguments, limit).await?;
        serde_json::from_value(value).map_err(|source| QmpError::Reply { command: C::NAME, source })
    }

    async fn execute_raw(&self, name: &'static str, arguments: Value, limit: std::time::Duration) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = serde_json::json!({ "execute": name, "id": id });
        // Commands without arguments serialise to `{}` (or null): send none.
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            request["arguments"] = arguments;
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let mut line = request.to_string();
        line.push('\n');
        let sent = {
            let mut w = self.writer.lock().await;
            match w.write_all(line.as_bytes()).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = sent {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(if e.kind() == std::io::ErrorKind::BrokenPipe { QmpError::Closed } else { e.into() });
        }
        let Ok(answer) = tokio::time::timeout(limit, rx).await else {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(QmpError::Timeout { command: name, secs: limit.as_secs() });
        };
        match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err((class, desc))) => Err(QmpError::Command { command: name, class, desc }),
            Err(_) => Err(QmpError::Closed),
        }
    }
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, buf: &mut String) -> Result<(), QmpError> {
    buf.clear();
    let n = (&mut *r).take(MAX_LINE as u64).read_line(buf).await?;
    if n == 0 {
        return Err(QmpError::Closed);
    }
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// One message from QEMU, as far as kvci cares.
#[derive(Debug, PartialEq)]
enum Message {
    Reply { id: u64, result: Reply },
    Event(Event),
    Other,
}

fn classify(line: &str) -> Message {
    let Ok(v) = serde_json::from_str::<Value>(line) else { return Message::Other };
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        if let Some(ret) = v.get("return") {
            return Message::Reply { id, result: Ok(ret.clone()) };
        }
        if let Some(err) = v.get("error") {
            let field = |k| err.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            return Message::Reply { id, result: Err((field("class"), field("desc"))) };
        }
    }
    if v.get("event").is_some() {
        if let Ok(ev) = serde_json::from_value::<Event>(v) {
            return Message::Event(ev);
        }
    }
    Message::Other
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut lines: BufReader<R>,
    pending: Pending,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<bool>,
) {
    let mut line = String::new();
    while read_line(&mut lines, &mut line).await.is_ok() {
        match classify(&line) {
            Message::Reply { id, result } => {
                if let Some(tx) = pending.lock().expect("pending lock").remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Message::Event(ev) => {
                tracing::debug!(event = %ev.event, "qmp event");
                let _ = events.send(ev);
            }
            Message::Other => tracing::debug!(line = line.trim_end(), "qmp: ignored message"),
        }
    }
    // Dropping the senders fails every waiting request with `Closed`.
    pending.lock().expect("pending lock").clear();
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixStream;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}, "capabilities": []}}"#;

    /// A scripted QMP peer: answers each request with what `answer` returns for it.
    async fn fake_peer<F>(peer: UnixStream, answer: F)
    where
        F: Fn(&Value) -> Vec<String> + Send + 'static,
    {
        let (r, mut w) = peer.into_split();
        w.write_all(format!("{GREETING}\n").as_bytes()).await.unwrap();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).unwrap();
            for out in answer(&req) {
                if w.write_all(format!("{out}\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    fn ok(req: &Value, ret: Value) -> String {
        serde_json::json!({"return": ret, "id": req["id"]}).to_string()
    }

    #[tokio::test]
    async fn a_command_qemu_never_answers_times_out_and_the_connection_goes_on() {
        let (a, b) = UnixStream::pair().unwrap();
        tokio::spawn(fake_peer(b, |req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(req, serde_json::json!({}))],
            "stop" => vec![],
            _ => vec![ok(req, serde_json::json!({"running": true, "status": "running"}))],
        }));
        let qmp = Qmp::handshake(a).await.unwrap();
        let err = qmp.execute_within(&qapi::qmp::stop {}, std::time::Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, QmpError::Timeout { command: "stop", .. }), "{err:?}");
        assert!(qmp.execute(&qapi::qmp::query_status {}).await.unwrap().running, "later commands still work");
    }

    #[tokio::test]
    async fn a_burst_of_events_is_skipped_not_taken_for_the_end() {
        let (tx, mut rx) = broadcast::channel(2);
        for i in 0..5 {
            tx.send(Event { event: format!("E{i}"), data: Value::Null }).unwrap();
        }
        assert_eq!(next_event(&mut rx).await.unwrap().event, "E3", "the oldest were dropped, the rest read");
        assert_eq!(next_event(&mut rx).await.unwrap().event, "E4");
        drop(tx);
        assert!(next_event(&mut rx).await.is_none());
    }

    #[tokio::test]
    async fn typed_command_gets_typed_reply() {
        let (a, b) = UnixStream::pair().unwrap();
        tokio::spawn(fake_peer(b, |req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(req, serde_json::json!({}))],
            "query-status" => vec![ok(req, serde_json::json!({"running": true, "status": "running"}))],
            other => panic!("unexpected {other}"),
        }));
        let qmp = Qmp::handshake(a).await.unwrap();
        let status = qmp.execute(&qapi::qmp::query_status {}).await.unwrap();
        assert!(status.running);
        assert_eq!(qmp.greeting()["QMP"]["version"]["qemu"]["major"], 10);
    }

    #[tokio::test]
    async fn unknown_event_does_not_break_the_connection() {
        let (a, b) = UnixStream::pair().unwrap();
        tokio::spawn(fake_peer(b, |req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(req, serde_json::json!({}))],
            _ => vec![
                r#"{"event": "SOME_EVENT_FROM_QEMU_42", "data": {"x": [1, 2]}, "timestamp": {"seconds": 1, "microseconds": 2}}"#.into(),
                "garbage that is not json".into(),
                ok(req, serde_json::json!({"running": false, "status": "paused"})),
            ],
        }));
        let qmp = Qmp::handshake(a).await.unwrap();
        let mut events = qmp.events();
        let status = qmp.execute(&qapi::qmp::query_status {}).await.unwrap();
        assert!(!status.running);
        let ev = events.recv().await.unwrap();
        assert_eq!(ev.event, "SOME_EVENT_FROM_QEMU_42");
        assert_eq!(ev.data["x"][1], 2);
        // Still usable afterwards.
        assert!(!qmp.execute(&qapi::qmp::query_status {}).await.unwrap().running);
    }

    #[tokio::test]
    async fn replies_are_matched_by_id_not_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let held: Arc<Mutex<Option<Value>>> = Arc::default();
        tokio::spawn(fake_peer(b, move |req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(req, serde_json::json!({}))],
            // Hold the first query, answer both when the second arrives, second first.
            _ => match held.lock().unwrap().replace(req.clone()) {
                None => vec![],
                Some(first) => vec![
                    ok(req, serde_json::json!({"running": false, "status": "paused"})),
                    ok(&first, serde_json::json!({"running": true, "status": "running"})),
                ],
            },
        }));
        let qmp = Qmp::handshake(a).await.unwrap();
        let (first, second) =
            tokio::join!(qmp.execute(&qapi::qmp::query_status {}), async {
                tokio::task::yield_now().await;
                qmp.execute(&qapi::qmp::query_status {}).await
            });
        assert!(first.unwrap().running);
        assert!(!second.unwrap().running);
    }

    #[tokio::test]
    async fn qemu_errors_carry_class_and_description() {
        let (a, b) = UnixStream::pair().unwrap();
        tokio::spawn(fake_peer(b, |req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ok(req, serde_json::json!({}))],
            _ => vec![serde_json::json!({"error": {"class": "GenericError", "desc": "nope"}, "id": req["id"]}).to_string()],
        }));
        let qmp = Qmp::handshake(a).await.unwrap();
        let err = qmp.execute(&qapi::qmp::system_powerdown {}).await.unwrap_err();
        assert_eq!(err.to_string(), "QMP command system_powerdown failed: GenericError: nope");
    }

    #[tokio::test]
    async fn peer_going_away_fails_pending_commands() {
        let (a, b) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let (r, mut w) = b.into_split();
            w.write_all(format!("{GREETING}\n").as_bytes()).await.unwrap();
            let mut lines = BufReader::new(r).lines();
            let req: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
            w.write_all(format!("{}\n", ok(&req, serde_json::json!({}))).as_bytes()).await.unwrap();
            let _ = lines.next_line().await; // read the next request, then hang up
        });
        let qmp = Qmp::handshake(a).await.unwrap();
        let err = qmp.execute(&qapi::qmp::query_status {}).await.unwrap_err();
        assert!(matches!(err, QmpError::Closed), "{err:?}");
        qmp.closed().await;
    }

    #[tokio::test]
    async fn non_qmp_greeting_is_refused() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"QEMU 10.0.2 monitor - type 'help'\n").await.unwrap();
        assert!(matches!(Qmp::handshake(a).await, Err(QmpError::Greeting(_))));
    }

    #[test]
    fn classify_handles_every_shape() {
        assert_eq!(classify("not json"), Message::Other);
        assert_eq!(classify(r#"{"return": {}}"#), Message::Other); // no id: not ours
        assert!(matches!(classify(r#"{"event": "STOP"}"#), Message::Event(e) if e.data.is_null()));
        assert!(matches!(classify(r#"{"id": 3, "return": 1}"#), Message::Reply { id: 3, .. }));
    }
}
