//! The supervisor proper: brings a cluster up (plan → disks → QEMU → readiness), then owns it,
//! answering `status` and `down` on its control socket until told to stop or signalled.
//!
//! It runs on a single-threaded runtime, so every QEMU is spawned from the main thread and
//! `PR_SET_PDEATHSIG` kills them all exactly when the supervisor dies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::forwards;
use crate::cluster::layout::ClusterDir;
use crate::cluster::boot;
use crate::cluster::resume;
use crate::image::store::FrozenManifest;
use crate::supervisor::freeze::{self, FreezeContext};
use crate::provision::hooks::{self, HookNode};
use kvci_net::network::{ClusterNetwork, NetworkConfig};
use crate::cluster::node::Node;
use crate::cluster::plan::{plan, Launch, NodePlan};
use crate::cluster::state::{ClusterState, NodeRecord, NodeState, Phase};
use crate::cluster::teardown;
use crate::image::store::Store;
use crate::paths::Dirs;
use crate::supervisor::node_task::NodeHandle;
use futures_util::future::join_all;
use crate::supervisor::protocol::{ClusterStatus, LaunchEvent, Request, Response};
use crate::tools::QEMU;

/// Default time a guest gets to power off on `down` before QEMU is stopped.
pub const DEFAULT_DOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Set once the cluster was reported ready: from then on the supervisor lives on its own.
static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Resolves when the `vm up` that waits on our stdout is gone (killed, SIGKILL included) before
/// the cluster was ready; never after that. The pipe's write end reports an error once its
/// reader has closed, which `poll` sees even asking for no event.
async fn waiter_gone() {
    let Ok(fd) = nix::unistd::dup(1) else { return std::future::pending().await };
    // A plain thread, not tokio's blocking pool: the runtime waits for its blocking tasks when it
    // shuts down, and this one may wait for `vm up`, which waits for the runtime's last word.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("waiter-gone".into()).spawn(move || {
        // SAFETY: `fd` was just duplicated and is owned here.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&owned), nix::poll::PollFlags::empty())];
        let gone = loop {
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(n) if n > 0 => break true,
                Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                Err(_) => break false,
            }
        };
        let _ = tx.send(gone);
    });
    let gone = spawned.is_ok() && rx.await.unwrap_or(false);
    if !gone || READY.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}

/// Where launch progress goes: the pipe `vm up` reads, or the terminal (`--foreground`).
pub enum Reporter {
    /// Detached: JSON lines on stdout, which is closed once the cluster is ready.
    Pipe,
    /// Attached: plain lines on stderr.
    Terminal,
}

impl Reporter {
    fn send(&self, event: &LaunchEvent) {
        match self {
            Reporter::Pipe => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", serde_json::to_string(event).unwrap_or_default());
                let _ = out.flush();
            }
            Reporter::Terminal => match event {
                LaunchEvent::Progress { message } => eprintln!("kvci: {message}"),
                LaunchEvent::Ready(s) => eprintln!("kvci: cluster {} is ready ({} nodes); Ctrl-C to stop it", s.name, s.nodes.len()),
                LaunchEvent::Failed { message } => eprintln!("kvci: {message}"),
            },
        }
        if let LaunchEvent::Progress { message } = event {
            tracing::info!("{message}");
        }
    }

    fn progress(&self, message: impl Into<String>) {
        self.send(&LaunchEvent::Progress { message: message.into() });
    }

    /// Lets `vm up` see end-of-file: stdout now points at /dev/null.
    fn detach(&self) {
        READY.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Reporter::Pipe = self {
            if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
            }
        }
    }
}

/// The held lock of a cluster.
pub type ClusterLock = nix::fcntl::Flock<std::fs::File>;

/// Runs the supervisor of cluster `name` to the end (down, signal or failed bring-up), holding
/// `lock` if the caller took it (else the one `vm up` handed down, else its own).
pub fn run(dirs: &Dirs, name: &str, reporter: Reporter, lock: Option<ClusterLock>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let dir = ClusterDir::new(dirs, name);
    let result = rt.block_on(supervise(dirs, &dir, &reporter, lock));
    if let Err(e) = &result {
        reporter.send(&LaunchEvent::Failed { message: format!("{e:#}") });
    }
    result
}

