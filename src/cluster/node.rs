//! One running node: its QEMU process, QMP connection and readiness beacon, from start to
//! power-down. Every wait has a deadline and watches QEMU: a dead QEMU is reported with the tail
//! of its serial console and stderr, never waited on.

use std::os::fd::AsRawFd;

use kvci_net::network::NodeTaps;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::net::UnixStream as AsyncUnixStream;

use crate::agent::{Agent, AgentError};
use crate::beacon;
use crate::cluster::plan::NodePlan;
use crate::qemu::cmdline::{node_args, Endpoint};
use crate::qemu::process::QemuProcess;
use crate::qemu::qmp::{Qmp, QmpError};

/// Lines of logs shown when a node fails.
const TAIL_LINES: usize = 25;

/// A node that failed to start or to become ready.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Local setup (sockets, files) failed.
    #[error("{node}: {what}")]
    Setup {
        /// Node name.
        node: String,
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be spawned.
    #[error("{node}: QEMU did not start")]
    Spawn {
        /// Node name.
        node: String,
        /// Why.
        #[source]
        source: crate::qemu::process::SpawnError,
    },
    /// QEMU exited before the node was ready.
    #[error("{node}: QEMU exited during boot ({status}){damaged}\n--- QEMU stderr ---\n{stderr}\n--- serial console (last {TAIL_LINES} lines) ---\n{serial}")]
    Died {
        /// Node name.
        node: String,
        /// Exit status.
        status: String,
        /// A damaged file of the node's disk chain, said as `\n<why>` (empty when it checks out).
        damaged: String,
        /// Tail of QEMU's stderr.
        stderr: String,
        /// Tail of the serial console.
        serial: String,
    },
    /// The node did not report ready in time.
    #[error("{node}: not ready after {secs}s{damaged}\n--- serial console (last {TAIL_LINES} lines) ---\n{serial}")]
    Timeout {
        /// Node name.
        node: String,
        /// The deadline, seconds.
        secs: u64,
        /// As for [`NodeError::Died`].
        damaged: String,
        /// Tail of the serial console.
        serial: String,
    },
    /// Saving or loading the RAM state failed.
    #[error("{node}: saving or loading its state failed: {why}")]
    State {
        /// Node name.
        node: String,
        /// Why.
        why: String,
    },
    /// QMP failed.
    #[error("{node}: QMP")]
    Qmp {
        /// Node name.
        node: String,
        /// Why.
        #[source]
        source: QmpError,
    },
}

/// A node whose QEMU runs.
pub struct Node {
    /// Its plan.
    pub plan: NodePlan,
    process: QemuProcess,
    qmp: Qmp,
    beacon: beacon::Reader<AsyncUnixStream>,
    agent: tokio::sync::Mutex<Agent<AsyncUnixStream>>,
    started: Instant,
}

/// Binds a listening socket that QEMU inherits. kvci connects its own end right away: the
/// connection waits in the backlog until QEMU accepts, so there is nothing to poll for.
fn listen(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

fn connect(path: &Path) -> std::io::Result<AsyncUnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_nonblocking(true)?;
    AsyncUnixStream::from_std(s)
}

