//! Unix sockets: stream, dgram and seqpacket; unnamed, path-bound and
//! abstract; listening; connected pairs with the data queued in each
//! direction.
//!
//! Dump: UNIX_DIAG (by inode) gives the type, state, bound name, socket file
//! inode, peer inode, pending connections and shutdown state; the queued
//! data is read from the dumper's copy of the fd (`pidfd_getfd`) with
//! `recvmsg(MSG_PEEK)`, stepping through messages with `SO_PEEK_OFF` (put
//! back as it was afterwards), so nothing is consumed. A message carrying
//! fds (`SCM_RIGHTS`) and a listening socket with connections not accepted
//! yet are refused. Queued data goes to `sk-queues.img` (CRIU's layout: one
//! `sk_packet_entry` + bytes per message, for the socket that will read it).
//!
//! Restore: every unix socket of the images is created at once by the
//! restorer ([`Prepared`]): bound (a stale socket file at the path is
//! removed first; mode and owner are put back; a socket whose file had been
//! unlinked is unlinked again), listening, connected pairs from
//! `socketpair()` (both ends created once, each handed to its owner),
//! dgram sockets connected to their bound peer; queues are refilled by
//! sending from the peer (or from a temporary socket to a bound receiver),
//! then shutdown state, options and file flags are set. Each task takes its
//! socket with `pidfd_getfd`.

use super::diag;
use super::opts;
use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::FdDumpCtx;
use crate::kinds::files::{FdSeen, FdTypes};
use stasis_image::magic::file_name;
use stasis_image::{pb, ImageDir, ImageKind, ImageReader, ImageWriter};
use stasis_sys::net::{self as n, SockAddr};
use stasis_sys::Pid;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const ST_ESTABLISHED: u32 = 1;
const ST_LISTEN: u32 = 10;
/// Largest total of queued bytes we read from one socket.
const MAX_QUEUE: usize = 64 << 20;

use crate::kinds::files::fown;

fn type_name(ty: u32) -> &'static str {
    match ty as i32 {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "unknown-type",
    }
}

/// A readable name for messages.
pub fn describe(name: &[u8]) -> String {
    match name.first() {
        None => "unnamed".into(),
        Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
        Some(_) => String::from_utf8_lossy(name).into_owned(),
    }
}

/// Reads every queued message of `sk` without consuming it.
fn peek_queue(pid: Pid, fd: i32, ty: u32, sk: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, DumpError> {
    let what = |w: &str| format!("fd {fd}: {w}");
    let old = n::getsockopt_int(sk, libc::SOL_SOCKET, n::SO_PEEK_OFF).map_err(dump_io(pid, what("SO_PEEK_OFF")))?;
    n::setsockopt_int(sk, libc::SOL_SOCKET, n::SO_PEEK_OFF, 0).map_err(dump_io(pid, what("set SO_PEEK_OFF")))?;
    let bufsz = (n::getsockopt_int(sk, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0).max(0) as usize).max(65536);
    let mut msgs = Vec::new();
    let mut total = 0usize;
    let res = loop {
        match n::peek(sk, bufsz) {
            Ok(None) => break Ok(()),
            Ok(Some(p)) if p.has_fds => {
                break Err(DumpError::UnsupportedFd {
                    pid,
                    fd,
                    kind: "unix socket with a file descriptor in flight (SCM_RIGHTS) in its queue".into(),
                })
            }
            Ok(Some(p)) if p.truncated => {
                break Err(dump_io(pid, what("peek queued message"))(std::io::Error::other("message too long")))
            }
            // End of data of a shut-down peer, or an empty datagram (which
            // does not move the peek offset).
            Ok(Some(p)) if p.data.is_empty() => {
                if ty == libc::SOCK_DGRAM as u32 {
                    log::warn!("process {pid}, fd {fd}: empty datagrams in a unix socket queue are not restored");
                }
                break Ok(());
            }
            Ok(Some(p)) => {
                total += p.data.len();
                msgs.push(p.data);
                if total > MAX_QUEUE {
                    break Err(dump_io(pid, what("peek queued data"))(std::io::Error::other("over 64 MiB queued")));
                }
            }
            Err(e) => break Err(dump_io(pid, what("peek queued data"))(e)),
        }
    };
    let _ = n::setsockopt_int(sk, libc::SOL_SOCKET, n::SO_PEEK_OFF, old);
    res.map(|()| msgs)
}

/// Appends entries to `sk-queues.img` in the staging directory (created
/// with its header on first use).
fn append_queue(ctx: &FdDumpCtx<'_>, id: u32, msgs: &[Vec<u8>]) -> Result<(), DumpError> {
    let path = ctx.staging.file(file_name::SK_QUEUES);
    let mut w = ImageWriter::new(Vec::new(), &path, ImageKind::SkQueues)?;
    for m in msgs {
        w.write(&pb::SkPacketEntry { id_for: id, length: m.len() as u32, scm: Vec::new() })?;
        w.write_payload(m)?;
    }
    let bytes = w.finish()?;
    let exists = path.exists();
    let body = if exists { &bytes[8..] } else { &bytes[..] };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| DumpError::Write { path: path.clone(), source })?;
    f.write_all(body).map_err(|source| DumpError::Write { path, source })
}

