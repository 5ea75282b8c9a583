//! Inet sockets (IPv4 and IPv6): TCP listening and bound/unbound closed
//! sockets, UDP bound or connected, and established TCP connections
//! through [`super::tcp`] when `--tcp-established` is given.
//!
//! Dump: addresses from `getsockname`/`getpeername` on the dumper's copy of
//! the fd, state from `TCP_INFO` (UDP: connected or not), backlog and
//! pending connections from INET_DIAG, options by getsockopt (SOL_SOCKET,
//! `IPV6_V6ONLY`, `IP_FREEBIND`, `IP_TOS`, TCP_NODELAY/CORK/keepalive).
//! An established connection without `--tcp-established` fails the dump
//! naming the process, fd and both ends.
//! Restore: the restorer creates the socket, sets the options that matter
//! for `bind` (SO_REUSEADDR is forced on for the bind itself, as the old
//! socket's port may still be held by TIME_WAIT entries, then set back),
//! binds, listens or connects (UDP), and hands it to the task.

use super::{diag, opts, tcp, SockKind};
use crate::error::{dump_io, restore_io, DumpError, RestoreError};
use crate::kinds::fdkind::FdDumpCtx;
use crate::kinds::files::{FdSeen, FdTypes};
use stasis_image::{pb, TcpStream};
use stasis_sys::net::{self as n, SockAddr};
use stasis_sys::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

const ST_ESTABLISHED: u32 = 1;
const ST_CLOSE: u32 = 7;
const ST_LISTEN: u32 = 10;

use crate::kinds::files::fown;

/// `addr:port` / `[addr]:port` for messages.
pub fn show(a: &SockAddr) -> String {
    match a {
        SockAddr::V4(ip, port) => format!("{}:{port}", std::net::Ipv4Addr::from(*ip)),
        SockAddr::V6(ip, port, _) => format!("[{}]:{port}", std::net::Ipv6Addr::from(*ip)),
        SockAddr::Unix(n) => super::unix::describe(n),
    }
}

fn words(a: &SockAddr) -> (Vec<u32>, u32) {
    match a {
        SockAddr::V4(ip, port) => (vec![u32::from_ne_bytes(*ip)], *port as u32),
        SockAddr::V6(ip, port, _) => {
            (ip.chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect(), *port as u32)
        }
        SockAddr::Unix(_) => (Vec::new(), 0),
    }
}

