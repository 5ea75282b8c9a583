//! Established TCP connections through TCP_REPAIR (only with
//! `--tcp-established`), in the manner of CRIU's soccr library: a
//! [`TcpRepair`] handle puts a socket into repair mode, reads or writes its
//! sequence numbers (`TCP_REPAIR_QUEUE` + `TCP_QUEUE_SEQ`), its send and
//! receive queues (peeked on dump, replayed on restore), the negotiated
//! options (`TCP_REPAIR_OPTIONS`: MSS, window scale, SACK, timestamps), the
//! timestamp clock (`TCP_TIMESTAMP`) and the window (`TCP_REPAIR_WINDOW`).
//!
//! Dump: the socket (the very one the task holds, through our `pidfd_getfd`
//! copy) stays in repair mode until the tree is killed, so closing it sends
//! neither FIN nor RST to the peer; if the dump fails, or with
//! `--leave-running`, [`RepairGuard`] takes it out of repair mode before the
//! tree runs again.
//! Restore: the new socket enters repair mode before `bind`/`connect`, so
//! `connect` sends no SYN and the socket is ESTABLISHED at once with the
//! dumped sequence numbers; repair mode is left once everything is set.
//!
//! Missing: CRIU blocks each connection with a netfilter rule while it
//! has no socket; we do not, so a segment the peer sends between the dump
//! (the socket is closed in repair mode when the tree is killed) and the
//! restore is answered with RST by the kernel and the connection is lost.
//! Half-closed and transitional states (SYN_SENT, FIN_WAIT*, CLOSE_WAIT,
//! LAST_ACK, ...) are refused at dump. Restoring on another host needs the
//! addresses to exist there (no IP migration here).

use stasis_image::{pb, ImageDir, ImageError, TcpStream};
use stasis_sys::net::{self as n, SockAddr};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

const TCP: i32 = libc::IPPROTO_TCP;
pub const TCP_ESTABLISHED: u32 = 1;

