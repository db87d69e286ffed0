//! The kubelet (and scheduler): pods are scheduled once their claims are bound, become Running
//! after a delay, fail past their active deadline, and are removed after graceful deletion.
//! A running container is a root directory exec can enter. A container with a `command` runs
//! it too, as the init of a PID namespace of its own: a deleted pod gets SIGTERM, and SIGKILL
//! once its grace period (`terminationGracePeriodSeconds`, 30 s unless set) is out, which an
//! init that has no handler for SIGTERM waits for, as on a real node. When every such command
//! has ended, the pod has Succeeded (all exited 0) or Failed; restarts are not simulated. A
//! container without a `command` runs nothing (the image's own entrypoint is not known here).
//! Every image is busybox (a guess at what tests need: the commands a minimal pod offers); an
//! image whose name holds `zstd` has the host's `zstd` besides.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::recorder::{Level, record};
use crate::meta;
use crate::resources::{PODS, PVCS};
use crate::sandbox::{Identity, Mount, Role, init_of};
use crate::server::{NODE, State};

/// A grace period a pod does not set.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(crate) struct Kubelet {
    scheduled: HashMap<String, Instant>,
    stopping: HashMap<String, Instant>,
    next_ip: u32,
    /// The running commands of containers, by pod uid.
    commands: HashMap<String, Vec<Command>>,
}

/// A container's command, running (see `Role::Main`).
struct Command {
    container: String,
    /// The process that waits for the container's init and ends as it does; killed, with
    /// its init, when dropped.
    waiter: tokio::process::Child,
    /// When SIGTERM went to the init.
    termed: Option<Instant>,
    killed: bool,
}

impl Command {
    /// The exit code, once the command has ended.
    fn ended(&mut self) -> Option<i32> {
        match self.waiter.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(137)),
            Ok(None) => None,
            Err(_) => Some(137),
        }
    }

    /// Sends `signal` to the init.
    fn signal(&self, signal: libc::c_int) {
        if let Some(init) = self.waiter.id().and_then(init_of) {
            // SAFETY: kill(2) on a process this kubelet started; no memory is involved.
            unsafe { libc::kill(init, signal) };
        }
    }
}

/// The grace period of a pod's deletion.
fn grace(pod: &Value) -> Duration {
    pod.pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_GRACE, Duration::from_secs)
}

fn containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| meta::str_at(c, &["name"]) == Some(name))
}

/// The root directory of a pod's container.
fn container_dir(state: &State, pod: &Value, container: &str) -> PathBuf {
    state.pods_dir().join(meta::uid(pod)).join(container)
}

/// Command `argv` in container `name` of `pod`, with the pod's volumes, environment and
/// identity, run as `role` says.
pub(crate) fn container_command(
    state: &State,
    pod: &Value,
    name: &str,
    argv: &[String],
    role: Role,
) -> io::Result<tokio::process::Command> {
    state.sandbox.command(
        &container_dir(state, pod, name),
        &mounts(state, pod, name)?,
        argv,
        &env(pod, name),
        identity(pod, name),
        role,
    )
}

/// Claim names of a pod's volumes.
fn claims(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(|vols| {
            vols.iter()
                .filter_map(|v| meta::str_at(v, &["persistentVolumeClaim", "claimName"]))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The container's volumes as bind mounts: PVCs map to their volume directories, emptyDirs to a
/// directory of the pod. Other volume types are not simulated and are left out.
fn mounts(state: &State, pod: &Value, name: &str) -> io::Result<Vec<Mount>> {
    let Some(c) = container(pod, name) else {
        return Ok(Vec::new());
    };
    let volumes = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fs_group = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64);
    let mut mounts = Vec::new();
    for vm in c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vol_name = meta::str_at(vm, &["name"]).unwrap_or("");
        let Some(volume) = volumes
            .iter()
            .find(|v| meta::str_at(v, &["name"]) == Some(vol_name))
        else {
            continue;
        };
        let mut read_only = vm.get("readOnly").and_then(Value::as_bool) == Some(true);
        let source =
            if let Some(claim) = meta::str_at(volume, &["persistentVolumeClaim", "claimName"]) {
                read_only |= volume
                    .pointer("/persistentVolumeClaim/readOnly")
                    .and_then(Value::as_bool)
                    == Some(true);
                let Some(pvc) = state.store.get(&PVCS, meta::namespace(pod), claim) else {
                    continue;
                };
                let Some(pv) = meta::str_at(&pvc, &["spec", "volumeName"]) else {
                    continue;
                };
                state.volumes_dir().join(pv)
            } else if volume.get("emptyDir").is_some() {
                let dir = state
                    .pods_dir()
                    .join(meta::uid(pod))
                    .join("volumes")
                    .join(vol_name);
                std::fs::create_dir_all(&dir)?;
                dir
            } else {
                continue;
            };
        if let Some(gid) = fs_group {
            // The kubelet gives the volume to the fsGroup (recursively, with setgid
            // directories); only the volume root is done here (a guess that new files are what
            // matters).
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&source, None, Some(gid as u32))?;
            let mode = std::fs::metadata(&source)?.permissions().mode();
            std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode | 0o2070))?;
        }
        let source = match meta::str_at(vm, &["subPath"]).filter(|s| !s.is_empty()) {
            Some(sub) => {
                let dir = source.join(sub);
                std::fs::create_dir_all(&dir)?;
                dir
            }
            None => source,
        };
        mounts.push(Mount {
            source,
            target: meta::str_at(vm, &["mountPath"]).unwrap_or("/").to_string(),
            read_only,
        });
    }
    Ok(mounts)
}

