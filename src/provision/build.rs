//! `kvci image build PROVIDER`: boot the provider's base on an overlay, run its phases over
//! ssh (output streamed), power the guest off over QMP, and freeze the overlay as a new
//! read-only layer whose parent is the base's layer.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kvci_net::network::{ClusterNetwork, NetworkConfig};

use crate::accel::{self, AccelChoice, KvmFacts};
use crate::cluster::boot::boot_node;
use crate::cluster::layout::ClusterDir;
use crate::cluster::node::ShutdownKind;
use crate::cluster::plan::{plan, Launch};
use crate::config::ClusterSpec;
use crate::image::provider::{Base, Loaded};
use crate::image::name::ImageName;
use crate::image::store::{Image, Manifest, Store, UpManifest};
use crate::paths::Dirs;
use crate::provision::output::{tail_lines, Tee};
use crate::ssh;
use crate::tools::QEMU;

/// How a build runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Tag (`latest` by default).
    pub tag: String,
    /// Flatten the chain into one standalone layer.
    pub compact: bool,
    /// Accelerator.
    pub accel: AccelChoice,
    /// Rebuild even when the store has this recipe.
    pub force: bool,
}

/// Builds `provider` (and, first, any provider it is based on that the store lacks).
pub fn build(dirs: &Dirs, provider: &Loaded, opts: &BuildOptions) -> Result<Image> {
    let store = Store::open(&dirs.images())?;
    if let Base::Debootstrap(spec) = &provider.recipe.base {
        // (The guest programs kvci adds are part of every layer id: see `Loaded::id`.)
        let id = provider.id("debootstrap").context("hashing the recipe")?;
        let name = ImageName::new(&provider.name, &opts.tag)?;
        if !opts.force {
            if let Some(img) = store.get(&name)?.filter(|i| i.manifest.id == id) {
                eprintln!("kvci: image {name} is up to date ({})", &id[..12]);
                return Ok(img);
            }
        }
        let _building = store.building(&id)?;
        if let Some(img) = fresh_after_lock(&store, &name, &id, opts)? {
            return Ok(img);
        }
        return crate::image::debootstrap::build(&store, provider, spec, &id, &name.to_string());
    }
    if let Base::Qcow2 { .. } | Base::Url { .. } = &provider.recipe.base {
        return import_base(&store, provider, opts);
    }
    let base = match &provider.recipe.base {
        Base::Image(name) => base_image(dirs, name, opts)?,
        Base::Debootstrap(_) | Base::Qcow2 { .. } | Base::Url { .. } => unreachable!("handled above"),
    };
    let mut id = provider.id(&base.manifest.id).context("hashing the recipe")?;
    if opts.compact {
        // A flattened layer holds different bytes than the overlay of the same recipe.
        let mut d = crate::image::digest::LayerDigest::default();
        d.feed("compact", id.as_bytes());
        id = d.finish();
    }
    let name = ImageName::new(&provider.name, &opts.tag)?;
    if !opts.force {
        if let Some(img) = store.get(&name)? {
            if img.manifest.id == id {
                eprintln!("kvci: image {name} is up to date ({})", &id[..12]);
                return Ok(img);
            }
        }
    }
    let _building = store.building(&id)?;
    if let Some(img) = fresh_after_lock(&store, &name, &id, opts)? {
        return Ok(img);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(&store, provider, &base, &id, &name.to_string(), opts))
}

/// Another kvci may have built the same recipe while this one waited for it.
fn fresh_after_lock(store: &Store, name: &ImageName, id: &str, opts: &BuildOptions) -> Result<Option<Image>> {
    if opts.force {
        return Ok(None);
    }
    Ok(store.get(name)?.filter(|i| i.manifest.id == id))
}

/// A root layer from a local qcow2 or from downloads (phases are not run on it).
fn import_base(store: &Store, provider: &Loaded, opts: &BuildOptions) -> Result<Image> {
    use crate::image::import::{commit_root_layer, download, sha256_file};
    if !provider.recipe.phases.is_empty() {
        bail!("{}: an imported base takes no phases; put them in a provider based on this one", provider.name);
    }
    let name = ImageName::new(&provider.name, &opts.tag)?;
    let work = store.staging()?;
    let (files, digests, append) = match &provider.recipe.base {
        Base::Qcow2 { disk, kernel, initrd, append } => {
            let files = [disk, kernel, initrd].map(|p| provider.dir.join(p));
            let digests = files.iter().map(|f| sha256_file(f)).collect::<Result<Vec<_>>>()?;
            (files, digests, append.clone())
        }
        Base::Url { disk, kernel, initrd, append } => {
            let files = ["disk", "kernel", "initrd"].map(|n| work.path().join(n));
            for (d, f) in [disk, kernel, initrd].iter().zip(&files) {
                download(d, f)?;
            }
            (files, [disk, kernel, initrd].iter().map(|d| d.sha256.to_lowercase()).collect(), append.clone())
        }
        _ => unreachable!("only imports come here"),
    };
    let id = provider.id(&format!("import:{}", digests.join(":"))).context("hashing the recipe")?;
    if !opts.force {
        if let Some(img) = store.get(&name)?.filter(|i| i.manifest.id == id) {
            eprintln!("kvci: image {name} is up to date ({})", &id[..12]);
            return Ok(img);
        }
    }
    let _building = store.building(&id)?;
    if let Some(img) = fresh_after_lock(store, &name, &id, opts)? {
        return Ok(img);
    }
    let image = commit_root_layer(store, provider, [&files[0], &files[1], &files[2]], &append, &id, &name.to_string())?;
    eprintln!("kvci: image {name} imported ({} MiB)", image.manifest.size >> 20);
    Ok(image)
}

