//! `kvci vm freeze`: a consistent cut of a running cluster — every node paused, then each one's
//! RAM and device state saved (QMP `migrate` to a file) beside a copy of its disk overlay — stored
//! as a frozen cluster image that `vm up` resumes instead of booting.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::cluster::layout::ClusterDir;
use crate::cluster::plan::Launch;
use crate::image::digest::LayerDigest;
use crate::image::name::ImageName;
use crate::image::store::{FrozenManifest, FrozenNode, Image, Manifest, Store};
use crate::supervisor::node_task::{NodeCmd, NodeHandle};
use futures_util::future::join_all;

/// How long saving one node's state may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Names of the frozen cluster key inside a layer (`.key` files stay 0400 in the store).
pub const KEY_FILE: &str = "cluster.key";
/// The public half.
pub const PUB_FILE: &str = "cluster.key.pub";

/// What the supervisor knows that a frozen image records.
pub(crate) struct FreezeContext<'a> {
    /// The image store.
    pub store: &'a Store,
    /// The image the cluster was started from.
    pub image: &'a Image,
    /// What `up` asked for.
    pub launch: &'a Launch,
    /// The cluster's files.
    pub dir: &'a ClusterDir,
    /// The QEMU version running the nodes.
    pub qemu_version: String,
}

/// What `vm freeze` asked for.
#[derive(Debug, Clone)]
pub(crate) struct FreezeRequest {
    /// The image to make.
    pub to: String,
    /// Resume the nodes afterwards.
    pub keep_running: bool,
    /// Replace an image of that name.
    pub force: bool,
    /// How long to wait for the image store's lock (another kvci building or importing).
    pub store_timeout: Duration,
}

/// Freezes the cluster into image `req.to` (refused if that name exists, unless `force`); the
/// nodes are left paused, or running again with `keep_running`. On any failure after the pause
/// the nodes run on. Returns the image's name and how long the cut took. Blocking work (copies,
/// the store's lock, the commit) runs off the supervisor's thread, which keeps serving.
pub(crate) async fn freeze(ctx: &FreezeContext<'_>, handles: &[NodeHandle], uuids: &[String], req: FreezeRequest) -> Result<(String, f64)> {
    let (to, keep_running, force) = (req.to.as_str(), req.keep_running, req.force);
    let name = ImageName::parse(to)?;
    refuse_unfreezable(&ctx.launch.spec.shape)?;
    refuse_existing(ctx.store, &name, force)?;
    let started = Instant::now();
    let staging = ctx.store.staging()?;

    for h in handles {
        h.ask(NodeCmd::Pause).await.map_err(anyhow::Error::msg)?;
    }
    let result = save_and_commit(ctx, handles, uuids, &name, &req, staging, started).await;
    if result.is_err() || keep_running {
        for h in handles {
            let resumed = h.ask(NodeCmd::Resume).await.map_err(anyhow::Error::msg);
            if result.is_ok() {
                resumed?;
            }
        }
    }
    match result {
        Ok(cut) => Ok((name.to_string(), cut)),
        Err(e) => Err(e.context("freezing failed, the cluster runs on")),
    }
}

/// Extra disks are not copied into frozen images, and a passed-through host device cannot be
/// saved: such clusters are refused before anything pauses.
fn refuse_unfreezable(shape: &crate::shape::NodeShape) -> Result<()> {
    if shape.has_extra_disks() {
        bail!(
            "this cluster has extra disks (--nvme, --scsi, --usb or --shared-disk), which frozen images do not keep: \
             freeze a cluster started without them"
        );
    }
    if let Some(gpu) = &shape.gpu {
        bail!("this cluster passes host device {gpu} through (--gpu), whose state QEMU cannot save: it cannot be frozen");
    }
    Ok(())
}

fn refuse_existing(store: &Store, name: &ImageName, force: bool) -> Result<()> {
    if !force && store.exists(name) {
        bail!("image {name} already exists: freeze to another name, or pass --force to replace it");
    }
    Ok(())
}