/// Dumps one unix socket (`sk` is the dumper's copy of the fd).
pub fn dump(ctx: &mut FdDumpCtx<'_>, f: &FdSeen, sk: &OwnedFd, ino: u32) -> Result<(FdTypes, u32), DumpError> {
    let pid = ctx.pid;
    let d = diag::unix_by_ino(ino).map_err(dump_io(pid, format!("fd {}: unix_diag of socket {ino}", f.fd)))?;
    if d.state == ST_LISTEN && (!d.icons.is_empty() || d.rqueue > 0) {
        return Err(DumpError::UnsupportedFd {
            pid,
            fd: f.fd,
            kind: format!(
                "listening unix socket {} with {} connection(s) not accepted yet",
                describe(&d.name),
                d.icons.len().max(d.rqueue as usize)
            ),
        });
    }
    let mut entry = pb::UnixSkEntry {
        id: 0,
        ino,
        r#type: d.ty,
        state: d.state,
        flags: f.flags,
        uflags: 0,
        backlog: if d.state == ST_LISTEN { d.wqueue } else { 0 },
        peer: d.peer,
        fown: fown(),
        opts: opts::dump_sk_opts(sk.as_fd()).map_err(dump_io(pid, format!("fd {}: socket options", f.fd)))?,
        name: d.name.clone(),
        shutdown: (d.shutdown != 0).then_some(d.shutdown as i32 & 3),
        file_perms: None,
        name_dir: None,
        deleted: None,
        ns_id: None,
        mnt_id: None,
    };
    if let (Some(&c), Some((vino, _))) = (d.name.first(), d.vfs) {
        if c != 0 {
            let mut path = PathBuf::from(String::from_utf8_lossy(&d.name).into_owned());
            if path.is_relative() {
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
                entry.name_dir = Some(cwd.to_string_lossy().into_owned());
                path = cwd.join(path);
            }
            // The name is as the process sees the file system (its root may
            // be a container's): look through its /proc root.
            let seen = PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(&path));
            match std::fs::metadata(&seen) {
                Ok(m) if m.file_type().is_socket() && m.ino() as u32 == vino => {
                    entry.file_perms = Some(pb::FilePermsEntry { mode: m.mode(), uid: m.uid(), gid: m.gid() })
                }
                _ => entry.deleted = Some(true),
            }
        }
    }
    let msgs = if d.state == ST_LISTEN { Vec::new() } else { peek_queue(pid, f.fd, d.ty, sk.as_fd())? };
    let id = ctx.table.new_id();
    entry.id = id;
    if !msgs.is_empty() {
        append_queue(ctx, id, &msgs)?;
    }
    log::debug!(
        "process {pid}, fd {}: unix {} socket {} state {} peer {} ({} queued messages)",
        f.fd,
        type_name(d.ty),
        describe(&d.name),
        d.state,
        d.peer,
        msgs.len()
    );
    ctx.table.push(pb::FileEntry { r#type: FdTypes::Unixsk as i32, id, usk: Some(entry), ..Default::default() });
    Ok((FdTypes::Unixsk, id))
}

// ---------------------------------------------------------------- restore

/// Every unix socket of the images, created and set up by the restorer.
#[derive(Default)]
pub struct Prepared {
    /// File id -> the socket, until its first owner takes it.
    socks: HashMap<u32, OwnedFd>,
}

thread_local! {
    /// The process whose fd made us create the unix sockets, for messages.
    static FOR_PID: std::cell::Cell<Pid> = const { std::cell::Cell::new(0) };
}

fn err(what: String) -> impl FnOnce(std::io::Error) -> RestoreError {
    restore_io(FOR_PID.with(|p| p.get()), what)
}

fn bind_path(e: &pb::UnixSkEntry) -> Vec<u8> {
    match (&e.name_dir, e.name.first()) {
        (Some(dir), Some(c)) if *c != 0 => {
            Path::new(dir).join(String::from_utf8_lossy(&e.name).as_ref()).into_os_string().into_encoded_bytes()
        }
        _ => e.name.clone(),
    }
}

/// Binds `sk` to the entry's name: a stale socket file is removed first,
/// mode and owner are put back, an unlinked one is unlinked again.
fn bind_named(sk: BorrowedFd<'_>, e: &pb::UnixSkEntry) -> Result<(), RestoreError> {
    let name = bind_path(e);
    let shown = describe(&e.name);
    let is_path = name.first().is_some_and(|c| *c != 0);
    let path = PathBuf::from(String::from_utf8_lossy(&name).into_owned());
    if is_path {
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_socket() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    n::bind(sk, &SockAddr::Unix(name)).map_err(err(format!("bind unix socket {shown}")))?;
    if is_path {
        if let Some(p) = &e.file_perms {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(p.mode & 0o7777))
                .map_err(err(format!("chmod {shown}")))?;
            std::os::unix::fs::lchown(&path, Some(p.uid), Some(p.gid)).map_err(err(format!("chown {shown}")))?;
        }
        if e.deleted == Some(true) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

fn queued(dir: &Path) -> Result<HashMap<u32, Vec<Vec<u8>>>, RestoreError> {
    let path = dir.join(file_name::SK_QUEUES);
    let mut out: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
    if !path.exists() {
        return Ok(out);
    }
    let mut r = ImageReader::open(&path, ImageKind::SkQueues)?;
    while let Some(p) = r.next_entry::<pb::SkPacketEntry>()? {
        let data = r.read_payload(p.length as u64)?;
        out.entry(p.id_for).or_default().push(data);
    }
    Ok(out)
}

/// What the unix sockets are made from: `files.img` and `sk-queues.img`,
/// read before a thread moves into the tree's mount namespace (where the
/// image directory is not visible).
pub struct UnixImages {
    files: Vec<pb::FileEntry>,
    queues: HashMap<u32, Vec<Vec<u8>>>,
}

impl UnixImages {
    pub fn load(dir: &Path) -> Result<UnixImages, RestoreError> {
        Ok(UnixImages { files: ImageDir::open(dir)?.read_files()?, queues: queued(dir)? })
    }
}

impl Prepared {
    /// Creates every unix socket listed in `files.img`, binding named ones
    /// as the calling thread sees the file system.
    pub fn create(images: UnixImages, pid: Pid) -> Result<Prepared, RestoreError> {
        FOR_PID.with(|p| p.set(pid));
        let UnixImages { files, mut queues } = images;
        let all: Vec<&pb::UnixSkEntry> = files.iter().filter_map(|f| f.usk.as_ref()).collect();
        let by_ino: HashMap<u32, &pb::UnixSkEntry> = all.iter().map(|e| (e.ino, *e)).collect();
        let mut socks: HashMap<u32, OwnedFd> = HashMap::new();
        let stream_like = |e: &pb::UnixSkEntry| e.r#type != libc::SOCK_DGRAM as u32;
        // Stand-in peers of connected sockets whose peer was closed: they
        // refill the queue, then are closed, so the reader sees the data
        // and then end-of-file, as before.
        let mut ghosts: HashMap<u32, OwnedFd> = HashMap::new();
        // 1. Pairs: connected sockets whose peer points back at them.
        for e in &all {
            if socks.contains_key(&e.id) {
                continue;
            }
            if e.peer == 0 {
                if stream_like(e) && e.state == ST_ESTABLISHED {
                    let (a, b) = n::socketpair(e.r#type as i32 | libc::SOCK_CLOEXEC)
                        .map_err(err(format!("socketpair for unix socket {}", e.ino)))?;
                    socks.insert(e.id, a);
                    ghosts.insert(e.id, b);
                }
                continue;
            }
            let Some(p) = by_ino.get(&e.peer).filter(|p| p.peer == e.ino) else {
                if stream_like(e) && e.state == ST_ESTABLISHED {
                    return Err(RestoreError::Task {
                        pid,
                        what: format!(
                            "unix {} socket {} (inode {}): its peer {} is outside the dumped tree",
                            type_name(e.r#type),
                            describe(&e.name),
                            e.ino,
                            e.peer
                        ),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
                continue;
            };
            if !stream_like(e) && (!e.name.is_empty() || !p.name.is_empty()) {
                continue; // bound dgram sockets connected to each other: below
            }
            let (a, b) = n::socketpair(e.r#type as i32 | libc::SOCK_CLOEXEC)
                .map_err(err(format!("socketpair for unix socket {}", e.ino)))?;
            socks.insert(e.id, a);
            socks.insert(p.id, b);
        }
        // 2. Bound and listening sockets, and the rest.
        for e in &all {
            if socks.contains_key(&e.id) {
                continue;
            }
            let sk = n::socket(libc::AF_UNIX, e.r#type as i32 | libc::SOCK_CLOEXEC, 0)
                .map_err(err(format!("create unix socket {}", e.ino)))?;
            opts::restore_pre_bind(sk.as_fd(), &e.opts).map_err(err(format!("unix socket {}", e.ino)))?;
            if !e.name.is_empty() {
                bind_named(sk.as_fd(), e)?;
            }
            if e.state == ST_LISTEN {
                n::listen(sk.as_fd(), e.backlog as i32).map_err(err(format!("listen on {}", describe(&e.name))))?;
            }
            socks.insert(e.id, sk);
        }
        // 3. Dgram sockets connected to a bound peer.
        for e in all.iter().filter(|e| !stream_like(e) && e.peer != 0) {
            let Some(p) = by_ino.get(&e.peer) else {
                log::warn!("unix dgram socket {}: its peer {} is outside the tree; left unconnected", e.ino, e.peer);
                continue;
            };
            if p.peer == e.ino && e.name.is_empty() && p.name.is_empty() {
                continue; // a socketpair
            }
            let sk = socks.get(&e.id).ok_or_else(|| err(String::new())(std::io::ErrorKind::NotFound.into()))?;
            n::connect(sk.as_fd(), &SockAddr::Unix(bind_path(p))).map_err(err(format!(
                "connect unix socket {} to {}",
                e.ino,
                describe(&p.name)
            )))?;
        }
        // 4. Options, then queued data, then shutdown and flags.
        for e in &all {
            if let Some(sk) = socks.get(&e.id) {
                opts::restore_sk_opts(sk.as_fd(), &e.opts).map_err(err(format!("unix socket {}", e.ino)))?;
            }
        }
        for e in &all {
            let Some(msgs) = queues.remove(&e.id) else { continue };
            let peer = by_ino
                .get(&e.peer)
                .filter(|p| p.peer == e.ino)
                .and_then(|p| socks.get(&p.id))
                .or_else(|| ghosts.get(&e.id));
            let tmp;
            let (from, to): (BorrowedFd<'_>, Option<SockAddr>) = match peer {
                Some(p) => (p.as_fd(), None),
                None if !stream_like(e) && !e.name.is_empty() => {
                    tmp = n::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                        .map_err(err("create a socket to refill a queue".into()))?;
                    (tmp.as_fd(), Some(SockAddr::Unix(bind_path(e))))
                }
                None => {
                    log::warn!("unix socket {}: no peer to refill its queue from; {} messages lost", e.ino, msgs.len());
                    continue;
                }
            };
            for m in &msgs {
                let sent = match &to {
                    None => n::send(from, m, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
                    Some(a) => n::send_to(from, m, a),
                };
                match sent {
                    Ok(k) if k == m.len() => {}
                    Ok(k) => {
                        return Err(err(format!("refill the queue of unix socket {}", e.ino))(std::io::Error::other(
                            format!("sent {k} of {} bytes", m.len()),
                        )))
                    }
                    Err(x) => return Err(err(format!("refill the queue of unix socket {}", e.ino))(x)),
                }
            }
        }
        drop(ghosts);
        for e in &all {
            let Some(sk) = socks.get(&e.id) else { continue };
            let how = match e.shutdown.unwrap_or(0) & 3 {
                1 => Some(libc::SHUT_RD),
                2 => Some(libc::SHUT_WR),
                3 => Some(libc::SHUT_RDWR),
                _ => None,
            };
            if let Some(how) = how {
                n::shutdown(sk.as_fd(), how).map_err(err(format!("shutdown unix socket {}", e.ino)))?;
            }
            super::set_file_flags(sk.as_fd(), e.flags).map_err(err(format!("unix socket {}: flags", e.ino)))?;
        }
        Ok(Prepared { socks })
    }

    /// Hands out the socket of file `id` (once).
    pub fn take(&mut self, id: u32) -> Option<OwnedFd> {
        self.socks.remove(&id)
    }
}