async fn supervise(dirs: &Dirs, dir: &ClusterDir, reporter: &Reporter, lock: Option<ClusterLock>) -> Result<()> {
    // `vm up` hands down the lock it took (inherited, or given here with --foreground).
    let _lock = match lock {
        Some(lock) => lock,
        None => match teardown::inherited_lock(dir)? {
            Some(lock) => lock,
            None => teardown::try_lock(dir)?.ok_or_else(|| anyhow!("cluster {:?} is already running", dir.name()))?,
        },
    };
    let result = match reporter {
        // Until it is ready the cluster belongs to the `vm up` waiting for it: if that one is
        // killed, the bring-up stops and leaves nothing.
        Reporter::Pipe => tokio::select! {
            r = launch_and_serve(dirs, dir, reporter) => r,
            _ = waiter_gone() => Err(anyhow!("`kvci vm up` went away before the cluster was ready; taking it down")),
        },
        Reporter::Terminal => launch_and_serve(dirs, dir, reporter).await,
    };
    if result.is_err() {
        // A failed or abandoned bring-up leaves nothing: its QEMUs and helpers are ended and
        // reaped before the lock (held until this process exits) frees the name.
        teardown::end_children();
        let _ = std::fs::remove_dir_all(dir.root());
    }
    result
}

async fn launch_and_serve(dirs: &Dirs, dir: &ClusterDir, reporter: &Reporter) -> Result<()> {
    let launch: Launch = serde_json::from_slice(&std::fs::read(dir.launch()).context("reading launch.json")?)
        .context("corrupt launch.json")?;
    let image = Store::open(&dirs.images())?
        .get(&crate::image::name::ImageName::parse(&launch.spec.image)?)?
        .ok_or_else(|| anyhow!("image {:?} disappeared from the store", launch.spec.image))?;
    let qemu = QEMU.locate()?;
    let plan = plan(&launch, &image, dir)?;
    if image.manifest.frozen.is_some() {
        // The guests' authorized_keys hold the frozen cluster's key: keep using it.
        std::fs::create_dir_all(dir.ssh_dir())?;
        for (from, to, mode) in [(freeze::KEY_FILE, "id_ed25519", 0o600), (freeze::PUB_FILE, "id_ed25519.pub", 0o644)] {
            let dest = dir.ssh_dir().join(to);
            std::fs::copy(image.dir.join(from), &dest).context("copying the frozen cluster's key")?;
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
    }
    crate::ssh::keys::ensure_keypair(&dir.ssh_dir()).context("creating the cluster's ssh key")?;
    // Host ports first: a taken port fails `up` before anything boots.
    let ports = forwards::bind(launch.spec.nodes, &launch.spec.ports, &image.manifest.ports)?;
    let registry_dir = launch.spec.registry_dir.clone().unwrap_or_else(|| dirs.registry(dir.name()));

    let mut state = ClusterState {
        name: dir.name().to_string(),
        phase: Phase::Starting,
        supervisor_pid: std::process::id(),
        image: launch.spec.image.clone(),
        accel: launch.accel.clone(),
        nodes: plan
            .nodes
            .iter()
            .map(|n| NodeRecord { name: n.name.clone(), state: NodeState::Starting, pid: None, ready_secs: None, ip: n.ip.to_string() })
            .collect(),
        ports: ports.bindings(),
        registry_dir: Some(registry_dir.clone()),
    };
    state.save(&dir.state())?;
    let _ = std::fs::remove_file(dir.control_socket());
    let control = UnixListener::bind(dir.control_socket()).context("binding the control socket")?;

    let timeout = Duration::from_secs(launch.spec.boot_timeout_secs);
    reporter.progress(format!("creating the cluster network {} (bridge {})", plan.topology.subnet, plan.topology.bridge_ip));
    let upstreams = if launch.spec.dns_upstreams.is_empty() {
        kvci_net::dns::upstreams_from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        launch.spec.dns_upstreams.clone()
    };
    let network = ClusterNetwork::create(NetworkConfig {
        topology: plan.topology.clone(),
        dns_upstreams: upstreams,
        mtu: 1500,
        allow_host_loopback: launch.spec.allow_host_loopback,
    })
        .await
        .context("creating the cluster network")?;
    let mut network = network;
    // Up before the nodes boot, so up hooks can pull from it; stops when this sender drops.
    let (_stop_registry, registry_stop) = tokio::sync::watch::channel(false);
    if let Err(e) = crate::registry::start(network.ns(), &registry_addrs(&plan.topology), &registry_dir, registry_stop) {
        network.shutdown().await;
        return Err(e.context("starting the cluster registry"));
    }
    let uuids: Vec<String> = plan.nodes.iter().map(|n| n.machine.uuid.clone().unwrap_or_default()).collect();
    if let Err(e) = create_shared_disks(&plan.shared_disks, dir) {
        network.shutdown().await;
        return Err(e);
    }
    let nodes = match bring_up(&qemu, plan.nodes, timeout, reporter, &mut state, dir, &mut network, image.manifest.frozen.as_ref()).await {
        Ok(nodes) => nodes,
        Err(e) => {
            let _ = state.transition(Phase::Failed);
            network.shutdown().await;
            let _ = std::fs::remove_dir_all(dir.root());
            return Err(e);
        }
    };
    if image.manifest.up.is_some() {
        reporter.progress("running the image's up hooks");
        let hook_nodes: Vec<HookNode> = network.topology().nodes.iter().map(|n| HookNode { name: n.hostname.clone(), ip: network.topology().node_addr(n) }).collect();
        let key = dir.ssh_dir().join("id_ed25519");
        let token = random_token();
        let cluster = hooks::HookCluster { name: dir.name(), nodes: &hook_nodes, stack: crate::cluster::plan::stack_word(launch.spec.stack), token: &token };
        match hooks::run(&image, &cluster, network.ns(), &key).await {
            Ok(steps) => {
                for step in steps {
                    // `nodeNN NAME SECONDS`, as the hook printed it.
                    reporter.progress(format!("up hook step {step}s"));
                }
            }
            Err(e) => {
                stop_all(nodes).await;
                network.shutdown().await;
                return Err(e.context("up hooks failed"));
            }
        }
        reporter.progress("up hooks done");
    }
    let qemu_version = nodes.first().map(|n| resume::qemu_version(n.qmp().greeting())).unwrap_or_default();
    let (stop_forwards, stop_rx) = tokio::sync::watch::channel(false);
    ports.start(network.ns(), network.topology(), dir, &stop_rx).context("starting port forwards")?;
    state.transition(Phase::Running)?;
    state.save(&dir.state())?;
    let (state_tx, state_rx) = mpsc::channel(16);
    let handles: Vec<NodeHandle> = nodes.into_iter().map(|n| NodeHandle::spawn(n, state_tx.clone())).collect();
    reporter.send(&LaunchEvent::Ready(status(&state, &handles).await));
    reporter.detach();
    let store = Store::open(&dirs.images())?;
    let freezer = FreezeContext { store: &store, image: &image, launch: &launch, dir, qemu_version };
    let result = serve(control, state, handles, state_rx, &freezer, &uuids, network.egress_pid()).await;
    let _ = stop_forwards.send(true);
    network.shutdown().await;
    result
}

/// The bridge's addresses the registry listens on: IPv4 always (the host's forward uses it
/// unless the cluster is IPv6 only), IPv6 unless the cluster is IPv4 only.
fn registry_addrs(topo: &kvci_net::topology::Topology) -> Vec<std::net::IpAddr> {
    let mut v = vec![topo.bridge_ip.into()];
    if topo.stack.v6() {
        v.push(kvci_net::topology::BRIDGE_IP6.into());
    }
    v
}

/// A fresh secret for the cluster's up hooks (e.g. an etcd cluster token or kubeadm token seed).
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) does not fail on Linux once the pool is seeded (it blocks until then).
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// The cluster's shared raw disks (`--shared-disk`), sparse, checked for the O_DIRECT their
/// `cache.direct=on` needs before any QEMU opens them.
fn create_shared_disks(disks: &[(PathBuf, u64)], dir: &ClusterDir) -> Result<()> {
    if disks.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir.shared_dir()).with_context(|| format!("creating {}", dir.shared_dir().display()))?;
    for (path, size) in disks {
        crate::disk::raw::create_sparse(path, *size)?;
        crate::disk::raw::check_direct_io(path)?;
    }
    Ok(())
}