/// Everything between the pause and the resume: save each node, copy its overlay, commit.
async fn save_and_commit(
    ctx: &FreezeContext<'_>,
    handles: &[NodeHandle],
    uuids: &[String],
    name: &ImageName,
    req: &FreezeRequest,
    staging: tempfile::TempDir,
    started: Instant,
) -> Result<f64> {
    crate::fault::check(ctx.dir.root(), "freeze:save")?;
    let saves = join_all(handles.iter().map(|h| {
        let path = staging.path().join(format!("{}.state", h.name));
        h.ask(move |tx| NodeCmd::Save(path, SAVE_TIMEOUT, tx))
    }))
    .await;
    saves.into_iter().collect::<Result<Vec<()>, String>>().map_err(anyhow::Error::msg)?;
    let cut = started.elapsed().as_secs_f64();

    // QEMU flushed and released every disk when its save completed: the overlays are final.
    let mut nodes = Vec::new();
    let mut copies = Vec::new();
    for (h, uuid) in handles.iter().zip(uuids) {
        let disk = format!("{}.qcow2", h.name);
        copies.push((ctx.dir.node(&h.name).disk(), staging.path().join(&disk)));
        nodes.push(FrozenNode { name: h.name.clone(), uuid: uuid.clone(), disk, state: format!("{}.state", h.name) });
    }
    let (keys, into, root) = (ctx.dir.ssh_dir(), staging.path().to_path_buf(), ctx.dir.root().to_path_buf());
    off_thread(move || {
        crate::fault::check(&root, "freeze:copy")?;
        for (from, to) in &copies {
            copy_sparse(from, to)?;
        }
        crate::fault::check(&root, "freeze:key")?;
        std::fs::copy(keys.join("id_ed25519"), into.join(KEY_FILE)).context("copying the cluster key")?;
        std::fs::copy(keys.join("id_ed25519.pub"), into.join(PUB_FILE)).context("copying the cluster key")?;
        Ok(())
    })
    .await?;

    let spec = &ctx.launch.spec;
    let base = &ctx.image.manifest;
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut id = LayerDigest::default();
    id.feed("frozen", format!("{}/{}/{}", spec.name, name, created.as_nanos()).as_bytes());
    let manifest = Manifest {
        name: name.to_string(),
        id: id.finish(),
        kernel: base.kernel.clone(),
        initrd: base.initrd.clone(),
        disk: nodes[0].disk.clone(),
        append: base.append.clone(),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        created: created.as_secs(),
        size: 0,
        parent: Some(base.id.clone()),
        boot_layer: Some(base.boot_layer.clone().unwrap_or_else(|| base.id.clone())),
        up: None,
        nodes: Some(spec.nodes),
        frozen: Some(FrozenManifest {
            nodes,
            subnet: spec.subnet.clone(),
            accel: ctx.launch.accel.accel,
            qemu_version: ctx.qemu_version.clone(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            stack: spec.stack,
            shape: spec.shape.clone(),
        }),
        ports: base.ports.clone(),
        access: base.access.clone(),
        shape: Default::default(),
    };
    let (store, name, force, timeout, root) = (ctx.store.clone(), name.clone(), req.force, req.store_timeout, ctx.dir.root().to_path_buf());
    off_thread(move || {
        let lock = store.lock_within(timeout)?;
        crate::fault::check(&root, "freeze:commit")?;
        // Another kvci may have taken the name while this one saved.
        refuse_existing(&store, &name, force)?;
        store.commit_staged(&lock, staging, manifest)?;
        Ok(())
    })
    .await?;
    Ok(cut)
}

/// Runs blocking work on tokio's blocking pool.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.context("a freeze step panicked")?
}

/// Copies a disk keeping its holes (overlays are mostly holes).
fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp").arg("--sparse=always").arg(from).arg(to).status().context("running cp")?;
    if !status.success() {
        bail!("copying {} failed", from.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::NodeShape;

    #[test]
    fn clusters_with_extra_disks_or_a_gpu_are_not_frozen() {
        for (shape, word) in [
            (NodeShape { nvme: vec![512], ..Default::default() }, "extra disks"),
            (NodeShape { shared_disks: vec![512], ..Default::default() }, "extra disks"),
            (NodeShape { gpu: Some("0000:01:00.0".into()), ..Default::default() }, "--gpu"),
        ] {
            let err = refuse_unfreezable(&shape).unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
        assert!(refuse_unfreezable(&NodeShape { numa: Some(2), secondary_nics: Some(1), hugepages_2m: Some(8), ..Default::default() }).is_ok());
    }
}