/// The container's environment (plain `value` entries only) and its HOSTNAME.
fn env(pod: &Value, name: &str) -> Vec<(String, String)> {
    let mut env = vec![("HOSTNAME".to_string(), meta::name(pod).to_string())];
    if let Some(list) = container(pod, name)
        .and_then(|c| c.get("env"))
        .and_then(Value::as_array)
    {
        for e in list {
            if let (Some(k), Some(v)) = (meta::str_at(e, &["name"]), meta::str_at(e, &["value"])) {
                env.push((k.to_string(), v.to_string()));
            }
        }
    }
    env
}

/// The user and groups from the pod's and container's security contexts.
fn identity(pod: &Value, name: &str) -> Identity {
    let pod_ctx = pod.pointer("/spec/securityContext");
    let c_ctx = container(pod, name).and_then(|c| c.get("securityContext"));
    let field = |key: &str| {
        c_ctx
            .and_then(|c| c.get(key))
            .or_else(|| pod_ctx.and_then(|p| p.get(key)))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
    };
    let mut groups: Vec<u32> = pod_ctx
        .and_then(|p| p.get("fsGroup"))
        .and_then(Value::as_u64)
        .map(|g| g as u32)
        .into_iter()
        .collect();
    groups.extend(
        pod_ctx
            .and_then(|p| p.get("supplementalGroups"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|g| g as u32),
    );
    let uid = field("runAsUser");
    Identity {
        uid,
        gid: field("runAsGroup").or(uid.map(|_| 0)),
        groups,
    }
}

fn condition(kind: &str, status: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})
}

impl Kubelet {
    pub(crate) async fn reconcile(&mut self, state: &State) {
        let now = Instant::now();
        let (pods, _) = state.store.list(&PODS, None);
        for pod in &pods {
            let uid = meta::uid(pod).to_string();
            let (ns, name) = (meta::namespace(pod), meta::name(pod));
            if meta::is_terminating(pod) {
                let since = *self.stopping.entry(uid.clone()).or_insert(now);
                if !self.stop_commands(state, pod, now) {
                    continue;
                }
                if now.duration_since(since) >= state.timings.pod_stop {
                    let _ = std::fs::remove_dir_all(state.pods_dir().join(&uid));
                    state.store.remove(&PODS, ns, name);
                }
                continue;
            }
            match meta::str_at(pod, &["status", "phase"]).unwrap_or("") {
                "Pending" if pod.pointer("/spec/nodeName").is_none() => self.schedule(state, pod),
                "Pending" => {
                    let since = *self.scheduled.entry(uid).or_insert(now);
                    if now.duration_since(since) >= state.timings.pod_start {
                        self.start(state, pod);
                    }
                }
                "Running" => {
                    self.check_commands(state, pod);
                    self.check_deadline(state, pod);
                }
                _ => {}
            }
        }
        let live: std::collections::HashSet<&str> = pods.iter().map(meta::uid).collect();
        self.scheduled.retain(|uid, _| live.contains(uid.as_str()));
        self.stopping.retain(|uid, _| live.contains(uid.as_str()));
        // The commands of pods removed at once (no grace) are killed as they are dropped.
        self.commands.retain(|uid, _| live.contains(uid.as_str()));
    }

