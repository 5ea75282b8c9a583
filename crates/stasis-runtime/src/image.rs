//! Images: `import` of a rootfs tarball, `load` of docker-archive and
//! OCI-archive tarballs, listing, lookup and removal.
//!
//! An image is `ROOT/images/ID/` with `image.json` (our record: names,
//! layer diff ids), `config.json` (the OCI image config, whose sha256 is
//! the id, as docker does) and `layers/N/` (each layer extracted, bottom
//! first; they become overlayfs lower dirs). An image is built in a staging
//! dir under `ROOT/tmp` and renamed into place, so a failed import leaves
//! nothing behind.

use crate::archive::{self, HashingReader};
use crate::error::{Ctx, Result, RuntimeError};
use crate::store::{self, now_ns, read_json, write_json_atomic, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// Our record of an image (`image.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ImageRecord {
    pub id: String,
    pub names: Vec<String>,
    pub layers: Vec<String>,
    pub created: u128,
    pub size: u64,
}

/// What a container inherits from its image's config.
#[derive(Clone, Debug, Default)]
pub struct RunDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
}

/// `localhost/NAME:latest` style full name for a short one.
pub fn normalize_name(name: &str) -> String {
    let (repo, tag) = split_tag(name);
    let repo = if repo.contains('/') { repo.to_string() } else { format!("localhost/{repo}") };
    format!("{repo}:{}", tag.unwrap_or("latest"))
}

