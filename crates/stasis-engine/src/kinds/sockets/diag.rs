//! sock_diag netlink: what the kernel knows about a socket that its fd does
//! not tell — a unix socket's peer, its bound name and inode, pending
//! connections and queue lengths (UNIX_DIAG, looked up by inode); an inet
//! socket's state and queue lengths (INET_DIAG, a dump of one family and
//! protocol matched by inode).
//!
//! Requests are built and answers parsed here, in safe code, from the
//! layouts of `linux/unix_diag.h` and `linux/inet_diag.h`; the exchange
//! itself is `stasis_sys::net::sock_diag`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;

const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

const INET_DIAG_SHUTDOWN: u16 = 8;

/// A unix socket as UNIX_DIAG describes it.
#[derive(Debug, Default, Clone)]
pub struct UnixDiag {
    pub ino: u32,
    pub ty: u32,
    pub state: u32,
    /// `sun_path` bytes (abstract names start with NUL); empty if unbound.
    pub name: Vec<u8>,
    /// (inode, device) of the socket file of a path-bound socket.
    pub vfs: Option<(u32, u32)>,
    pub peer: u32,
    /// Inodes of connections waiting in a listening socket's queue.
    pub icons: Vec<u32>,
    /// Listening: queued connections; otherwise bytes (stream) or the
    /// first message's size (dgram) in the receive queue.
    pub rqueue: u32,
    /// Listening: the backlog; otherwise bytes in flight from us.
    pub wqueue: u32,
    /// RCV_SHUTDOWN (1) | SEND_SHUTDOWN (2).
    pub shutdown: u32,
}

/// An inet socket as INET_DIAG describes it.
#[derive(Debug, Default, Clone)]
pub struct InetDiag {
    pub state: u32,
    /// Listening: connections not accepted yet; otherwise bytes queued.
    pub rqueue: u32,
    /// Listening: the backlog.
    pub wqueue: u32,
    pub shutdown: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]])).unwrap_or(0)
}

/// Netlink attributes after a fixed header of `skip` bytes.
fn attrs(b: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = skip;
    while off + 4 <= b.len() {
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([b[off + 2], b[off + 3]]) & 0x3fff;
        if len < 4 || off + len > b.len() {
            break;
        }
        out.push((ty, &b[off + 4..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// Looks up one unix socket by inode.
pub fn unix_by_ino(ino: u32) -> io::Result<UnixDiag> {
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    req.extend_from_slice(&show.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let answers = stasis_sys::net::sock_diag(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, &req)?;
    let b = answers.first().ok_or_else(|| io::Error::other(format!("unix_diag: no answer for socket {ino}")))?;
    if b.len() < 16 {
        return Err(io::Error::other("unix_diag: short answer"));
    }
    let mut d = UnixDiag { ty: b[1] as u32, state: b[2] as u32, ino: u32_at(b, 4), ..Default::default() };
    for (ty, p) in attrs(b, 16) {
        match ty {
            UNIX_DIAG_NAME => {
                d.name = p.to_vec();
                // A path may come with the NUL the binder counted in.
                if d.name.first().is_some_and(|c| *c != 0) {
                    while d.name.last() == Some(&0) {
                        d.name.pop();
                    }
                }
            }
            UNIX_DIAG_VFS => d.vfs = Some((u32_at(p, 0), u32_at(p, 4))),
            UNIX_DIAG_PEER => d.peer = u32_at(p, 0),
            UNIX_DIAG_ICONS => d.icons = p.chunks_exact(4).map(|c| u32_at(c, 0)).collect(),
            UNIX_DIAG_RQLEN => {
                d.rqueue = u32_at(p, 0);
                d.wqueue = u32_at(p, 4);
            }
            UNIX_DIAG_SHUTDOWN => d.shutdown = p.first().copied().unwrap_or(0) as u32,
            _ => {}
        }
    }
    Ok(d)
}

/// Every inet socket of `family`/`proto` in our network namespace, by inode
/// (one sock_diag dump).
fn inet_all(family: i32, proto: i32) -> io::Result<HashMap<u32, InetDiag>> {
    let mut req = Vec::with_capacity(56);
    req.extend_from_slice(&[family as u8, proto as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&[0u8; 48]); // inet_diag_sockid
    let answers = stasis_sys::net::sock_diag(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, &req)?;
    let mut all = HashMap::new();
    for b in answers {
        if b.len() < 72 {
            continue;
        }
        let mut d =
            InetDiag { state: b[1] as u32, rqueue: u32_at(&b, 56), wqueue: u32_at(&b, 60), ..Default::default() };
        for (ty, p) in attrs(&b, 72) {
            if ty == INET_DIAG_SHUTDOWN {
                d.shutdown = p.first().copied().unwrap_or(0) as u32;
            }
        }
        all.insert(u32_at(&b, 68), d);
    }
    Ok(all)
}

thread_local! {
    /// The dumps of the current checkpoint, per (family, protocol): the
    /// tree is frozen (and a container's network locked), so one dump
    /// serves every socket instead of one dump per socket.
    static INET_CACHE: RefCell<HashMap<(i32, i32), HashMap<u32, InetDiag>>> = RefCell::new(HashMap::new());
}

/// Forgets the cached dumps (at the start and end of each checkpoint).
pub fn forget_inet() {
    INET_CACHE.with(|c| c.borrow_mut().clear());
}

/// Finds an inet socket of `family`/`proto` by inode.
pub fn inet_by_ino(family: i32, proto: i32, ino: u32) -> io::Result<Option<InetDiag>> {
    let key = (family, proto);
    if let Some(d) = INET_CACHE.with(|c| c.borrow().get(&key).map(|m| m.get(&ino).cloned())) {
        if d.is_some() {
            return Ok(d);
        }
    }
    // Not seen yet (or the first of its kind): dump again.
    let all = inet_all(family, proto)?;
    let d = all.get(&ino).cloned();
    INET_CACHE.with(|c| c.borrow_mut().insert(key, all));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn ino_of(fd: i32) -> u32 {
        let l = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let s = l.to_string_lossy();
        s.trim_start_matches("socket:[").trim_end_matches(']').parse().unwrap()
    }

    #[test]
    fn unix_pair_peers_and_queue() {
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, b"hello").unwrap();
        let (ia, ib) = (ino_of(a.as_raw_fd()), ino_of(b.as_raw_fd()));
        let da = unix_by_ino(ia).unwrap();
        let db = unix_by_ino(ib).unwrap();
        assert_eq!(da.peer, ib);
        assert_eq!(db.peer, ia);
        assert_eq!(db.rqueue, 5);
        assert_eq!(da.state, 1);
        assert_eq!(da.ty, libc::SOCK_STREAM as u32);
    }

    #[test]
    fn unix_listener_name_and_vfs() {
        let dir = std::env::temp_dir().join(format!("stasis-diag-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let l = UnixListener::bind(&dir).unwrap();
        let d = unix_by_ino(ino_of(l.as_raw_fd())).unwrap();
        assert_eq!(d.state, 10);
        assert_eq!(d.name, dir.to_string_lossy().as_bytes());
        assert!(d.vfs.is_some());
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn inet_listener_state() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let d = inet_by_ino(libc::AF_INET, libc::IPPROTO_TCP, ino_of(l.as_raw_fd())).unwrap().unwrap();
        assert_eq!(d.state, 10);
        assert_eq!(d.rqueue, 0);
        assert!(d.wqueue > 0);
    }
}
