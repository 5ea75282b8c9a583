//! Files opened and then unlinked ("ghost files", as CRIU calls them).
//!
//! Dump: the bytes are read through `/proc/PID/fd/N`, which still reaches
//! the unlinked inode, and kept with the mechanism `files.rs` already has
//! for deleted mapped files: a regular-file entry with its original name,
//! flags, offset and `size`, and the bytes in `ghost-ID.data`.
//! Restore (`files.rs`): the bytes are copied into a temporary file beside
//! the original path, the task opens it with the dumped flags and offset,
//! and the temporary file is unlinked once the tree runs: the process again
//! holds an unlinked file with the same contents.
//! Limits: the restored file's link reads `.../.stasis-ghost-ID-PID
//! (deleted)`, not the old name; a file both mapped and open is restored as
//! two copies; only regular files (not deleted directories or FIFOs).

use crate::error::{dump_io, DumpError};
use crate::kinds::fdkind::FdDumpCtx;
use crate::kinds::files::FdSeen;
use stasis_image::pb;

pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen, path: &str) -> Result<Option<(pb::FdTypes, u32)>, DumpError> {
    let pid = ctx.pid;
    let link = crate::proc::fdinfo::fd_link_path(pid, f.fd);
    let md = std::fs::metadata(&link).map_err(dump_io(pid, format!("stat deleted file of fd {}", f.fd)))?;
    if !md.is_file() {
        return Ok(None); // refused by the dispatcher, naming it
    }
    let bytes = std::fs::read(&link).map_err(dump_io(pid, format!("read deleted file {path} of fd {}", f.fd)))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions());
    let id = ctx.table.push_ghost(path, f.flags, f.pos, bytes, Some(mode));
    Ok(Some((pb::FdTypes::Reg, id)))
}