impl Node {
    /// Creates the node's overlay-backed QEMU (on `tap`, if it has a NIC) and connects QMP and
    /// the beacon.
    pub async fn start(qemu: &Path, mut plan: NodePlan, taps: NodeTaps) -> Result<Node, NodeError> {
        let NodeTaps { nic: tap, sriov, secondary } = taps;
        let node = plan.name.clone();
        let setup = |what: &str| {
            let node = node.clone();
            let what = what.to_string();
            move |source| NodeError::Setup { node, what, source }
        };
        let d = plan.dir.clone();
        let qmp_l = listen(&d.qmp_socket()).map_err(setup("binding the QMP socket"))?;
        let console_l = listen(&d.console_socket()).map_err(setup("binding the console socket"))?;
        let beacon_l = listen(&d.beacon_socket()).map_err(setup("binding the beacon socket"))?;
        let agent_l = listen(&d.agent_socket()).map_err(setup("binding the agent socket"))?;
        plan.machine.qmp = Endpoint::Fd(qmp_l.as_raw_fd());
        plan.machine.console = Endpoint::Fd(console_l.as_raw_fd());
        plan.machine.beacon = Endpoint::Fd(beacon_l.as_raw_fd());
        plan.machine.agent = Endpoint::Fd(agent_l.as_raw_fd());
        let qmp_stream = connect(&d.qmp_socket()).map_err(setup("connecting to QMP"))?;
        let beacon_stream = connect(&d.beacon_socket()).map_err(setup("connecting to the beacon"))?;
        let agent_stream = connect(&d.agent_socket()).map_err(setup("connecting to the agent"))?;

        let mut fds = vec![qmp_l.as_raw_fd(), console_l.as_raw_fd(), beacon_l.as_raw_fd(), agent_l.as_raw_fd()];
        if let (Some(nic), Some(tap)) = (plan.machine.nic.as_mut(), tap.as_ref()) {
            nic.tap_fd = Some(tap.as_raw_fd());
            fds.push(tap.as_raw_fd());
        }
        if tap.is_none() {
            // No network (a plan without a tap): boot without a NIC rather than a dangling fd.
            plan.machine.nic = None;
        }
        if let Some(devices) = plan.machine.kubevirtci.as_mut() {
            match (devices.sriov.as_mut(), sriov.as_ref()) {
                (Some(nic), Some(tap)) => {
                    nic.tap_fd = Some(tap.as_raw_fd());
                    fds.push(tap.as_raw_fd());
                }
                _ => devices.sriov = None,
            }
        }
        if secondary.len() == plan.machine.shape.secondary.len() {
            for (nic, tap) in plan.machine.shape.secondary.iter_mut().zip(&secondary) {
                nic.nic.tap_fd = Some(tap.as_raw_fd());
                fds.push(tap.as_raw_fd());
            }
        } else {
            // No network (a plan without taps): no secondary NICs either.
            plan.machine.shape.secondary.clear();
        }
        let _ = std::fs::remove_file(d.vnc_socket());
        let args = node_args(&plan.machine);
        tracing::debug!(node = %node, ?args, "starting QEMU");
        let started = Instant::now();
        let mut process =
            QemuProcess::spawn(qemu, &args, &fds, &d.qemu_log()).map_err(|source| NodeError::Spawn { node: node.clone(), source })?;
        // QEMU has its own copies of the listeners and the tap now.
        drop((qmp_l, console_l, beacon_l, agent_l, tap, sriov, secondary));
        tracing::info!(node = %node, pid = process.pid(), "QEMU started");

        let qmp = tokio::select! {
            r = Qmp::handshake(qmp_stream) => match r {
                Ok(q) => q,
                Err(source) => {
                    return Err(match process.stop(Duration::from_secs(2)).await {
                        Some(status) => died(&plan, &process, status.to_string()),
                        None => NodeError::Qmp { node, source },
                    });
                }
            },
            status = process.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(died(&plan, &process, status));
            }
        };
        let agent = tokio::sync::Mutex::new(Agent::new(agent_stream));
        Ok(Node { plan, process, qmp, beacon: beacon::Reader::new(beacon_stream), agent, started })
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The node's QMP connection.
    pub fn qmp(&self) -> &Qmp {
        &self.qmp
    }

