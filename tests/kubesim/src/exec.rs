//! `pods/exec`: a command run in the pod's container root, its stdio carried over the
//! WebSocket channel protocol (v5 and v4).

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Body, Call};
use crate::channel::{self, CLOSE, RESIZE, STATUS, STDERR, STDIN, STDOUT, Socket, V4, V5};
use crate::controllers::kubelet;
use crate::error::ApiError;
use crate::faults::Direction;
use crate::meta;
use crate::resources::PODS;
use crate::sandbox::Role;
use crate::server::State;

/// The container a request names, or the pod's only one.
pub(crate) fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| meta::str_at(c, &["name"]))
                .collect()
        })
        .unwrap_or_default();
    let pod_name = meta::name(pod);
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

/// A running pod's container, checked for exec and port-forward.
pub(crate) fn running_pod(state: &State, call: &Call) -> Result<Value, ApiError> {
    let name = call.target.name.as_deref().unwrap_or("");
    let pod = state
        .store
        .get(&PODS, call.target.ns(), name)
        .ok_or_else(|| ApiError::not_found(&PODS, name))?;
    match meta::str_at(&pod, &["status", "phase"]).unwrap_or("") {
        "Running" => Ok(pod),
        phase @ ("Succeeded" | "Failed") => Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        ))),
        _ if pod.pointer("/spec/nodeName").is_none() => Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "unable to upgrade connection: container not found ({:?})",
            pick_container(&pod, call.query.get("container")).unwrap_or_default()
        ))),
    }
}

struct Session {
    state: Arc<State>,
    pod: Value,
    container: String,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    v5: bool,
}

pub(crate) async fn handle(
    state: Arc<State>,
    call: Call,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if call.target.sub.as_deref() == Some("attach") {
        // Containers run no main process here, so there is nothing to attach to (a guess at
        // what matters: snapfs never attaches).
        return Err(ApiError::bad_request("kubesim does not support attach"));
    }
    let pod = running_pod(&state, &call)?;
    let container = pick_container(&pod, call.query.get("container"))?;
    let command: Vec<String> = call
        .query
        .all("command")
        .into_iter()
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let (stdin, stdout, stderr) = (
        call.query.flag("stdin"),
        call.query.flag("stdout"),
        call.query.flag("stderr"),
    );
    if !stdin && !stdout && !stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let protocols: &[&'static str] = if state.faults.exec_v4_only() {
        &[V4]
    } else {
        &[V5, V4]
    };
    let up = channel::upgrade(req, protocols)?;
    state.counters.add_exec_session();
    let session = Session {
        state,
        pod,
        container,
        command,
        stdin,
        stdout,
        stderr,
        tty: call.query.flag("tty"),
        v5: up.protocol == V5,
    };
    let pending = up.pending;
    tokio::spawn(async move {
        if let Some(socket) = channel::accept(pending).await {
            session.run(socket).await;
        }
    });
    Ok(up.response)
}

fn piped(on: bool) -> Stdio {
    if on { Stdio::piped() } else { Stdio::null() }
}