fn addr(family: u32, w: &[u32], port: u32) -> SockAddr {
    if family == libc::AF_INET6 as u32 {
        let mut ip = [0u8; 16];
        for (i, x) in w.iter().take(4).enumerate() {
            ip[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
        }
        SockAddr::V6(ip, port as u16, 0)
    } else {
        SockAddr::V4(w.first().copied().unwrap_or(0).to_ne_bytes(), port as u16)
    }
}

fn tcp_state(sk: &OwnedFd) -> std::io::Result<u32> {
    let info = n::getsockopt_bytes(sk.as_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, 8)?;
    Ok(info.first().copied().unwrap_or(0) as u32)
}

/// What [`collect`] read of one inet socket: its entry (without an id yet)
/// and, for an established connection, its state and queues.
pub struct Collected {
    pub entry: pb::InetSkEntry,
    pub stream: Option<TcpStream>,
}

/// Reads one inet socket, fd `f` of `pid` (`sk` is the dumper's copy);
/// `None` when it is neither TCP nor UDP. An established connection enters
/// repair mode here, held until the dump ends ([`tcp::hold`]). Runs on the
/// dumping thread or on [`super::prefetch`]'s, which must be in the tree's
/// network namespace.
pub fn collect(
    pid: Pid,
    f: &FdSeen,
    sk: &OwnedFd,
    ino: u32,
    kind: SockKind,
    tcp_established: bool,
) -> Result<Option<Collected>, DumpError> {
    let SockKind { family, ty, proto } = kind;
    let fdn = f.fd;
    let is_tcp = ty == libc::SOCK_STREAM && proto == libc::IPPROTO_TCP;
    let is_udp = ty == libc::SOCK_DGRAM && (proto == libc::IPPROTO_UDP || proto == 0);
    if !is_tcp && !is_udp {
        return Ok(None);
    }
    let local = n::local_addr(sk.as_fd()).map_err(dump_io(pid, format!("fd {fdn}: getsockname")))?;
    let peer = n::peer_addr(sk.as_fd()).ok();
    let state = if is_tcp {
        tcp_state(sk).map_err(dump_io(pid, format!("fd {fdn}: TCP_INFO")))?
    } else if peer.is_some() {
        ST_ESTABLISHED
    } else {
        ST_CLOSE
    };
    let conn = || format!("{} <-> {}", show(&local), peer.as_ref().map(show).unwrap_or_default());
    let d = diag::inet_by_ino(family, if is_tcp { libc::IPPROTO_TCP } else { libc::IPPROTO_UDP }, ino)
        .map_err(dump_io(pid, format!("fd {fdn}: inet_diag")))?
        .unwrap_or_default();
    let mut backlog = 0;
    let mut stream = None;
    match (is_tcp, state) {
        (true, ST_LISTEN) => {
            backlog = d.wqueue;
            if d.rqueue > 0 {
                log::warn!(
                    "process {pid}, fd {fdn}: {} connection(s) waiting on {} to be accepted are dropped",
                    d.rqueue,
                    show(&local)
                );
            }
        }
        (true, ST_CLOSE) | (false, _) => {
            if d.rqueue > 0 && !is_tcp {
                log::warn!(
                    "process {pid}, fd {fdn}: {} bytes queued on UDP socket {} are dropped",
                    d.rqueue,
                    show(&local)
                );
            }
        }
        (true, ST_ESTABLISHED) => {
            if !tcp_established {
                return Err(DumpError::Task {
                    pid,
                    what: format!("fd {fdn}: established TCP connection {}", conn()),
                    source: std::io::Error::other("dumping it needs --tcp-established"),
                });
            }
            let dup = sk.try_clone().map_err(dump_io(pid, format!("fd {fdn}: dup")))?;
            let r = tcp::TcpRepair::enter(dup)
                .map_err(dump_io(pid, format!("fd {fdn}: TCP connection {}: repair mode", conn())))?;
            let dumped = r.dump();
            tcp::hold(r);
            stream = Some(dumped.map_err(dump_io(pid, format!("fd {fdn}: TCP connection {}", conn())))?);
        }
        (true, s) => {
            return Err(DumpError::UnsupportedFd { pid, fd: fdn, kind: format!("TCP socket {} in state {s}", conn()) })
        }
    }
    let (src_addr, src_port) = words(&local);
    let (dst_addr, dst_port) = peer.as_ref().map(words).unwrap_or_default();
    let v6only = (family == libc::AF_INET6)
        .then(|| n::getsockopt_int(sk.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).map(|v| v != 0).unwrap_or(false));
    let ip_opts = (family == libc::AF_INET).then(|| pb::IpOptsEntry {
        freebind: n::getsockopt_int(sk.as_fd(), libc::IPPROTO_IP, libc::IP_FREEBIND).ok().map(|v| v != 0),
        raw: None,
        pktinfo: None,
        tos: n::getsockopt_int(sk.as_fd(), libc::IPPROTO_IP, libc::IP_TOS).ok().map(|v| v as u32),
        ttl: None,
    });
    let entry = pb::InetSkEntry {
        id: 0,
        ino,
        family: family as u32,
        r#type: ty as u32,
        proto: if is_tcp { libc::IPPROTO_TCP as u32 } else { libc::IPPROTO_UDP as u32 },
        state,
        src_port,
        dst_port,
        flags: f.flags,
        backlog,
        src_addr,
        dst_addr,
        fown: fown(),
        opts: opts::dump_sk_opts(sk.as_fd()).map_err(dump_io(pid, format!("fd {fdn}: socket options")))?,
        v6only,
        ip_opts,
        ifname: None,
        ns_id: None,
        shutdown: (d.shutdown != 0).then_some(d.shutdown as i32 & 3),
        tcp_opts: if is_tcp {
            Some(opts::dump_tcp_opts(sk.as_fd()).map_err(dump_io(pid, format!("fd {fdn}: TCP options")))?)
        } else {
            None
        },
    };
    log::debug!("process {pid}, fd {fdn}: inet socket {} state {state}", conn());
    Ok(Some(Collected { entry, stream }))
}

/// Records a collected socket: its `tcp-streams.img` entry and its
/// `files.img` entry, under a new id.
pub fn record(ctx: &mut FdDumpCtx<'_>, c: Collected) -> Result<(FdTypes, u32), DumpError> {
    let Collected { mut entry, stream } = c;
    if let Some(s) = &stream {
        ctx.staging.write_tcp_stream(entry.ino, s)?;
    }
    entry.id = ctx.table.new_id();
    let id = entry.id;
    ctx.table.push(pb::FileEntry { r#type: FdTypes::Inetsk as i32, id, isk: Some(entry), ..Default::default() });
    Ok((FdTypes::Inetsk, id))
}

/// Creates the socket of one `inet_sk_entry`, fully set up.
pub fn restore(
    dir: &Path,
    opts: &crate::restore::RestoreOpts,
    pid: i32,
    fd: u32,
    e: &pb::InetSkEntry,
    state: &mut super::SocketRestore,
) -> Result<OwnedFd, RestoreError> {
    let src = addr(e.family, &e.src_addr, e.src_port);
    let dst = addr(e.family, &e.dst_addr, e.dst_port);
    let what = |w: &str| format!("fd {fd}: socket {} <-> {}: {w}", show(&src), show(&dst));
    let sk = n::socket(e.family as i32, e.r#type as i32 | libc::SOCK_CLOEXEC, e.proto as i32)
        .map_err(restore_io(pid, what("socket")))?;
    if let Some(v) = e.v6only {
        n::setsockopt_int(sk.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v as i32)
            .map_err(restore_io(pid, what("IPV6_V6ONLY")))?;
    }
    if let Some(ip) = &e.ip_opts {
        if ip.freebind == Some(true) {
            n::setsockopt_int(sk.as_fd(), libc::IPPROTO_IP, libc::IP_FREEBIND, 1)
                .map_err(restore_io(pid, what("IP_FREEBIND")))?;
        }
        if let Some(tos) = ip.tos.filter(|t| *t != 0) {
            n::setsockopt_int(sk.as_fd(), libc::IPPROTO_IP, libc::IP_TOS, tos as i32)
                .map_err(restore_io(pid, what("IP_TOS")))?;
        }
    }
    opts::restore_pre_bind(sk.as_fd(), &e.opts).map_err(restore_io(pid, what("options")))?;
    let is_tcp = e.proto == libc::IPPROTO_TCP as u32;
    let established = is_tcp && e.state == ST_ESTABLISHED;
    if established && opts.tcp_close {
        // The connection is dropped: the process gets a socket that was
        // never connected (reads and writes fail with ENOTCONN).
        log::info!("process {pid}, {}", what("restored closed (--tcp-close)"));
        super::set_file_flags(sk.as_fd(), e.flags).map_err(restore_io(pid, what("file flags")))?;
        return Ok(sk);
    }
    if established && !opts.tcp_established {
        return Err(RestoreError::Task {
            pid,
            what: what("an established TCP connection: restore with --tcp-established, or --tcp-close to drop it"),
            source: std::io::Error::from(std::io::ErrorKind::Unsupported),
        });
    }
    let sk = if established {
        let stream = state.streams.take(dir, e.ino)?;
        let r = tcp::TcpRepair::enter(sk).map_err(restore_io(pid, what("repair mode")))?;
        let done = r.restore(&src, &dst, &stream).map_err(restore_io(pid, what("TCP repair")))?;
        let sk = done.try_clone().map_err(restore_io(pid, what("dup")))?;
        state.tcp.push((pid, what("leave repair mode"), done, e.opts.clone()));
        sk
    } else {
        let bound = e.src_port != 0 || e.src_addr.iter().any(|w| *w != 0);
        if bound {
            n::setsockopt_int(sk.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                .map_err(restore_io(pid, what("SO_REUSEADDR")))?;
            n::bind(sk.as_fd(), &src).map_err(restore_io(pid, what("bind")))?;
            n::setsockopt_int(
                sk.as_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (e.opts.reuseaddr == Some(true)) as i32,
            )
            .map_err(restore_io(pid, what("SO_REUSEADDR")))?;
        }
        if is_tcp && e.state == ST_LISTEN {
            n::listen(sk.as_fd(), e.backlog as i32).map_err(restore_io(pid, what("listen")))?;
        }
        if !is_tcp && e.state == ST_ESTABLISHED && e.dst_port != 0 {
            n::connect(sk.as_fd(), &dst).map_err(restore_io(pid, what("connect")))?;
        }
        sk
    };
    opts::restore_sk_opts(sk.as_fd(), &e.opts).map_err(restore_io(pid, what("options")))?;
    if let Some(t) = &e.tcp_opts {
        opts::restore_tcp_opts(sk.as_fd(), t).map_err(restore_io(pid, what("TCP options")))?;
    }
    let how = match e.shutdown.unwrap_or(0) & 3 {
        1 => Some(libc::SHUT_RD),
        2 => Some(libc::SHUT_WR),
        3 => Some(libc::SHUT_RDWR),
        _ => None,
    };
    if let Some(how) = how.filter(|_| e.state != ST_LISTEN) {
        n::shutdown(sk.as_fd(), how).map_err(restore_io(pid, what("shutdown")))?;
    }
    super::set_file_flags(sk.as_fd(), e.flags).map_err(restore_io(pid, what("file flags")))?;
    Ok(sk)
}