/// Overlays, then every node started and awaited in parallel. On any failure all nodes are
/// stopped and the error of the first failing node is returned.
#[allow(clippy::too_many_arguments)]
async fn bring_up(
    qemu: &Path,
    plans: Vec<NodePlan>,
    timeout: Duration,
    reporter: &Reporter,
    state: &mut ClusterState,
    dir: &ClusterDir,
    network: &mut ClusterNetwork,
    frozen: Option<&FrozenManifest>,
) -> Result<Vec<Node>> {
    reporter.progress(format!("creating {} overlay(s) on {}", plans.len(), plans[0].base_disk.display()));
    for p in &plans {
        std::fs::create_dir_all(p.dir.root()).with_context(|| format!("creating {}", p.dir.root().display()))?;
        crate::disk::create_overlay(&p.base_disk, &p.dir.disk())?;
        for (path, size) in &p.extra_disks {
            crate::disk::raw::create_sparse(path, *size)?;
        }
    }
    if let Some(frozen) = frozen {
        return resume_all(qemu, plans, timeout, reporter, state, dir, network, frozen).await;
    }
    reporter.progress(format!("booting {} node(s) (timeout {}s)", plans.len(), timeout.as_secs()));
    let mut tasks = JoinSet::new();
    for p in plans {
        let qemu: PathBuf = qemu.to_path_buf();
        let tap = network.take_taps(p.index);
        let (ns, leases) = (network.ns().clone(), network.leases());
        tasks.spawn(async move { boot::boot_node(&qemu, p, tap, ns, leases, timeout).await });
    }
    let mut ready = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a node task panicked")? {
            Ok((node, took)) => {
                reporter.progress(format!("{} ready in {:.1}s (pid {})", node.name(), took.as_secs_f64(), node.pid()));
                state.node_running(node.name(), node.pid(), took);
                state.save(&dir.state())?;
                ready.push(node);
            }
            Err(e) => {
                // Dropping the other tasks kills their QEMUs (kill_on_drop); stop the ready ones.
                tasks.shutdown().await;
                stop_all(ready).await;
                return Err(e);
            }
        }
    }
    ready.sort_by_key(|n| n.plan.index);
    Ok(ready)
}