    /// Runs the command of each container of `pod` that has one.
    fn run_commands(&mut self, state: &State, pod: &Value) {
        for c in containers(pod) {
            let cname = meta::str_at(&c, &["name"]).unwrap_or("").to_string();
            let words = |key: &str| -> Vec<String> {
                c.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            };
            let mut argv = words("command");
            if argv.is_empty() {
                continue;
            }
            argv.extend(words("args"));
            let spawned = container_command(state, pod, &cname, &argv, Role::Main)
                .and_then(|mut cmd| cmd.kill_on_drop(true).spawn());
            match spawned {
                Ok(waiter) => self
                    .commands
                    .entry(meta::uid(pod).to_string())
                    .or_default()
                    .push(Command {
                        container: cname,
                        waiter,
                        termed: None,
                        killed: false,
                    }),
                Err(e) => record(
                    state,
                    &PODS,
                    pod,
                    Level::Warning,
                    "Failed",
                    &format!("Error: failed to start container {cname}: {e}"),
                    "kubelet",
                ),
            }
        }
    }

    /// A running pod whose commands have all ended has Succeeded or Failed.
    fn check_commands(&mut self, state: &State, pod: &Value) {
        let Some(commands) = self.commands.get_mut(meta::uid(pod)) else {
            return;
        };
        let mut codes = Vec::new();
        for c in commands.iter_mut() {
            match c.ended() {
                Some(code) => codes.push((c.container.clone(), code)),
                None => return,
            }
        }
        self.commands.remove(meta::uid(pod));
        let now = meta::now_rfc3339();
        let failed = codes.iter().any(|(_, code)| *code != 0);
        let _ = state
            .store
            .modify(&PODS, meta::namespace(pod), meta::name(pod), |p| {
                let status = &mut p["status"];
                status["phase"] = json!(if failed { "Failed" } else { "Succeeded" });
                if let Some(list) = status["containerStatuses"].as_array_mut() {
                    for c in list {
                        let code = codes
                            .iter()
                            .find(|(name, _)| c["name"].as_str() == Some(name.as_str()))
                            .map(|(_, code)| *code);
                        if let Some(code) = code {
                            let reason = if code == 0 { "Completed" } else { "Error" };
                            c["ready"] = json!(false);
                            c["started"] = json!(false);
                            c["state"] = json!({"terminated": {"exitCode": code,
                                "reason": reason, "finishedAt": now}});
                        }
                    }
                }
                Ok(())
            });
    }

    /// Stops the commands of a deleted pod: SIGTERM to each init, SIGKILL once the grace
    /// period is out. Whether they have all ended.
    fn stop_commands(&mut self, state: &State, pod: &Value, now: Instant) -> bool {
        let Some(commands) = self.commands.get_mut(meta::uid(pod)) else {
            return true;
        };
        let grace = grace(pod);
        for c in commands.iter_mut() {
            if c.ended().is_some() {
                continue;
            }
            match c.termed {
                None => {
                    c.signal(libc::SIGTERM);
                    c.termed = Some(now);
                    record(
                        state,
                        &PODS,
                        pod,
                        Level::Normal,
                        "Killing",
                        &format!("Stopping container {}", c.container),
                        "kubelet",
                    );
                }
                Some(at) if !c.killed && now.duration_since(at) >= grace => {
                    c.signal(libc::SIGKILL);
                    c.killed = true;
                    record(
                        state,
                        &PODS,
                        pod,
                        Level::Warning,
                        "ExceededGracePeriod",
                        &format!(
                            "Container {} did not stop on SIGTERM within its grace period of {}s and was killed",
                            c.container,
                            grace.as_secs()
                        ),
                        "kubelet",
                    );
                }
                Some(_) => {}
            }
        }
        let ended = commands.iter_mut().all(|c| c.ended().is_some());
        if ended {
            self.commands.remove(meta::uid(pod));
        }
        ended
    }

