//! podman's pre-checkpoints: `checkpoint -P` stores a running container's
//! memory and leaves it running, tracking its writes; `checkpoint
//! --with-previous` then stores only the pages written since, which cuts
//! the time the container is frozen in a migration.
//!
//! Layout, as podman's: the pre-checkpoint's images are in
//! `ROOT/containers/ID/pre-checkpoint/` (one per container; a new `-P`
//! replaces it), and the checkpoint's images link to it with
//! `checkpoint/parent -> ../../pre-checkpoint`, which holds both in place
//! and after an import. A pre-checkpoint archive (`-P -e FILE`) holds
//! `config.dump` and `pre-checkpoint/`; `restore -i FILE --import-previous
//! PRE` puts PRE's images beside the checkpoint again, after checking that
//! both come from the same container.
//!
//! The tracking lives in the engine's holder process; it ends with the
//! container (the holder exits with the tracked processes), with the
//! checkpoint that uses it, or when a new `-P` replaces it.

use crate::checkpoint::{checkpoint_report, criu_statistics, freezer_of, CheckpointOpts};
use crate::ckpt_archive::{self, Compression};
use crate::container;
use crate::error::{Ctx, Result, RuntimeError};
use crate::store::{self, ContainerConfig, Status, Store};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The pre-checkpoint's images, in the container's directory.
pub const PRE: &str = "pre-checkpoint";
/// Where a checkpoint's images find their pre-checkpoint (from
/// `ID/<bundle>/checkpoint/`).
pub const PARENT_LINK_TARGET: &str = "../../pre-checkpoint";

pub fn pre_dir(store: &Store, id: &str) -> PathBuf {
    store.ctr_dir(id).join(PRE)
}

/// Whether the container has a pre-checkpoint.
pub fn has_pre(store: &Store, id: &str) -> bool {
    pre_dir(store, id).join("inventory.img").is_file()
}

/// Ends the tracking of the container's pre-checkpoint and moves it out of
/// its place, to be removed (see `monitor::retire`).
pub fn retire_pre(store: &Store, id: &str) -> Option<PathBuf> {
    let dir = pre_dir(store, id);
    stasis_engine::incremental::holder::stop(&dir);
    crate::monitor::retire(store, &dir)
}

/// Ends the tracking of the container's pre-checkpoint and removes it.
pub fn drop_pre(store: &Store, id: &str) {
    if let Some(retired) = retire_pre(store, id) {
        crate::monitor::remove_retired(&retired);
    }
}

/// `checkpoint -P`: pre-dumps the running container (replacing an earlier
/// pre-checkpoint), optionally exports it; returns statistics.
pub fn pre_checkpoint(store: &Store, cfg: &ContainerConfig, exe: &Path, o: &CheckpointOpts) -> Result<Value> {
    let t0 = Instant::now();
    let _lock = store.lock_container(&cfg.id)?;
    let st = container::refresh(store, cfg);
    if st.status != Status::Running {
        return Err(RuntimeError::Invalid(format!("container {} is not running", cfg.name)));
    }
    // The old tracking must end first: a range tracked by one uffd cannot
    // be registered with another.
    drop_pre(store, &cfg.id);
    let dir = pre_dir(store, &cfg.id);
    let dopts = stasis_engine::DumpOpts { cgroup: freezer_of(store, &st), ..Default::default() };
    let stats = stasis_engine::pre_dump(st.pid, &dir, &dopts, exe).map_err(|source| RuntimeError::Checkpoint {
        what: format!("pre-checkpointing container {}", cfg.name),
        source,
    })?;
    if let Some(out) = &o.export {
        export(store, cfg, &dir, out, o.compression.unwrap_or(Compression::Zstd))?;
    }
    let runtime_us = stats.total_time.as_micros() as u64;
    Ok(checkpoint_report(cfg, t0, runtime_us, criu_statistics(&stats)))
}

/// Packs `config.dump` and the pre-checkpoint's images (hard-linked into a
/// scratch directory, not copied) into `out`.
fn export(store: &Store, cfg: &ContainerConfig, images: &Path, out: &Path, c: Compression) -> Result<()> {
    let scratch = store.tmp_dir().join(format!("pre-export-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let res = (|| {
        let linked = scratch.join(PRE);
        fs::create_dir_all(&linked).ctx(|| format!("creating {}", linked.display()))?;
        store::write_json_atomic(&scratch.join("config.dump"), cfg)?;
        for e in fs::read_dir(images).ctx(|| format!("reading {}", images.display()))? {
            let e = e.ctx(|| format!("reading {}", images.display()))?;
            let name = e.file_name();
            // The tracker names a process of this host: useless elsewhere.
            if name == stasis_engine::incremental::holder::TRACKER_FILE {
                continue;
            }
            fs::hard_link(e.path(), linked.join(&name)).ctx(|| format!("linking {}", e.path().display()))?;
        }
        ckpt_archive::pack(&scratch, out, c)
    })();
    let _ = fs::remove_dir_all(&scratch);
    res
}

/// Whether the images of a checkpoint bundle were made `--with-previous`.
pub fn needs_previous(bundle_images: &Path) -> bool {
    fs::symlink_metadata(bundle_images.join(stasis_image::PARENT_LINK)).is_ok()
}

/// `restore -i CP --import-previous PRE`: unpacks PRE's images into the
/// container directory `ctr_dir` (as `pre-checkpoint/`) and links the
/// unpacked checkpoint `bundle` to them. Refuses a PRE of another
/// container (`id` is the checkpointed container's id).
pub fn import_previous(store: &Store, archive: &Path, id: &str, ctr_dir: &Path, bundle: &Path) -> Result<()> {
    let scratch = store.tmp_dir().join(format!("import-pre-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    ckpt_archive::unpack_images(archive, &scratch, PRE)?;
    let res = (|| {
        let pre_cfg: ContainerConfig = store::read_json(&scratch.join("config.dump"))?;
        if pre_cfg.id != id {
            return Err(RuntimeError::Invalid(format!(
                "{} is a pre-checkpoint of container {} ({}), not of the checkpointed container ({})",
                archive.display(),
                pre_cfg.name,
                &pre_cfg.id[..12.min(pre_cfg.id.len())],
                &id[..12.min(id.len())]
            )));
        }
        let dest = ctr_dir.join(PRE);
        fs::rename(scratch.join(PRE), &dest).ctx(|| format!("moving the pre-checkpoint to {}", dest.display()))?;
        link_parent(bundle)
    })();
    let _ = fs::remove_dir_all(&scratch);
    res
}

/// Points the bundle's images at the container's pre-checkpoint (whatever
/// link an archive carried is replaced: only this target is trusted).
fn link_parent(bundle: &Path) -> Result<()> {
    let link = bundle.join("checkpoint").join(stasis_image::PARENT_LINK);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(PARENT_LINK_TARGET, &link).ctx(|| format!("creating {}", link.display()))
}
