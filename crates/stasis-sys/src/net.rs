//! Socket wrappers for dumping and restoring sockets: creating, binding,
//! listening and connecting sockets; socket options as integers or raw
//! bytes; peeking at queued data without consuming it (`MSG_PEEK`, with
//! `SCM_RIGHTS` detection); queue sizes (`SIOCINQ`, `SIOCOUTQ`,
//! `SIOCOUTQNSD`); and a generic netlink request/response exchange used for
//! `sock_diag` (UNIX_DIAG, INET_DIAG), whose messages the engine builds and
//! parses itself in safe code.
//!
//! Constants missing from the libc crate or from the 6.1 headers
//! (`TCP_REPAIR_WINDOW`, `SO_BUF_LOCK`, ...) are defined here with the
//! kernel's values.

use crate::{check, check_int};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub const SO_PROTOCOL: i32 = 38;
pub const SO_DOMAIN: i32 = 39;
pub const SO_PEEK_OFF: i32 = 42;
pub const SO_BUF_LOCK: i32 = 72;
pub const SO_SNDBUFFORCE: i32 = 32;
pub const SO_RCVBUFFORCE: i32 = 33;

pub const TCP_REPAIR: i32 = 19;
pub const TCP_REPAIR_QUEUE: i32 = 20;
pub const TCP_QUEUE_SEQ: i32 = 21;
pub const TCP_REPAIR_OPTIONS: i32 = 22;
pub const TCP_TIMESTAMP: i32 = 24;
pub const TCP_REPAIR_WINDOW: i32 = 29;
pub const TCP_RECV_QUEUE: i32 = 1;
pub const TCP_SEND_QUEUE: i32 = 2;
pub const TCPOPT_MAXSEG: u32 = 2;
pub const TCPOPT_WINDOW: u32 = 3;
pub const TCPOPT_SACK_PERM: u32 = 4;
pub const TCPOPT_TIMESTAMP: u32 = 8;
pub const TCPI_OPT_TIMESTAMPS: u32 = 1;
pub const TCPI_OPT_SACK: u32 = 2;
pub const TCPI_OPT_WSCALE: u32 = 4;

const SIOCINQ: libc::c_ulong = 0x541B;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// A socket address of the families we restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// `sun_path` bytes as the kernel has them (abstract names start with
    /// NUL); empty for an unnamed socket.
    Unix(Vec<u8>),
    /// Address and port (host order).
    V4([u8; 4], u16),
    /// Address, port (host order), scope id.
    V6([u8; 16], u16, u32),
}

impl SockAddr {
    fn to_raw(&self) -> io::Result<(libc::sockaddr_storage, libc::socklen_t)> {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match self {
            SockAddr::Unix(path) => {
                // SAFETY: sockaddr_storage is larger than and aligned for
                // sockaddr_un; we write through a properly typed reference.
                let un = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_un) };
                un.sun_family = libc::AF_UNIX as libc::sa_family_t;
                if path.len() > un.sun_path.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "unix socket name too long"));
                }
                for (d, s) in un.sun_path.iter_mut().zip(path) {
                    *d = *s as libc::c_char;
                }
                (std::mem::size_of::<libc::sa_family_t>() + path.len()) as libc::socklen_t
            }
            SockAddr::V4(a, port) => {
                // SAFETY: as above, for sockaddr_in.
                let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(*a);
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SockAddr::V6(a, port, scope) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_addr.s6_addr = *a;
                sin6.sin6_scope_id = *scope;
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        };
        Ok((ss, len))
    }

    fn from_raw(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SockAddr> {
        match ss.ss_family as i32 {
            libc::AF_UNIX => {
                // SAFETY: the kernel filled a sockaddr_un (family AF_UNIX).
                let un = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_un) };
                let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>()).min(un.sun_path.len());
                let mut v: Vec<u8> = un.sun_path[..n].iter().map(|c| *c as u8).collect();
                if v.first() != Some(&0) {
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                }
                Ok(SockAddr::Unix(v))
            }
            libc::AF_INET => {
                // SAFETY: the kernel filled a sockaddr_in (family AF_INET).
                let sin = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
                Ok(SockAddr::V4(sin.sin_addr.s_addr.to_ne_bytes(), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel filled a sockaddr_in6 (family AF_INET6).
                let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
                Ok(SockAddr::V6(sin6.sin6_addr.s6_addr, u16::from_be(sin6.sin6_port), sin6.sin6_scope_id))
            }
            f => Err(io::Error::new(io::ErrorKind::Unsupported, format!("address family {f}"))),
        }
    }
}