/// Resumes every node of a frozen image: all load their state, continue together, then get
/// their fix-ups (clock, entropy) and must answer ssh.
#[allow(clippy::too_many_arguments)]
async fn resume_all(
    qemu: &Path,
    plans: Vec<NodePlan>,
    timeout: Duration,
    reporter: &Reporter,
    state: &mut ClusterState,
    dir: &ClusterDir,
    network: &mut ClusterNetwork,
    frozen: &FrozenManifest,
) -> Result<Vec<Node>> {
    reporter.progress(format!("resuming {} node(s) from their saved state", plans.len()));
    let mut tasks = JoinSet::new();
    for p in plans {
        let (qemu, tap, version) = (qemu.to_path_buf(), network.take_taps(p.index), frozen.qemu_version.clone());
        tasks.spawn(async move { resume::load_node(&qemu, p, tap, &version, timeout).await });
    }
    let mut nodes = Vec::new();
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a node task panicked")? {
            Ok(n) => nodes.push(n),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        stop_all(nodes).await;
        return Err(e);
    }
    nodes.sort_by_key(|n| n.plan.index);
    for n in &nodes {
        n.resume().await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let fixes = join_all(nodes.iter().map(|n| resume::fix_up(n, network.ns(), deadline))).await;
    if let Some(e) = fixes.into_iter().find_map(Result::err) {
        stop_all(nodes).await;
        return Err(e);
    }
    for n in &nodes {
        let took = n.started().elapsed();
        reporter.progress(format!("{} resumed in {:.1}s (pid {})", n.name(), took.as_secs_f64(), n.pid()));
        state.node_running(n.name(), n.pid(), took);
    }
    state.save(&dir.state())?;
    Ok(nodes)
}

/// Stops nodes at once (a failed bring-up: no point waiting for guests to power off).
async fn stop_all(nodes: Vec<Node>) {
    join_all(nodes.into_iter().map(|n| n.shutdown(Duration::ZERO))).await;
}

async fn status(state: &ClusterState, handles: &[NodeHandle]) -> ClusterStatus {
    let mut nodes = Vec::new();
    for (h, rec) in handles.iter().zip(&state.nodes) {
        nodes.push(h.status(rec).await);
    }
    ClusterStatus {
        name: state.name.clone(),
        phase: state.phase,
        image: state.image.clone(),
        accel: state.accel.accel.to_string(),
        supervisor_pid: state.supervisor_pid,
        nodes,
        ports: state.ports.clone(),
        registry_dir: state.registry_dir.clone(),
    }
}

async fn down(state: &mut ClusterState, handles: &[NodeHandle], timeout: Duration, dir: &ClusterDir) -> Vec<(String, String)> {
    let _ = state.transition(Phase::Stopping);
    let _ = state.save(&dir.state());
    let kinds = join_all(handles.iter().map(|h| h.shutdown(timeout))).await;
    let result = handles.iter().zip(kinds).map(|(h, k)| (h.name.clone(), format!("{k:?}").to_lowercase())).collect();
    if let Err(e) = std::fs::remove_dir_all(dir.root()) {
        tracing::error!(error = %e, "removing the cluster directory");
    }
    result
}