    fn schedule(&mut self, state: &State, pod: &Value) {
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        let mut problem = None;
        for claim in claims(pod) {
            match state.store.get(&PVCS, ns, &claim) {
                None => problem = Some(format!("persistentvolumeclaim \"{claim}\" not found")),
                Some(pvc) if meta::str_at(&pvc, &["status", "phase"]) != Some("Bound") => {
                    problem = Some(
                        "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".into(),
                    )
                }
                Some(_) => {}
            }
        }
        let now = meta::now_rfc3339();
        if let Some(message) = problem {
            let unchanged = pod
                .pointer("/status/conditions/0/message")
                .and_then(Value::as_str)
                == Some(message.as_str());
            if !unchanged {
                let _ = state.store.modify(&PODS, ns, name, |p| {
                    let mut c = condition("PodScheduled", "False", &now);
                    c["reason"] = json!("Unschedulable");
                    c["message"] = json!(message);
                    p["status"]["conditions"] = json!([c]);
                    Ok(())
                });
                record(
                    state,
                    &PODS,
                    pod,
                    Level::Warning,
                    "FailedScheduling",
                    &message,
                    "default-scheduler",
                );
            }
            return;
        }
        let statuses: Vec<Value> = containers(pod)
            .iter()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                       "restartCount": 0, "started": false,
                       "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}})
            })
            .collect();
        let _ = state.store.modify(&PODS, ns, name, |p| {
            p["spec"]["nodeName"] = json!(NODE);
            p["status"]["conditions"] = json!([condition("PodScheduled", "True", &now)]);
            p["status"]["hostIP"] = json!("127.0.0.1");
            p["status"]["containerStatuses"] = json!(statuses);
            Ok(())
        });
        record(
            state,
            &PODS,
            pod,
            Level::Normal,
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {NODE}"),
            "default-scheduler",
        );
    }

    fn start(&mut self, state: &State, pod: &Value) {
        let (ns, name) = (meta::namespace(pod), meta::name(pod));
        for c in containers(pod) {
            let cname = meta::str_at(&c, &["name"]).unwrap_or("");
            let image = meta::str_at(&c, &["image"]).unwrap_or("");
            if let Err(e) = state
                .sandbox
                .prepare_root(&container_dir(state, pod, cname), image)
            {
                tracing::warn!(error = %e, pod = name, "preparing the container root failed");
                let message = format!("failed to create containerd task: {e}");
                record(
                    state,
                    &PODS,
                    pod,
                    Level::Warning,
                    "Failed",
                    &message,
                    "kubelet",
                );
                return;
            }
        }
        self.next_ip += 1;
        let ip = format!("10.244.{}.{}", self.next_ip / 250, self.next_ip % 250 + 2);
        let now = meta::now_rfc3339();
        let statuses: Vec<Value> = containers(pod)
            .iter()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"],
                       "imageID": format!("docker.io/library/{}", c["image"].as_str().unwrap_or("")),
                       "containerID": format!("containerd://{}", meta::new_uid().replace('-', "")),
                       "ready": true, "restartCount": 0, "started": true,
                       "state": {"running": {"startedAt": now}}, "lastState": {}})
            })
            .collect();
        let _ = state.store.modify(&PODS, ns, name, |p| {
            let status = &mut p["status"];
            status["phase"] = json!("Running");
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
            status["startTime"] = json!(now);
            status["containerStatuses"] = json!(statuses);
            status["conditions"] = json!([
                condition("PodReadyToStartContainers", "True", &now),
                condition("Initialized", "True", &now),
                condition("Ready", "True", &now),
                condition("ContainersReady", "True", &now),
                condition("PodScheduled", "True", &now),
            ]);
            Ok(())
        });
        for c in containers(pod) {
            let cname = meta::str_at(&c, &["name"]).unwrap_or("");
            record(
                state,
                &PODS,
                pod,
                Level::Normal,
                "Started",
                &format!("Started container {cname}"),
                "kubelet",
            );
        }
        self.run_commands(state, pod);
    }

    fn check_deadline(&mut self, state: &State, pod: &Value) {
        let Some(deadline) = pod
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
        else {
            return;
        };
        let Some(started) = meta::str_at(pod, &["status", "startTime"])
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            return;
        };
        if (chrono::Utc::now() - started.with_timezone(&chrono::Utc)).num_seconds() < deadline {
            return;
        }
        // Its commands are killed, as they are dropped.
        self.commands.remove(meta::uid(pod));
        let now = meta::now_rfc3339();
        let message = "Pod was active on the node longer than the specified deadline";
        let _ = state
            .store
            .modify(&PODS, meta::namespace(pod), meta::name(pod), |p| {
                let status = &mut p["status"];
                status["phase"] = json!("Failed");
                status["reason"] = json!("DeadlineExceeded");
                status["message"] = json!(message);
                if let Some(list) = status["containerStatuses"].as_array_mut() {
                    for c in list {
                        c["ready"] = json!(false);
                        c["started"] = json!(false);
                        c["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error",
                        "startedAt": now, "finishedAt": now}});
                    }
                }
                Ok(())
            });
        record(
            state,
            &PODS,
            pod,
            Level::Normal,
            "DeadlineExceeded",
            message,
            "kubelet",
        );
    }
}