    /// Waits for the guest's `ready` beacon; fails if QEMU exits or `timeout` passes first.
    /// Returns the message and the time since QEMU started.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(beacon::Message, Duration), NodeError> {
        let deadline = tokio::time::Instant::from_std(self.started + timeout);
        loop {
            tokio::select! {
                msg = self.beacon.next() => match msg {
                    Ok(Some(m)) if m.event == "ready" => return Ok((m, self.started.elapsed())),
                    Ok(Some(m)) => tracing::debug!(node = %self.plan.name, event = %m.event, "beacon"),
                    // The port closed: QEMU is going away; its exit status tells why.
                    Ok(None) | Err(_) => {
                        let status = self.process.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        return Err(died(&self.plan, &self.process, status));
                    }
                },
                status = self.process.wait() => {
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    return Err(died(&self.plan, &self.process, status));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(NodeError::Timeout {
                        node: self.plan.name.clone(),
                        secs: timeout.as_secs(),
                        damaged: damaged_note(&self.plan),
                        serial: serial_tail(&self.plan),
                    });
                }
            }
        }
    }

    /// Runs `work` (readiness that is not the beacon) unless QEMU exits or `timeout` (from
    /// QEMU's start) passes first.
    pub async fn guarded<T, E: Into<anyhow::Error>>(&mut self, work: impl std::future::Future<Output = Result<T, E>>, timeout: Duration) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::from_std(self.started + timeout);
        tokio::select! {
            done = work => done.map_err(Into::into),
            status = self.process.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                Err(died(&self.plan, &self.process, status).into())
            }
            _ = tokio::time::sleep_until(deadline) => Err(NodeError::Timeout {
                node: self.plan.name.clone(),
                secs: timeout.as_secs(),
                damaged: damaged_note(&self.plan),
                serial: serial_tail(&self.plan),
            }
            .into()),
        }
    }

    /// Waits until QEMU exits on its own (a guest poweroff or a crash).
    pub async fn exited(&mut self) -> String {
        self.process.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
    }

    /// Whether QEMU is still alive.
    pub fn alive(&mut self) -> bool {
        self.process.try_status().is_none()
    }

    /// Asks the guest agent to step the clock to now and reseed the RNG with `entropy`.
    pub async fn agent_fixup(&self, entropy: &[u8], timeout: Duration) -> Result<(), AgentError> {
        self.agent.lock().await.fixup(entropy, timeout).await
    }

    /// Pauses the vCPUs (the first half of a consistent cut of the cluster).
    pub async fn pause(&self) -> Result<(), QmpError> {
        self.qmp.execute(&qapi::qmp::stop {}).await.map(drop)
    }

    /// Runs the vCPUs again.
    pub async fn resume(&self) -> Result<(), QmpError> {
        self.qmp.execute(&qapi::qmp::cont {}).await.map(drop)
    }

    /// Saves RAM and device state to `path` (the VM should be paused first). QEMU flushes and
    /// releases the disk when the save completes; `resume` takes it back.
    pub async fn save_state(&self, path: &Path, timeout: Duration) -> Result<(), NodeError> {
        let uri = format!("file:{}", path.display());
        let cmd = qapi::qmp::migrate { uri: Some(uri), channels: None, detach: None, resume: None };
        self.migration(self.qmp.execute(&cmd), timeout).await
    }

    /// Loads a saved state into a QEMU started with `-incoming defer`; the VM stays paused.
    pub async fn load_state(&self, path: &Path, timeout: Duration) -> Result<(), NodeError> {
        let uri = format!("file:{}", path.display());
        let cmd = qapi::qmp::migrate_incoming { uri: Some(uri), channels: None, exit_on_error: Some(false) };
        self.migration(self.qmp.execute(&cmd), timeout).await
    }

    /// Runs a migration command and waits for QEMU's MIGRATION event to say it is done.
    async fn migration<F>(&self, start: F, timeout: Duration) -> Result<(), NodeError>
    where
        F: std::future::Future<Output = Result<qapi::Empty, QmpError>>,
    {
        let node = self.plan.name.clone();
        let qmp_err = |source| NodeError::Qmp { node: node.clone(), source };
        let events_cap = qapi::qmp::MigrationCapabilityStatus { capability: qapi::qmp::MigrationCapability::events, state: true };
        self.qmp.execute(&qapi::qmp::migrate_set_capabilities { capabilities: vec![events_cap] }).await.map_err(qmp_err)?;
        let mut events = self.qmp.events();
        start.await.map_err(qmp_err)?;
        let wait = async {
            while let Some(ev) = crate::qemu::qmp::next_event(&mut events).await {
                if ev.event != "MIGRATION" {
                    continue;
                }
                match ev.data["status"].as_str() {
                    Some("completed") => return Ok(()),
                    Some("failed") | Some("cancelled") => {
                        return Err(format!("migration {}; see {}", ev.data["status"], self.plan.dir.qemu_log().display()));
                    }
                    _ => {}
                }
            }
            Err("QEMU went away during the migration".to_string())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(NodeError::State { node, why: format!("{why}\n{}", self.process.stderr_tail(10)) }),
            Err(_) => Err(NodeError::State { node, why: format!("not done after {}s", timeout.as_secs()) }),
        }
    }

    /// Graceful power-down: ACPI power button over QMP, up to `timeout` for the guest to turn
    /// itself off, then QMP `quit`, then SIGKILL. QEMU is reaped on every path.
    pub async fn shutdown(mut self, timeout: Duration) -> ShutdownKind {
        if !self.alive() {
            return ShutdownKind::AlreadyExited;
        }
        let mut events = self.qmp.events();
        if self.qmp.execute(&qapi::qmp::system_powerdown {}).await.is_ok() {
            let shutdown_event = async {
                while let Some(ev) = crate::qemu::qmp::next_event(&mut events).await {
                    if ev.event == "SHUTDOWN" {
                        return;
                    }
                }
                // Event stream ended: QEMU closed QMP.
            };
            let graceful = tokio::time::timeout(timeout, async {
                tokio::select! {
                    _ = shutdown_event => {}
                    _ = self.process.wait() => {}
                }
            })
            .await;
            if graceful.is_ok() {
                // -no-reboot: QEMU exits after the guest's shutdown.
                if self.process.stop(Duration::from_secs(5)).await.is_some() {
                    return ShutdownKind::Graceful;
                }
            }
        }
        tracing::warn!(node = %self.plan.name, "guest did not power off in {timeout:?}; quitting QEMU");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.qmp.execute(&qapi::qmp::quit {})).await;
        self.process.stop(Duration::from_secs(3)).await;
        ShutdownKind::Forced
    }
}

/// How a node went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownKind {
    /// The guest powered itself off.
    Graceful,
    /// QEMU had to be told to quit or killed.
    Forced,
    /// QEMU was already gone.
    AlreadyExited,
}

fn serial_tail(plan: &NodePlan) -> String {
    std::fs::read(plan.dir.serial_log()).map(|b| crate::tools::tail(&b, TAIL_LINES)).unwrap_or_default()
}

fn died(plan: &NodePlan, process: &QemuProcess, status: String) -> NodeError {
    NodeError::Died { node: plan.name.clone(), status, damaged: damaged_note(plan), stderr: process.stderr_tail(10), serial: serial_tail(plan) }
}

/// A guest that dies or hangs at boot is often one whose disk is damaged: say which file.
fn damaged_note(plan: &NodePlan) -> String {
    crate::disk::damaged_in_chain(&plan.dir.disk())
        .map(|why| format!("\nits disk chain is damaged: {why}; remove the image (`kvci image rm`) and build, pull or import it again"))
        .unwrap_or_default()
}