fn split_tag(name: &str) -> (&str, Option<&str>) {
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// Whether the stored full `name` is what the user meant by `query`.
fn name_matches(name: &str, query: &str) -> bool {
    if name == query || name == normalize_name(query) {
        return true;
    }
    let (q, qt) = split_tag(query);
    let (n, nt) = split_tag(name);
    let tag_ok = qt.unwrap_or("latest") == nt.unwrap_or("latest");
    tag_ok && (n.ends_with(&format!("/{q}")) || n == q)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !name.starts_with(['.', '-', '/', ':'])
}

pub fn list(store: &Store) -> Vec<ImageRecord> {
    let dir = store.images_dir();
    let mut v: Vec<ImageRecord> =
        store::ids_in(&dir).iter().filter_map(|id| read_json(&dir.join(id).join("image.json")).ok()).collect();
    v.sort_by_key(|r| r.created);
    v
}

/// The image named `query` or whose id starts with it.
pub fn find(store: &Store, query: &str) -> Result<ImageRecord> {
    let all = list(store);
    if let Some(r) = all.iter().rev().find(|r| r.names.iter().any(|n| name_matches(n, query))) {
        return Ok(r.clone());
    }
    let q = query.strip_prefix("sha256:").unwrap_or(query);
    let hits: Vec<&ImageRecord> = all.iter().filter(|r| store::is_hex(q) && r.id.starts_with(q)).collect();
    match hits.len() {
        1 => Ok(hits[0].clone()),
        0 => Err(RuntimeError::NotFound(format!("no such image: {query}"))),
        n => Err(RuntimeError::Conflict(format!("{query} matches {n} images: use a longer id"))),
    }
}

/// Lower dirs for overlayfs, top layer first (overlayfs's order).
pub fn lower_dirs(store: &Store, rec: &ImageRecord) -> Vec<PathBuf> {
    let base = store.images_dir().join(&rec.id).join("layers");
    (0..rec.layers.len()).rev().map(|i| base.join(i.to_string())).collect()
}

pub fn defaults(store: &Store, rec: &ImageRecord) -> RunDefaults {
    let cfg: Value = read_json(&store.images_dir().join(&rec.id).join("config.json")).unwrap_or(Value::Null);
    let c = &cfg["config"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    RunDefaults {
        entrypoint: strs(&c["Entrypoint"]),
        cmd: strs(&c["Cmd"]),
        env: strs(&c["Env"]),
        workdir: c["WorkingDir"].as_str().unwrap_or("").to_string(),
    }
}

/// A staging dir removed on drop unless committed.
struct Staging(Option<PathBuf>);

impl Staging {
    fn new(store: &Store) -> Result<Staging> {
        let p = store.tmp_dir().join(format!("stage-{}", &store::new_id()[..16]));
        fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        Ok(Staging(Some(p)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().expect("staging dir")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Applies `--change` instructions (CMD, ENTRYPOINT, ENV, WORKDIR) to an
/// OCI config's `config` object.
fn apply_change(cfg: &mut Value, change: &str) -> Result<()> {
    let (instr, arg) = change.trim().split_once(char::is_whitespace).unwrap_or((change.trim(), ""));
    let arg = arg.trim();
    let argv = || -> Result<Value> {
        if arg.starts_with('[') {
            let v: Vec<String> = serde_json::from_str(arg)
                .map_err(|e| RuntimeError::Invalid(format!("bad --change {change:?}: {e}")))?;
            Ok(json!(v))
        } else {
            Ok(json!(["/bin/sh", "-c", arg]))
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => cfg["Cmd"] = argv()?,
        "ENTRYPOINT" => cfg["Entrypoint"] = argv()?,
        "WORKDIR" => cfg["WorkingDir"] = json!(arg),
        "ENV" => {
            let kv = if arg.contains('=') { arg.to_string() } else { arg.replacen(' ', "=", 1) };
            let env = cfg["Env"].as_array_mut();
            match env {
                Some(a) => a.push(json!(kv)),
                None => cfg["Env"] = json!([kv]),
            }
        }
        other => return Err(RuntimeError::Invalid(format!("unsupported --change instruction {other:?}"))),
    }
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Writes the record and config into the staging dir and renames it into
/// place; moves `names` away from any other image.
fn commit(store: &Store, stage: Staging, config: Value, names: Vec<String>, layers: Vec<String>) -> Result<String> {
    let bytes = serde_json::to_vec(&config).map_err(|e| RuntimeError::Invalid(e.to_string()))?;
    let id = hex::encode(Sha256::digest(&bytes));
    let size = dir_size(&stage.path().join("layers"));
    fs::write(stage.path().join("config.json"), &bytes).ctx(|| "writing image config")?;
    let rec = ImageRecord { id: id.clone(), names: names.clone(), layers, created: now_ns(), size };
    write_json_atomic(&stage.path().join("image.json"), &rec)?;
    let _lock = store.lock_store()?;
    for mut other in list(store) {
        if other.id != id && other.names.iter().any(|n| names.contains(n)) {
            other.names.retain(|n| !names.contains(n));
            write_json_atomic(&store.images_dir().join(&other.id).join("image.json"), &other)?;
        }
    }
    let dest = store.images_dir().join(&id);
    if dest.exists() {
        let mut old: ImageRecord = read_json(&dest.join("image.json"))?;
        for n in names {
            if !old.names.contains(&n) {
                old.names.push(n);
            }
        }
        write_json_atomic(&dest.join("image.json"), &old)?;
        return Ok(id);
    }
    let mut stage = stage;
    let src = stage.0.take().expect("staging dir");
    fs::rename(&src, &dest).ctx(|| format!("moving image into {}", dest.display()))?;
    Ok(id)
}

/// `stasis import TARBALL NAME --change ...`: one layer from a rootfs tarball.
pub fn import(store: &Store, tarball: &Path, name: &str, changes: &[String]) -> Result<String> {
    if !valid_name(name) {
        return Err(RuntimeError::Invalid(format!("invalid image name {name:?}")));
    }
    let mut c = json!({});
    for ch in changes {
        apply_change(&mut c, ch)?;
    }
    let stage = Staging::new(store)?;
    let layer = stage.path().join("layers/0");
    fs::create_dir_all(&layer).ctx(|| "creating layer dir")?;
    let what = tarball.display().to_string();
    let mut hr = HashingReader::new(archive::open_decompressed(tarball)?);
    archive::extract(&mut hr, &layer, &what)?;
    let diff = hr.finish().map_err(|e| RuntimeError::Archive(format!("{what}: {e}")))?;
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": store::rfc3339(now_ns()),
        "config": c, "rootfs": {"type": "layers", "diff_ids": [diff]},
    });
    commit(store, stage, config, vec![normalize_name(name)], vec![diff])
}

/// `stasis load -i ARCHIVE`: docker-archive or OCI-archive. Returns the
/// names (or ids) loaded.
pub fn load(store: &Store, path: &Path) -> Result<Vec<String>> {
    let what = path.display().to_string();
    let outer = Staging::new(store)?;
    archive::extract(archive::open_decompressed(path)?, outer.path(), &what)?;
    let o = outer.path();
    let bad = |m: String| RuntimeError::Archive(format!("{what}: {m}"));
    let (config_path, layer_paths, names) = if o.join("manifest.json").is_file() {
        let m: Value = read_json(&o.join("manifest.json"))?;
        let m = m.get(0).ok_or_else(|| bad("manifest.json lists no image".into()))?;
        let cfg = m["Config"].as_str().ok_or_else(|| bad("manifest.json has no Config".into()))?;
        let layers: Vec<PathBuf> =
            m["Layers"].as_array().into_iter().flatten().filter_map(|l| l.as_str()).map(|l| o.join(l)).collect();
        let names: Vec<String> =
            m["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).map(normalize_name).collect();
        (o.join(cfg), layers, names)
    } else if o.join("index.json").is_file() {
        let blob = |d: &str| o.join("blobs").join(d.replace(':', "/"));
        let idx: Value = read_json(&o.join("index.json"))?;
        let desc = &idx["manifests"][0];
        let digest = desc["digest"].as_str().ok_or_else(|| bad("index.json lists no manifest".into()))?;
        let man: Value = read_json(&blob(digest))?;
        let cfg = man["config"]["digest"].as_str().ok_or_else(|| bad("manifest has no config".into()))?;
        let layers: Vec<PathBuf> =
            man["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str()).map(blob).collect();
        // Docker's OCI export names the image in io.containerd.image.name;
        // ref.name may be a bare tag, which names nothing.
        let ann = &desc["annotations"];
        let names = ann["io.containerd.image.name"]
            .as_str()
            .or(ann["org.opencontainers.image.ref.name"].as_str())
            .filter(|n| n.contains(':') || n.contains('/'))
            .map(|n| vec![normalize_name(n)])
            .unwrap_or_default();
        (blob(cfg), layers, names)
    } else {
        return Err(bad("neither a docker-archive (manifest.json) nor an OCI archive (index.json)".into()));
    };
    if layer_paths.is_empty() {
        return Err(bad("the image has no layers".into()));
    }
    let config: Value = read_json(&config_path)?;
    let stage = Staging::new(store)?;
    let mut diffs = Vec::new();
    for (i, lp) in layer_paths.iter().enumerate() {
        let dir = stage.path().join("layers").join(i.to_string());
        fs::create_dir_all(&dir).ctx(|| "creating layer dir")?;
        let lw = format!("{what}: layer {}", lp.strip_prefix(o).unwrap_or(lp).display());
        let mut hr = HashingReader::new(archive::open_decompressed(lp)?);
        archive::extract(&mut hr, &dir, &lw)?;
        diffs.push(hr.finish().map_err(|e| RuntimeError::Archive(format!("{lw}: {e}")))?);
    }
    let names_out = names.clone();
    let id = commit(store, stage, config, names, diffs)?;
    Ok(if names_out.is_empty() { vec![id] } else { names_out })
}

/// `stasis rmi IMAGE`: refused while a container uses it.
pub fn remove(store: &Store, query: &str) -> Result<String> {
    let rec = find(store, query)?;
    let _lock = store.lock_store()?;
    if let Some(c) = store.containers().iter().find(|c| c.image_id == rec.id) {
        return Err(RuntimeError::Conflict(format!(
            "image {query} is in use by container {} ({})",
            c.name,
            &c.id[..12]
        )));
    }
    let dir = store.images_dir().join(&rec.id);
    let trash = store.tmp_dir().join(format!("rm-{}", rec.id));
    fs::rename(&dir, &trash).ctx(|| format!("removing {}", dir.display()))?;
    fs::remove_dir_all(&trash).ctx(|| format!("removing {}", trash.display()))?;
    Ok(rec.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize_name("busybox"), "localhost/busybox:latest");
        assert_eq!(normalize_name("a/b:1"), "a/b:1");
        assert!(name_matches("localhost/busybox:latest", "busybox"));
        assert!(name_matches("docker.io/library/nginx:1.2", "nginx:1.2"));
        assert!(!name_matches("localhost/busybox:latest", "busybox:2"));
    }

    #[test]
    fn changes() {
        let mut c = json!({});
        apply_change(&mut c, r#"CMD ["/bin/sh", "-c", "x"]"#).unwrap();
        apply_change(&mut c, "ENV A=1").unwrap();
        assert_eq!(c["Cmd"][2], "x");
        assert_eq!(c["Env"][0], "A=1");
        assert!(apply_change(&mut c, "FROB x").is_err());
    }
}