/// `socket(2)`; `ty` may carry `SOCK_CLOEXEC`/`SOCK_NONBLOCK`.
pub fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = check_int(unsafe { libc::socket(domain, ty, proto) })?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `socketpair(2)` (AF_UNIX).
pub fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a live array of two ints.
    check_int(unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) })?;
    // SAFETY: the kernel returned two new fds that nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    let (ss, len) = addr.to_raw()?;
    // SAFETY: ss is a live sockaddr of `len` bytes.
    check_int(unsafe { libc::bind(fd.as_raw_fd(), &ss as *const _ as *const libc::sockaddr, len) }).map(drop)
}

pub fn connect(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    let (ss, len) = addr.to_raw()?;
    // SAFETY: ss is a live sockaddr of `len` bytes.
    check_int(unsafe { libc::connect(fd.as_raw_fd(), &ss as *const _ as *const libc::sockaddr, len) }).map(drop)
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check_int(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// `shutdown(2)` with `SHUT_RD`/`SHUT_WR`/`SHUT_RDWR`.
pub fn shutdown(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    check_int(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

fn name_of(fd: BorrowedFd<'_>, peer: bool) -> io::Result<SockAddr> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut ss as *mut _ as *mut libc::sockaddr;
    // SAFETY: ss and len are live and len holds ss's size.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    check_int(r)?;
    SockAddr::from_raw(&ss, len)
}

/// `getsockname(2)`.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    name_of(fd, false)
}

/// `getpeername(2)`.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    name_of(fd, true)
}

/// `getsockopt` into a buffer of up to `max` bytes; returns what the
/// kernel wrote.
pub fn getsockopt_bytes(fd: BorrowedFd<'_>, level: i32, opt: i32, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let mut len = max as libc::socklen_t;
    // SAFETY: buf has `len` writable bytes; len is live.
    check_int(unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, buf.as_mut_ptr().cast(), &mut len) })?;
    buf.truncate(len as usize);
    Ok(buf)
}

/// `setsockopt` with raw bytes.
pub fn setsockopt_bytes(fd: BorrowedFd<'_>, level: i32, opt: i32, val: &[u8]) -> io::Result<()> {
    // SAFETY: val is a live buffer of val.len() bytes.
    check_int(unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, opt, val.as_ptr().cast(), val.len() as libc::socklen_t)
    })
    .map(drop)
}

/// An integer socket option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32) -> io::Result<i32> {
    let b = getsockopt_bytes(fd, level, opt, 4)?;
    let mut a = [0u8; 4];
    a[..b.len().min(4)].copy_from_slice(&b[..b.len().min(4)]);
    Ok(i32::from_ne_bytes(a))
}

pub fn setsockopt_int(fd: BorrowedFd<'_>, level: i32, opt: i32, val: i32) -> io::Result<()> {
    setsockopt_bytes(fd, level, opt, &val.to_ne_bytes())
}

fn ioctl_int(fd: BorrowedFd<'_>, req: libc::c_ulong) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: n is a live c_int; these ioctls write one int.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n) })?;
    Ok(n as u32)
}

/// Bytes in the receive queue (`SIOCINQ`).
pub fn inq(fd: BorrowedFd<'_>) -> io::Result<u32> {
    ioctl_int(fd, SIOCINQ)
}

/// Bytes in the send queue, sent or not (`SIOCOUTQ`).
pub fn outq(fd: BorrowedFd<'_>) -> io::Result<u32> {
    ioctl_int(fd, SIOCOUTQ)
}

/// Bytes in the send queue not sent yet (`SIOCOUTQNSD`).
pub fn outq_notsent(fd: BorrowedFd<'_>) -> io::Result<u32> {
    ioctl_int(fd, SIOCOUTQNSD)
}

/// One message peeked at with `MSG_PEEK`.
pub struct Peeked {
    pub data: Vec<u8>,
    /// The message was longer than the buffer (`MSG_TRUNC`).
    pub truncated: bool,
    /// It carries fds (`SCM_RIGHTS`); the duplicates the peek gave us are
    /// closed already.
    pub has_fds: bool,
}

