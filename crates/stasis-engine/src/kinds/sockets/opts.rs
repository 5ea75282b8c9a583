//! Socket options shared by every socket kind (`sk_opts_entry`, SOL_SOCKET
//! level) and the TCP ones of any TCP socket (`tcp_opts_entry`): read with
//! getsockopt on the dumper's copy of the fd, set with setsockopt on the
//! socket the restorer creates.
//!
//! Buffer sizes are only put back when the program had set them
//! (`SO_BUF_LOCK`), as setting them turns the kernel's autotuning off; the
//! kernel doubles what setsockopt is given, so half the dumped value is set.

use stasis_image::pb;
use stasis_sys::net as n;
use std::io;
use std::os::fd::BorrowedFd;

const SOL: i32 = libc::SOL_SOCKET;

fn get(fd: BorrowedFd<'_>, opt: i32) -> io::Result<i32> {
    n::getsockopt_int(fd, SOL, opt)
}

fn timeval(fd: BorrowedFd<'_>, opt: i32) -> io::Result<(u64, u64)> {
    let b = n::getsockopt_bytes(fd, SOL, opt, 16)?;
    let w = |i: usize| b.get(i..i + 8).map(|s| i64::from_ne_bytes(s.try_into().unwrap_or([0; 8]))).unwrap_or(0);
    Ok((w(0) as u64, w(8) as u64))
}

/// Reads the SOL_SOCKET options we restore.
pub fn dump_sk_opts(fd: BorrowedFd<'_>) -> io::Result<pb::SkOptsEntry> {
    let (snd_s, snd_us) = timeval(fd, libc::SO_SNDTIMEO)?;
    let (rcv_s, rcv_us) = timeval(fd, libc::SO_RCVTIMEO)?;
    let linger = n::getsockopt_bytes(fd, SOL, libc::SO_LINGER, 8)?;
    let l_onoff = linger.get(0..4).map(|s| i32::from_ne_bytes(s.try_into().unwrap_or([0; 4]))).unwrap_or(0);
    let l_linger = linger.get(4..8).map(|s| i32::from_ne_bytes(s.try_into().unwrap_or([0; 4]))).unwrap_or(0);
    let dev = n::getsockopt_bytes(fd, SOL, libc::SO_BINDTODEVICE, 16).unwrap_or_default();
    let dev = String::from_utf8_lossy(dev.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
    let flag = |opt| get(fd, opt).map(|v| v != 0).ok();
    let int = |opt| get(fd, opt).map(|v| v as u32).ok();
    Ok(pb::SkOptsEntry {
        so_sndbuf: get(fd, libc::SO_SNDBUF)? as u32,
        so_rcvbuf: get(fd, libc::SO_RCVBUF)? as u32,
        so_snd_tmo_sec: snd_s,
        so_snd_tmo_usec: snd_us,
        so_rcv_tmo_sec: rcv_s,
        so_rcv_tmo_usec: rcv_us,
        reuseaddr: flag(libc::SO_REUSEADDR),
        so_priority: int(libc::SO_PRIORITY),
        so_rcvlowat: int(libc::SO_RCVLOWAT),
        so_mark: int(libc::SO_MARK),
        so_passcred: flag(libc::SO_PASSCRED),
        so_passsec: flag(libc::SO_PASSSEC),
        so_dontroute: flag(libc::SO_DONTROUTE),
        so_no_check: flag(libc::SO_NO_CHECK),
        so_bound_dev: (!dev.is_empty()).then_some(dev),
        so_filter: Vec::new(),
        so_reuseport: flag(libc::SO_REUSEPORT),
        so_broadcast: flag(libc::SO_BROADCAST),
        so_keepalive: flag(libc::SO_KEEPALIVE),
        tcp_keepcnt: None,
        tcp_keepidle: None,
        tcp_keepintvl: None,
        so_oobinline: int(libc::SO_OOBINLINE),
        so_linger: (l_onoff != 0).then_some(l_linger as u32),
        so_buf_lock: Some(get(fd, n::SO_BUF_LOCK).unwrap_or(0) as u32),
    })
}

fn set(fd: BorrowedFd<'_>, opt: i32, v: i32, what: &str) -> io::Result<()> {
    n::setsockopt_int(fd, SOL, opt, v).map_err(|e| io::Error::new(e.kind(), format!("setsockopt {what}: {e}")))
}

fn set_timeval(fd: BorrowedFd<'_>, opt: i32, sec: u64, usec: u64, what: &str) -> io::Result<()> {
    if sec == 0 && usec == 0 {
        return Ok(());
    }
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&(sec as i64).to_ne_bytes());
    b.extend_from_slice(&(usec as i64).to_ne_bytes());
    n::setsockopt_bytes(fd, SOL, opt, &b).map_err(|e| io::Error::new(e.kind(), format!("setsockopt {what}: {e}")))
}