fn send_all(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    let mut chunk = data.len().max(1);
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        match n::send(fd, &data[off..end], libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) {
            Ok(k) if k > 0 => off += k,
            // In repair mode the kernel wants one linear buffer per call:
            // large ones fail with ENOMEM; try smaller pieces.
            _ if chunk > 1024 => chunk /= 2,
            Ok(_) => return Err(io::Error::other("send returned 0")),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A socket in repair mode; leaves it on drop unless told otherwise.
pub struct TcpRepair {
    fd: OwnedFd,
    leave_on_drop: bool,
}

fn ctx(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl TcpRepair {
    /// Puts `fd` into repair mode.
    pub fn enter(fd: OwnedFd) -> io::Result<TcpRepair> {
        n::setsockopt_int(fd.as_fd(), TCP, n::TCP_REPAIR, 1).map_err(ctx("TCP_REPAIR on"))?;
        Ok(TcpRepair { fd, leave_on_drop: true })
    }

    /// Leaves repair mode and gives the socket back.
    pub fn leave(mut self) -> io::Result<OwnedFd> {
        self.leave_on_drop = false;
        n::setsockopt_int(self.fd.as_fd(), TCP, n::TCP_REPAIR, 0).map_err(ctx("TCP_REPAIR off"))?;
        let fd = self.fd.try_clone()?;
        Ok(fd)
    }

    fn queue(&self, q: i32) -> io::Result<()> {
        n::setsockopt_int(self.fd.as_fd(), TCP, n::TCP_REPAIR_QUEUE, q).map_err(ctx("TCP_REPAIR_QUEUE"))
    }

    fn peek_exact(&self, len: u32) -> io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let p = n::peek(self.fd.as_fd(), len as usize)?.ok_or_else(|| io::Error::other("queue is empty"))?;
        if p.data.len() != len as usize {
            return Err(io::Error::other(format!("peeked {} of {len} queued bytes", p.data.len())));
        }
        Ok(p.data)
    }

    /// Reads the connection's state and queues (the socket must be
    /// ESTABLISHED).
    pub fn dump(&self) -> io::Result<TcpStream> {
        let fd = self.fd.as_fd();
        let info = n::getsockopt_bytes(fd, TCP, libc::TCP_INFO, 104)?;
        let (state, options, wscale) = (info[0] as u32, info[5] as u32, info[6] as u32);
        if state != TCP_ESTABLISHED {
            return Err(io::Error::other(format!("TCP state {state} (only ESTABLISHED is supported)")));
        }
        let inq_len = n::inq(fd).map_err(ctx("SIOCINQ"))?;
        let outq_len = n::outq(fd).map_err(ctx("SIOCOUTQ"))?;
        let unsq_len = n::outq_notsent(fd).map_err(ctx("SIOCOUTQNSD"))?;
        self.queue(n::TCP_RECV_QUEUE)?;
        let inq_seq = n::getsockopt_int(fd, TCP, n::TCP_QUEUE_SEQ).map_err(ctx("TCP_QUEUE_SEQ"))? as u32;
        let inq = self.peek_exact(inq_len).map_err(ctx("peek receive queue"))?;
        self.queue(n::TCP_SEND_QUEUE)?;
        let outq_seq = n::getsockopt_int(fd, TCP, n::TCP_QUEUE_SEQ).map_err(ctx("TCP_QUEUE_SEQ"))? as u32;
        let outq = self.peek_exact(outq_len).map_err(ctx("peek send queue"))?;
        self.queue(0)?;
        let mss = n::getsockopt_int(fd, TCP, libc::TCP_MAXSEG).map_err(ctx("TCP_MAXSEG"))? as u32;
        let timestamp = if options & n::TCPI_OPT_TIMESTAMPS != 0 {
            Some(n::getsockopt_int(fd, TCP, n::TCP_TIMESTAMP).map_err(ctx("TCP_TIMESTAMP"))? as u32)
        } else {
            None
        };
        let w = n::getsockopt_bytes(fd, TCP, n::TCP_REPAIR_WINDOW, 20).map_err(ctx("TCP_REPAIR_WINDOW"))?;
        let win = |i: usize| w.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let flag = |opt| n::getsockopt_int(fd, TCP, opt).map(|v| v != 0).ok();
        let entry = pb::TcpStreamEntry {
            inq_len,
            inq_seq,
            outq_len,
            outq_seq,
            opt_mask: options,
            snd_wscale: wscale & 0xf,
            mss_clamp: mss,
            rcv_wscale: Some(wscale >> 4),
            timestamp,
            cork: flag(libc::TCP_CORK),
            nodelay: flag(libc::TCP_NODELAY),
            unsq_len: Some(unsq_len),
            snd_wl1: win(0),
            snd_wnd: win(1),
            max_window: win(2),
            rcv_wnd: win(3),
            rcv_wup: win(4),
            stasis_ino: None,
        };
        Ok(TcpStream { entry, inq, outq })
    }

    /// Re-creates the connection `src` -> `dst` in this fresh TCP socket
    /// from its dumped state. It stays in repair mode until
    /// [`Restored::finish`], called once every socket of the tree exists:
    /// leaving repair mode sends a window probe, which the peer, if it is
    /// in the tree too, must be there to answer (or the kernel resets it).
    pub fn restore(mut self, src: &SockAddr, dst: &SockAddr, s: &TcpStream) -> io::Result<Restored> {
        // A failed restore closes it silently (no RST to the peer).
        self.leave_on_drop = false;
        let e = &s.entry;
        let fd = self.fd.as_fd();
        self.queue(n::TCP_RECV_QUEUE)?;
        n::setsockopt_int(fd, TCP, n::TCP_QUEUE_SEQ, e.inq_seq.wrapping_sub(e.inq_len) as i32)
            .map_err(ctx("TCP_QUEUE_SEQ (receive)"))?;
        self.queue(n::TCP_SEND_QUEUE)?;
        n::setsockopt_int(fd, TCP, n::TCP_QUEUE_SEQ, e.outq_seq.wrapping_sub(e.outq_len) as i32)
            .map_err(ctx("TCP_QUEUE_SEQ (send)"))?;
        n::bind(fd, src).map_err(ctx("bind"))?;
        n::connect(fd, dst).map_err(ctx("connect in repair mode"))?;
        let mut opts: Vec<u8> = Vec::new();
        let mut opt = |code: u32, val: u32| {
            opts.extend_from_slice(&code.to_ne_bytes());
            opts.extend_from_slice(&val.to_ne_bytes());
        };
        if e.opt_mask & n::TCPI_OPT_SACK != 0 {
            opt(n::TCPOPT_SACK_PERM, 0);
        }
        if e.opt_mask & n::TCPI_OPT_WSCALE != 0 {
            opt(n::TCPOPT_WINDOW, e.snd_wscale | (e.rcv_wscale.unwrap_or(0) << 16));
        }
        if e.opt_mask & n::TCPI_OPT_TIMESTAMPS != 0 {
            opt(n::TCPOPT_TIMESTAMP, 0);
        }
        opt(n::TCPOPT_MAXSEG, e.mss_clamp);
        n::setsockopt_bytes(fd, TCP, n::TCP_REPAIR_OPTIONS, &opts).map_err(ctx("TCP_REPAIR_OPTIONS"))?;
        if let Some(ts) = e.timestamp.filter(|_| e.opt_mask & n::TCPI_OPT_TIMESTAMPS != 0) {
            n::setsockopt_int(fd, TCP, n::TCP_TIMESTAMP, ts as i32).map_err(ctx("TCP_TIMESTAMP"))?;
        }
        self.queue(n::TCP_RECV_QUEUE)?;
        send_all(fd, &s.inq).map_err(ctx("refill receive queue"))?;
        let unsent = e.unsq_len.unwrap_or(0).min(e.outq_len) as usize;
        let sent = s.outq.len().saturating_sub(unsent);
        self.queue(n::TCP_SEND_QUEUE)?;
        send_all(fd, &s.outq[..sent]).map_err(ctx("refill send queue"))?;
        if let (Some(a), Some(b), Some(c), Some(d), Some(f)) =
            (e.snd_wl1, e.snd_wnd, e.max_window, e.rcv_wnd, e.rcv_wup)
        {
            let w: Vec<u8> = [a, b, c, d, f].iter().flat_map(|v| v.to_ne_bytes()).collect();
            n::setsockopt_bytes(fd, TCP, n::TCP_REPAIR_WINDOW, &w).map_err(ctx("TCP_REPAIR_WINDOW"))?;
        }
        self.queue(0)?;
        Ok(Restored { repair: self, unsent: s.outq[sent..].to_vec() })
    }

    /// A second handle on the socket (for the task to take).
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

/// A restored connection still in repair mode.
pub struct Restored {
    repair: TcpRepair,
    /// Data never sent to the peer: the kernel sends it as usual.
    unsent: Vec<u8>,
}

impl Restored {
    /// A second handle on the socket (for the task to take).
    pub fn try_clone(&self) -> io::Result<OwnedFd> {
        self.repair.try_clone()
    }

    /// Leaves repair mode (which resets SO_REUSEADDR, put back from `o`)
    /// and queues the unsent data. The send buffer is grown for it if need
    /// be (the dumped one had been grown by autotuning), then the dumped
    /// buffer setting and lock are put back.
    pub fn finish(self, o: &pb::SkOptsEntry) -> io::Result<()> {
        let fd = self.repair.leave()?;
        let sol = libc::SOL_SOCKET;
        if o.reuseaddr == Some(true) {
            n::setsockopt_int(fd.as_fd(), sol, libc::SO_REUSEADDR, 1).map_err(ctx("SO_REUSEADDR"))?;
        }
        if self.unsent.is_empty() {
            return Ok(());
        }
        let need = (o.so_sndbuf as usize).max(4 * self.unsent.len() + (1 << 20));
        n::setsockopt_int(fd.as_fd(), sol, n::SO_SNDBUFFORCE, (need / 2).min(i32::MAX as usize) as i32)
            .map_err(ctx("SO_SNDBUFFORCE"))?;
        send_all(fd.as_fd(), &self.unsent).map_err(ctx("queue unsent data"))?;
        let lock = o.so_buf_lock.unwrap_or(0);
        if lock & 1 != 0 {
            n::setsockopt_int(fd.as_fd(), sol, n::SO_SNDBUFFORCE, (o.so_sndbuf / 2) as i32)
                .map_err(ctx("SO_SNDBUFFORCE"))?;
        }
        n::setsockopt_int(fd.as_fd(), sol, n::SO_BUF_LOCK, lock as i32).map_err(ctx("SO_BUF_LOCK"))
    }
}

impl Drop for TcpRepair {
    fn drop(&mut self) {
        if self.leave_on_drop {
            let _ = n::setsockopt_int(self.fd.as_fd(), TCP, n::TCP_REPAIR, 0);
        }
    }
}

/// The dumped connections of an image directory, read on first use:
/// `tcp-streams.img` at once, or CRIU's `tcp-stream-ID.img` files one by one.
#[derive(Default)]
pub struct StreamImages(Option<HashMap<u32, TcpStream>>);

impl StreamImages {
    /// The dumped state of the connection of socket `ino`.
    pub fn take(&mut self, dir: &Path, ino: u32) -> Result<TcpStream, ImageError> {
        if self.0.is_none() {
            self.0 = Some(ImageDir::open(dir)?.read_tcp_streams()?);
        }
        match self.0.as_mut().and_then(|all| all.remove(&ino)) {
            Some(s) => Ok(s),
            None => ImageDir::open(dir)?.read_tcp_stream(ino),
        }
    }
}

/// Sockets of the tree being dumped that are in repair mode.
static IN_REPAIR: Mutex<Vec<TcpRepair>> = Mutex::new(Vec::new());

/// Keeps a dumped connection in repair mode until the dump ends.
pub fn hold(r: TcpRepair) {
    IN_REPAIR.lock().unwrap_or_else(|e| e.into_inner()).push(r);
}

fn take_all() -> Vec<TcpRepair> {
    std::mem::take(&mut *IN_REPAIR.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Scope of one dump: dropped (error, interruption, `--leave-running`), it
/// takes every dumped connection out of repair mode so the tree goes on
/// undisturbed; [`RepairGuard::tree_killed`] instead closes our copies with
/// repair mode still on, so the peers see neither FIN nor RST.
pub struct RepairGuard(());

impl RepairGuard {
    pub fn begin() -> RepairGuard {
        drop(take_all());
        super::diag::forget_inet();
        RepairGuard(())
    }

    /// The tree was killed: drop our copies, leaving repair mode on.
    pub fn tree_killed(self) {
        let mut all = take_all();
        for r in &mut all {
            r.leave_on_drop = false;
        }
        drop(all);
    }
}

impl Drop for RepairGuard {
    fn drop(&mut self) {
        drop(take_all());
        super::diag::forget_inet();
    }
}