/// The base named `name`: built (or found up to date) from its provider folder if it has one,
/// so a changed base recipe never leaves a stale base under a new layer; otherwise from the
/// store (an imported or frozen image).
fn base_image(dirs: &Dirs, name: &str, opts: &BuildOptions) -> Result<Image> {
    let store = Store::open(&dirs.images())?;
    let name = ImageName::parse(name)?;
    if name == crate::image::tiny::name() {
        return crate::image::resolve(dirs, &name);
    }
    let recipes = crate::image::recipes::dir(dirs)?;
    if recipes.join(name.repo()).join(crate::image::provider::RECIPE_FILE).is_file() {
        let loaded = crate::image::provider::load(&recipes, name.repo())?;
        return build(dirs, &loaded, &BuildOptions { tag: name.tag().into(), compact: false, force: false, ..opts.clone() });
    }
    store.get(&name)?.with_context(|| {
        format!("base image {name} is neither in the store nor a provider under {}: build or import it first", recipes.display())
    })
}

async fn run(store: &Store, provider: &Loaded, base: &Image, id: &str, name: &str, opts: &BuildOptions) -> Result<Image> {
    let started = Instant::now();
    let staging = store.staging()?;
    // A private cluster directory inside the staging area: gone with it on every path.
    let cdir = ClusterDir::new(&Dirs::at(staging.path()), "b");
    std::fs::create_dir_all(cdir.root())?;
    cdir.check_socket_paths().map_err(anyhow::Error::msg)?;
    let keys = ssh::keys::ensure_keypair(&cdir.ssh_dir())?;
    let decision = accel::decide(opts.accel, &KvmFacts::probe())?;
    let launch = Launch {
        image_id: Some(base.manifest.id.clone()),
        spec: ClusterSpec {
            name: "build".into(),
            nodes: 1,
            image: base.manifest.name.clone(),
            memory_mib: provider.recipe.defaults.memory_mib.unwrap_or(base.manifest.memory_mib).max(512),
            cpus: provider.recipe.defaults.cpus.unwrap_or(base.manifest.cpus),
            accel: opts.accel,
            boot_timeout_secs: 300,
            subnet: kvci_net::topology::DEFAULT_SUBNET.into(),
            ports: Default::default(),
            dns_upstreams: vec![],
            registry_dir: None,
            stack: Default::default(),
            allow_host_loopback: false,
            shape: Default::default(),
        },
        accel: decision,
    };
    let mut plan = plan(&launch, base, &cdir)?;
    let upstreams = kvci_net::dns::upstreams_from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let mut network = ClusterNetwork::create(NetworkConfig {
        topology: plan.topology.clone(),
        dns_upstreams: upstreams,
        mtu: 1500,
        allow_host_loopback: false,
    })
        .await
        .context("creating the build network")?;
    let node_plan = plan.nodes.remove(0);
    std::fs::create_dir_all(node_plan.dir.root())?;
    crate::disk::create_overlay(&node_plan.base_disk, &node_plan.dir.disk())?;
    let ip = node_plan.ip;
    let overlay = node_plan.dir.disk();
    let serial = node_plan.dir.serial_log();
    eprintln!("kvci: building {name} on {} ({}): booting the base", base.manifest.name, launch.accel.accel);
    let qemu = QEMU.locate()?;
    let (node, took) = boot_node(&qemu, node_plan, network.take_taps(1), network.ns().clone(), network.leases(), Duration::from_secs(300))
        .await
        .with_context(|| format!("booting the base image {}", base.manifest.name))?;
    eprintln!("kvci: base ready in {:.1}s", took.as_secs_f64());

    let phases = run_phases(provider, network.ns().clone(), ip, &keys.private).await;
    let kind = node.shutdown(Duration::from_secs(120)).await;
    network.shutdown().await;
    if let Err(e) = phases {
        return Err(e.context(format!("building {name} failed; nothing was added to the store")));
    }
    if kind != ShutdownKind::Graceful {
        let tail = std::fs::read(&serial).map(|b| crate::tools::tail(&b, 15)).unwrap_or_default();
        bail!("the guest did not power off cleanly after provisioning ({kind:?}); not freezing a disk that may be inconsistent\n{tail}");
    }

    // Freeze: the overlay becomes the new layer (or a flattened copy of the whole chain).
    let layer = staging.path().join("layer");
    std::fs::create_dir_all(&layer)?;
    let parent = if opts.compact {
        crate::disk::flatten(&overlay, &layer.join("disk.qcow2"))?;
        None
    } else {
        std::fs::rename(&overlay, layer.join("disk.qcow2"))?;
        Some(base.manifest.id.clone())
    };
    let up = match &provider.recipe.up {
        Some(h) => {
            std::fs::copy(provider.dir.join(&h.first), layer.join("up-first.sh"))?;
            if let Some(o) = &h.others {
                std::fs::copy(provider.dir.join(o), layer.join("up-others.sh"))?;
            }
            Some(UpManifest { first: "up-first.sh".into(), others: h.others.as_ref().map(|_| "up-others.sh".into()), parallel: h.parallel, last: None })
        }
        None => None,
    };
    let append = [base.manifest.append.as_str(), provider.recipe.kernel_args.as_str()].join(" ").trim().to_string();
    let manifest = Manifest {
        name: name.to_string(),
        id: id.to_string(),
        kernel: base.manifest.kernel.clone(),
        initrd: base.manifest.initrd.clone(),
        disk: "disk.qcow2".into(),
        append,
        memory_mib: provider.recipe.defaults.memory_mib.unwrap_or(base.manifest.memory_mib),
        cpus: provider.recipe.defaults.cpus.unwrap_or(base.manifest.cpus),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        size: 0,
        parent,
        boot_layer: Some(base.manifest.boot_layer.clone().unwrap_or_else(|| base.manifest.id.clone())),
        up,
        nodes: provider.recipe.defaults.nodes,
        frozen: None,
        ports: base.manifest.ports.clone().into_iter().chain(provider.recipe.ports.clone()).collect(),
        access: base.manifest.access.clone(),
        // Checked when the recipe was loaded; a provider inherits its base's shape field by field.
        shape: provider.recipe.defaults.shape()?.or(&base.manifest.shape),
    };
    let image = store.commit(&store.lock()?, &layer, manifest)?;
    eprintln!("kvci: image {name} built in {:.1}s ({} MiB new layer)", started.elapsed().as_secs_f64(), image.manifest.size >> 20);
    Ok(image)
}