/// `recvmsg(MSG_PEEK | MSG_DONTWAIT)` of up to `max` bytes; `None` when the
/// queue is empty (EAGAIN).
pub fn peek(fd: BorrowedFd<'_>, max: usize) -> io::Result<Option<Peeked>> {
    let mut data = vec![0u8; max.max(1)];
    let mut ctl = vec![0u64; 64]; // 512 bytes, aligned for cmsghdr
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = ctl.len() * 8;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: msg points at live iov/data/control buffers of the given sizes.
    let n = match check(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) } as libc::c_long) {
        Ok(n) => n as usize,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut has_fds = false;
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros walk its control
    // buffer within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: c points at a cmsghdr inside the control buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            has_fds = true;
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let hdr = unsafe { libc::CMSG_LEN(0) } as usize;
            let nfds = (h.cmsg_len as usize).saturating_sub(hdr) / 4;
            for i in 0..nfds {
                // SAFETY: the payload holds nfds ints; read_unaligned copes
                // with any alignment.
                let fd = unsafe { std::ptr::read_unaligned((libc::CMSG_DATA(c) as *const i32).add(i)) };
                // SAFETY: the kernel installed this fd in our table for us.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    data.truncate(n.min(data.len()));
    Ok(Some(Peeked { data, truncated: msg.msg_flags & libc::MSG_TRUNC != 0, has_fds }))
}

/// `send(2)` of all of `data` (blocking socket); returns bytes sent.
pub fn send(fd: BorrowedFd<'_>, data: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: data is a live buffer of data.len() bytes.
    Ok(check(unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), flags) } as libc::c_long)? as usize)
}

/// `sendto(2)` to `addr`.
pub fn send_to(fd: BorrowedFd<'_>, data: &[u8], addr: &SockAddr) -> io::Result<usize> {
    let (ss, len) = addr.to_raw()?;
    // SAFETY: data and ss are live buffers of the given sizes.
    Ok(check(unsafe {
        libc::sendto(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0, &ss as *const _ as *const libc::sockaddr, len)
    } as libc::c_long)? as usize)
}

/// Sends one netlink request (`nlmsghdr` + `payload`) on a new
/// `NETLINK_SOCK_DIAG` socket and returns the payload of every answer up to
/// `NLMSG_DONE` (or the single answer of a non-dump request). A netlink
/// error answer becomes an `io::Error`.
pub fn sock_diag(msg_type: u16, flags: u16, payload: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    const NETLINK_SOCK_DIAG: i32 = 4;
    let sk = socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG)?;
    let mut req = Vec::with_capacity(16 + payload.len());
    req.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    req.extend_from_slice(&msg_type.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(payload);
    send(sk.as_fd(), &req, 0)?;
    let dump = flags & (libc::NLM_F_DUMP as u16) != 0;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        // SAFETY: buf is a live buffer of buf.len() bytes.
        let n = check(unsafe { libc::recv(sk.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_long)?
            as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Err(io::Error::other("malformed netlink answer"));
            }
            let body = &buf[off + 16..off + len];
            match ty as i32 {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let err = i32::from_ne_bytes(body.get(..4).and_then(|b| b.try_into().ok()).unwrap_or_default());
                    if err == 0 {
                        return Ok(out);
                    }
                    return Err(io::Error::from_raw_os_error(-err));
                }
                _ => out.push(body.to_vec()),
            }
            off += (len + 3) & !3;
        }
        if !dump {
            return Ok(out);
        }
    }
}

/// Brings the loopback interface of the calling thread's network namespace
/// up (`SIOCSIFFLAGS` with `IFF_UP | IFF_LOOPBACK | IFF_RUNNING`), as a
/// fresh namespace has it down.
pub fn loopback_up() -> io::Result<()> {
    let sk = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own for the duration.
    check_int(unsafe { libc::ioctl(sk.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const libc::ifreq) }).map(drop)
}

/// The pid of the process at the other end of a unix socket
/// (`SO_PEERCRED`, as of when it connected or made the pair).
pub fn peer_pid(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let b = getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, 12)?;
    let pid = b.get(..4).ok_or_else(|| io::Error::other("short SO_PEERCRED"))?;
    Ok(i32::from_ne_bytes([pid[0], pid[1], pid[2], pid[3]]))
}

/// `sendmsg` of `data` with one fd attached (`SCM_RIGHTS`), e.g. a pty
/// master handed to the process at the other end of a unix socket.
pub fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut ctl = [0u64; 4]; // 32 bytes: CMSG_SPACE(4) = 24, aligned
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a constant computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer is at least CMSG_SPACE(4) bytes and
    // 8-byte aligned, so the first header and its 4-byte payload fit.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut i32, fd.as_raw_fd());
    }
    // SAFETY: msg points at live iov/data/control buffers of the given sizes.
    check(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } as libc::c_long).map(|n| n as usize)
}