async fn read_some<R: AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn spawn(&self) -> io::Result<Child> {
        let mut cmd = kubelet::container_command(
            &self.state,
            &self.pod,
            &self.container,
            &self.command,
            Role::Exec,
        )?;
        cmd.stdin(piped(self.stdin))
            .stdout(piped(self.stdout))
            .stderr(piped(self.stderr))
            .kill_on_drop(false);
        cmd.spawn()
    }

    /// The status frame's JSON for an exit status, as the kubelet reports it.
    fn exit_status(&self, status: ExitStatus) -> Value {
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        if code == 0 {
            return json!({"metadata": {}, "status": "Success"});
        }
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                self.command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        })
    }

    /// What a failed start looks like. A guess modelled on containerd's answer.
    fn start_failure(&self, err: &io::Error) -> Value {
        let why = if err.kind() == io::ErrorKind::NotFound {
            format!(
                "exec: {:?}: executable file not found in $PATH",
                self.command[0]
            )
        } else {
            err.to_string()
        };
        let message = format!(
            "Internal error occurred: error executing command in container: failed to exec in container: OCI runtime exec failed: exec failed: unable to start container process: {why}: unknown"
        );
        json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
               "code": 500, "details": {"causes": [{"message": message}]}})
    }

    async fn run(self, socket: Socket) {
        let (mut sink, mut stream) = socket.split();
        let mut child = match self.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::debug!(error = %e, command = ?self.command, "exec failed to start");
                let status = serde_json::to_vec(&self.start_failure(&e)).unwrap_or_default();
                let _ = sink
                    .send(Message::binary(channel::frame(STATUS, &status)))
                    .await;
                let _ = sink.send(channel::normal_close()).await;
                return;
            }
        };
        let mut stdin = child.stdin.take();
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
        let counters_state = self.state.clone();
        let v5 = self.v5;
        let reader = tokio::spawn(async move {
            // Bytes of stdin so far, for the fault that damages one of them.
            let mut stdin_at = 0u64;
            while let Some(msg) = stream.next().await {
                let data = match msg {
                    Ok(Message::Binary(data)) => data,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                match data.first().copied() {
                    Some(STDIN) => {
                        let delay = counters_state
                            .faults
                            .exec_delay(Direction::In, data.len() - 1);
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        counters_state.counters.add_exec_in(data.len() - 1);
                        let mut input = data[1..].to_vec();
                        if let Some(at) = counters_state.faults.exec_damage_stdin_at()
                            && let Some(i) = at.checked_sub(stdin_at)
                            && let Some(byte) = input.get_mut(i as usize)
                        {
                            *byte ^= 0x01;
                        }
                        stdin_at += input.len() as u64;
                        if let Some(pipe) = stdin.as_mut()
                            && pipe.write_all(&input).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Some(CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
                    Some(RESIZE) | Some(_) | None => {}
                }
            }
            // The client is gone: the command sees end of input.
            drop(stdin);
            let _ = gone_tx.send(());
        });
        let mut epoch = self.state.epoch.subscribe();
        let drop_after = self.state.faults.exec_drop_after();
        let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
        let mut client_gone = false;
        let mut sent: u64 = 0;
        let err_channel = if self.tty { STDOUT } else { STDERR };
        while out.is_some() || err.is_some() {
            let (channel, n) = tokio::select! {
                n = read_some(&mut out, &mut out_buf) => match n {
                    Ok(n) if n > 0 => (STDOUT, n),
                    _ => { out = None; continue; }
                },
                n = read_some(&mut err, &mut err_buf) => match n {
                    Ok(n) if n > 0 => (err_channel, n),
                    _ => { err = None; continue; }
                },
                _ = &mut gone_rx, if !client_gone => { client_gone = true; continue; }
                _ = epoch.changed() => {
                    let _ = child.start_kill();
                    reader.abort();
                    return;
                }
            };
            if client_gone {
                continue;
            }
            let data = if channel == STDOUT {
                &out_buf[..n]
            } else {
                &err_buf[..n]
            };
            if let Some(delay) = self.state.faults.exec_delay(Direction::Out, n) {
                tokio::time::sleep(delay).await;
            }
            if sink
                .send(Message::binary(channel::frame(channel, data)))
                .await
                .is_err()
            {
                client_gone = true;
                continue;
            }
            self.state.counters.add_exec_out(n);
            sent += n as u64;
            if drop_after.is_some_and(|limit| sent >= limit) {
                // The fault: the connection dies mid-stream, no close frame, no status.
                let _ = child.start_kill();
                reader.abort();
                return;
            }
        }
        let status = match child.wait().await {
            Ok(status) => self.exit_status(status),
            Err(e) => self.start_failure(&e),
        };
        if !client_gone {
            let status = serde_json::to_vec(&status).unwrap_or_default();
            let _ = sink
                .send(Message::binary(channel::frame(STATUS, &status)))
                .await;
            let _ = sink.send(channel::normal_close()).await;
            let _ = sink.close().await;
        }
        // Give the client a moment to answer the close, then drop the connection.
        let abort = reader.abort_handle();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reader).await;
        abort.abort();
    }
}