/// A connection whose request was read: where its answer goes.
struct Conn {
    // Held so the client's end stays open until the answer is written.
    _reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Conn {
    async fn reply(&mut self, response: &Response) {
        let mut out = serde_json::to_string(response).unwrap_or_default();
        out.push('\n');
        let _ = self.write.write_all(out.as_bytes()).await;
        let _ = self.write.flush().await;
    }
}

/// The future of a freeze: the image's name and how long the cut took.
type FreezeWork<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(String, f64)>> + 'a>>;

/// A freeze under way: its future (polled by the serve loop, which keeps answering) and the
/// connection waiting for it.
struct Freezing<'a> {
    work: FreezeWork<'a>,
    conn: Conn,
    keep_running: bool,
    to: String,
}

/// Reads one request (a line of at most 64 KiB, within 5 s).
async fn read_request(stream: UnixStream) -> Option<(Result<Request, String>, Conn)> {
    let (read, write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read);
    let read = tokio::time::timeout(Duration::from_secs(5), (&mut reader).take(64 * 1024).read_line(&mut line)).await;
    read.ok()?.ok()?;
    let request = serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request: {e}"));
    Some((request, Conn { _reader: reader, write }))
}

/// Serves the control socket until `down` or a signal; `freezer.dir` is the cluster's directory.
/// A freeze runs beside the loop: `status` answers meanwhile, `down` and a second freeze are
/// refused with a message.
async fn serve(
    control: UnixListener,
    mut state: ClusterState,
    handles: Vec<NodeHandle>,
    mut state_rx: mpsc::Receiver<(String, NodeState)>,
    freezer: &FreezeContext<'_>,
    uuids: &[String],
    egress_pid: Option<u32>,
) -> Result<()> {
    let dir = freezer.dir;
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut freezing: Option<Freezing<'_>> = None;
    loop {
        tokio::select! {
            conn = control.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let Some((request, mut conn)) = read_request(stream).await else { continue };
                match request {
                    Ok(Request::Status) => conn.reply(&Response::Status(status(&state, &handles).await)).await,
                    Ok(Request::Down { .. } | Request::Freeze { .. }) if freezing.is_some() => {
                        let to = freezing.as_ref().map(|f| f.to.clone()).unwrap_or_default();
                        let message = format!("the cluster is being frozen into {to}: try again once `kvci vm freeze` has returned");
                        conn.reply(&Response::Error { message }).await;
                    }
                    Ok(Request::Down { timeout_secs }) => {
                        let nodes = down(&mut state, &handles, Duration::from_secs(timeout_secs), dir).await;
                        conn.reply(&Response::Down { nodes }).await;
                        exit_holding(conn, egress_pid);
                    }
                    Ok(Request::Freeze { to, keep_running, force, store_timeout_secs }) => {
                        let req = freeze::FreezeRequest { to: to.clone(), keep_running, force, store_timeout: Duration::from_secs(store_timeout_secs) };
                        freezing = Some(Freezing { work: Box::pin(freeze::freeze(freezer, &handles, uuids, req)), conn, keep_running, to });
                    }
                    Err(message) => conn.reply(&Response::Error { message }).await,
                }
            }
            result = async { freezing.as_mut().expect("guarded").work.as_mut().await }, if freezing.is_some() => {
                let Some(mut f) = freezing.take() else { continue };
                match result {
                    Ok((image, seconds)) if f.keep_running => f.conn.reply(&Response::Frozen { image, seconds }).await,
                    Ok((image, seconds)) => {
                        // Paused after their save, the nodes are stopped without waiting for the guests.
                        down(&mut state, &handles, Duration::ZERO, dir).await;
                        f.conn.reply(&Response::Frozen { image, seconds }).await;
                        exit_holding(f.conn, egress_pid);
                    }
                    Err(e) => f.conn.reply(&Response::Error { message: format!("{e:#}") }).await,
                }
            }
            Some((node, node_state)) = state_rx.recv() => {
                if let Some(rec) = state.nodes.iter_mut().find(|r| r.name == node) {
                    rec.state = node_state;
                    rec.pid = None;
                }
                let _ = state.save(&dir.state());
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => break,
        }
    }
    tracing::info!("signalled: taking the cluster down");
    drop(freezing);
    down(&mut state, &handles, DEFAULT_DOWN_TIMEOUT, dir).await;
    Ok(())
}

/// The cluster is down: exit while still holding the client's connection, so its end-of-file
/// means this process (and every QEMU) is gone.
fn exit_holding(conn: Conn, egress_pid: Option<u32>) -> ! {
    // The egress helper too (it would follow this process by itself, but a client that saw the
    // end-of-file must find nothing left).
    if let Some(pid) = egress_pid.and_then(|p| i32::try_from(p).ok()).map(nix::unistd::Pid::from_raw) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    std::mem::forget(conn);
    std::process::exit(0);
}

use tokio::io::AsyncReadExt as _;