/// Copies each phase's files and script into the guest and runs it, streaming its output.
async fn run_phases(provider: &Loaded, ns: Arc<kvci_net::netns::NetNs>, ip: std::net::IpAddr, key: &Path) -> Result<()> {
    let addr = std::net::SocketAddr::from((ip, 22));
    let stream = kvci_net::forward::connect_inside(ns, addr).await.context("connecting to the guest's sshd")?;
    let mut session = ssh::client::connect(stream, "root", key).await?;
    let n = provider.recipe.phases.len();
    for (i, phase) in provider.recipe.phases.iter().enumerate() {
        let t = Instant::now();
        eprintln!("kvci: [{}/{n}] phase {}", i + 1, phase.name);
        for f in &phase.files {
            session.upload(&provider.dir.join(&f.src), &f.dst).await.with_context(|| format!("copying {} to {}", f.src.display(), f.dst))?;
        }
        if !phase.debs.is_empty() {
            let debs = phase.debs.clone();
            let dir = tempfile::tempdir()?;
            let dir_path = dir.path().to_path_buf();
            let files = tokio::task::spawn_blocking(move || crate::image::debs::download(&dir_path, &debs)).await??;
            session.exec("mkdir -p /var/cache/kvci/debs", None).await?;
            for f in files {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                session.upload(&f, &format!("/var/cache/kvci/debs/{name}")).await.with_context(|| format!("copying {name}"))?;
            }
        }
        let script = format!("/tmp/kvci-phase-{}.sh", i + 1);
        session.upload(&provider.dir.join(&phase.script), &script).await.context("copying the phase script")?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let prefix = format!("  {} | ", phase.name);
        let mut out = Tee::new(&prefix, tail.clone());
        let mut err = Tee::new(&prefix, tail.clone());
        let code = session.exec_into(&format!("sh -e {script}"), &mut out, &mut err).await?;
        if code != 0 {
            bail!(
                "phase {:?} ({}) failed with exit code {code}; its output ended with:\n{}",
                phase.name,
                phase.script.display(),
                tail_lines(&tail, 20)
            );
        }
        eprintln!("kvci: [{}/{n}] phase {} done in {:.1}s", i + 1, phase.name, t.elapsed().as_secs_f64());
    }
    // Flush the guest's page cache before the power-off freezes the disk.
    let _ = session.exec("sync", None).await;
    let _ = session.close().await;
    Ok(())
}