/// Options that must be set before `bind` (address reuse).
pub fn restore_pre_bind(fd: BorrowedFd<'_>, o: &pb::SkOptsEntry) -> io::Result<()> {
    if o.reuseaddr == Some(true) {
        set(fd, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    }
    if o.so_reuseport == Some(true) {
        set(fd, libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
    }
    if let Some(dev) = o.so_bound_dev.as_deref().filter(|d| !d.is_empty()) {
        n::setsockopt_bytes(fd, SOL, libc::SO_BINDTODEVICE, dev.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
    }
    Ok(())
}

/// Every other option, once the socket is set up.
pub fn restore_sk_opts(fd: BorrowedFd<'_>, o: &pb::SkOptsEntry) -> io::Result<()> {
    let lock = o.so_buf_lock.unwrap_or(0);
    if lock & 1 != 0 {
        let v = (o.so_sndbuf / 2) as i32;
        n::setsockopt_int(fd, SOL, n::SO_SNDBUFFORCE, v).or_else(|_| set(fd, libc::SO_SNDBUF, v, "SO_SNDBUF"))?;
    }
    if lock & 2 != 0 {
        let v = (o.so_rcvbuf / 2) as i32;
        n::setsockopt_int(fd, SOL, n::SO_RCVBUFFORCE, v).or_else(|_| set(fd, libc::SO_RCVBUF, v, "SO_RCVBUF"))?;
    }
    set_timeval(fd, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec, "SO_SNDTIMEO")?;
    set_timeval(fd, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec, "SO_RCVTIMEO")?;
    let flags = [
        (o.reuseaddr, libc::SO_REUSEADDR, "SO_REUSEADDR"),
        (o.so_passcred, libc::SO_PASSCRED, "SO_PASSCRED"),
        (o.so_passsec, libc::SO_PASSSEC, "SO_PASSSEC"),
        (o.so_dontroute, libc::SO_DONTROUTE, "SO_DONTROUTE"),
        (o.so_no_check, libc::SO_NO_CHECK, "SO_NO_CHECK"),
        (o.so_broadcast, libc::SO_BROADCAST, "SO_BROADCAST"),
        (o.so_keepalive, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
    ];
    for (v, opt, what) in flags {
        if v == Some(true) {
            set(fd, opt, 1, what)?;
        }
    }
    for (v, opt, what) in [
        (o.so_priority, libc::SO_PRIORITY, "SO_PRIORITY"),
        (o.so_mark, libc::SO_MARK, "SO_MARK"),
        (o.so_oobinline, libc::SO_OOBINLINE, "SO_OOBINLINE"),
    ] {
        if let Some(v) = v.filter(|v| *v != 0) {
            set(fd, opt, v as i32, what)?;
        }
    }
    if let Some(v) = o.so_rcvlowat.filter(|v| *v > 1) {
        set(fd, libc::SO_RCVLOWAT, v as i32, "SO_RCVLOWAT")?;
    }
    if let Some(l) = o.so_linger {
        let mut b = Vec::with_capacity(8);
        b.extend_from_slice(&1i32.to_ne_bytes());
        b.extend_from_slice(&(l as i32).to_ne_bytes());
        n::setsockopt_bytes(fd, SOL, libc::SO_LINGER, &b)?;
    }
    Ok(())
}

/// TCP_NODELAY, TCP_CORK and the keepalive timings.
pub fn dump_tcp_opts(fd: BorrowedFd<'_>) -> io::Result<pb::TcpOptsEntry> {
    let t = |opt| n::getsockopt_int(fd, libc::IPPROTO_TCP, opt);
    Ok(pb::TcpOptsEntry {
        cork: Some(t(libc::TCP_CORK)? != 0),
        nodelay: Some(t(libc::TCP_NODELAY)? != 0),
        keepcnt: Some(t(libc::TCP_KEEPCNT)? as u32),
        keepidle: Some(t(libc::TCP_KEEPIDLE)? as u32),
        keepintvl: Some(t(libc::TCP_KEEPINTVL)? as u32),
    })
}

pub fn restore_tcp_opts(fd: BorrowedFd<'_>, o: &pb::TcpOptsEntry) -> io::Result<()> {
    let s = |opt, v: i32, what: &str| {
        n::setsockopt_int(fd, libc::IPPROTO_TCP, opt, v)
            .map_err(|e| io::Error::new(e.kind(), format!("setsockopt {what}: {e}")))
    };
    if o.cork == Some(true) {
        s(libc::TCP_CORK, 1, "TCP_CORK")?;
    }
    if o.nodelay == Some(true) {
        s(libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
    }
    for (v, opt, what) in [
        (o.keepcnt, libc::TCP_KEEPCNT, "TCP_KEEPCNT"),
        (o.keepidle, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE"),
        (o.keepintvl, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL"),
    ] {
        if let Some(v) = v.filter(|v| *v > 0) {
            s(opt, v as i32, what)?;
        }
    }
    Ok(())
}
