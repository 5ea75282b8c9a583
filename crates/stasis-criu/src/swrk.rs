//! `criu swrk FD`: serves CRIU's RPC protocol on the socket at FD (runc
//! and crun start it with one end of a SOCK_SEQPACKET pair), one request,
//! plus the NOTIFY round trips of a dump or restore, then exits.

use crate::request::{Action, Request};
use crate::rpc::pb::{CriuDumpResp, CriuFeatures, CriuRestoreResp, CriuVersion};
use crate::rpc::{Conn, CriuReq, CriuReqType, CriuResp};
use crate::run::{self, Notify};
use crate::{CriuError, CRIU_VERSION};

/// Notifications over the connection, when the request asked for them.
struct RpcNotify<'a> {
    conn: &'a mut Conn,
    on: bool,
}

impl Notify for RpcNotify<'_> {
    fn notify(&mut self, script: &str, pid: i32) -> Result<(), CriuError> {
        if self.on {
            self.conn.notify(script, pid, None)
        } else {
            Ok(())
        }
    }

    fn notify_fd(&mut self, script: &str, pid: i32, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), CriuError> {
        // The fd goes with the message even when scripts are off: runc
        // asks for orphan_pts_master on its own.
        self.conn.notify(script, pid, Some(fd))
    }
}

fn ok(ty: CriuReqType) -> CriuResp {
    CriuResp { r#type: ty as i32, success: true, ..Default::default() }
}

/// The version answer.
pub fn version() -> CriuVersion {
    let (major, minor, sub) = CRIU_VERSION;
    CriuVersion {
        major_number: major,
        minor_number: minor,
        sublevel: (sub != 0).then_some(sub),
        name: Some("stasis".into()),
        ..Default::default()
    }
}

/// What we can do of the features a caller asks about: memory tracking
/// (pre-dumps) yes; lazy pages and a pidfd store no.
pub fn features() -> CriuFeatures {
    CriuFeatures { mem_track: Some(true), lazy_pages: Some(false), pidfd_store: Some(false) }
}

/// The request of a DUMP, PRE_DUMP or RESTORE, after opening its log (so
/// that a refused option is logged where the caller looks).
fn request_of(
    req: &CriuReq,
    peer: i32,
    action: Action,
    open_log: &mut dyn FnMut(Option<std::path::PathBuf>, i32),
) -> Result<Request, CriuError> {
    let opts = req.opts.as_ref().ok_or_else(|| CriuError::Rpc(format!("a {action:?} request without options")))?;
    open_log(Request::log_of_rpc(peer, opts), opts.log_level());
    log::debug!("{action:?} options: {opts:?}");
    let r = Request::from_rpc(peer, action, opts)?;
    log::debug!("{action:?} request: {r:?}");
    Ok(r)
}

/// Serves one request from `req` and answers it on `conn`; the error, if
/// any, has been sent as a failure answer and is returned for the log
/// (the caller logs it once).
fn serve_one(
    conn: &mut Conn,
    peer: i32,
    req: CriuReq,
    open_log: &mut dyn FnMut(Option<std::path::PathBuf>, i32),
) -> Result<(), CriuError> {
    let ty = CriuReqType::try_from(req.r#type).unwrap_or(CriuReqType::Empty);
    let result = (|| -> Result<CriuResp, CriuError> {
        match ty {
            CriuReqType::Version => Ok(CriuResp { version: Some(version()), ..ok(ty) }),
            CriuReqType::FeatureCheck => Ok(CriuResp { features: Some(features()), ..ok(ty) }),
            CriuReqType::Check => Ok(ok(ty)),
            CriuReqType::Dump | CriuReqType::PreDump => {
                let pre = ty == CriuReqType::PreDump;
                let r = request_of(&req, peer, if pre { Action::PreDump } else { Action::Dump }, open_log)?;
                let mut n = RpcNotify { on: r.notify_scripts, conn };
                let stats = run::dump(&r, pre, &mut n)?;
                log::info!(
                    "dumped {} processes in {:?} (frozen {:?}), {} pages written",
                    stats.processes,
                    stats.total_time,
                    stats.frozen_time,
                    stats.pages_written
                );
                Ok(CriuResp { dump: Some(CriuDumpResp { restored: Some(false) }), ..ok(ty) })
            }
            CriuReqType::Restore => {
                let r = request_of(&req, peer, Action::Restore, open_log)?;
                let mut n = RpcNotify { on: r.notify_scripts, conn };
                let pid = run::restore(&r, &mut n)?;
                Ok(CriuResp { restore: Some(CriuRestoreResp { pid }), ..ok(ty) })
            }
            other => Err(CriuError::Unsupported(format!("request type {other:?}"))),
        }
    })();
    match result {
        Ok(resp) => conn.send(&resp),
        Err(e) => {
            let msg = crate::error::one_line(&e);
            let _ = conn.send(&CriuResp {
                r#type: ty as i32,
                success: false,
                cr_errno: Some(e.errno()),
                cr_errmsg: Some(msg),
                ..Default::default()
            });
            Err(e)
        }
    }
}

/// Serves the socket at `fd` until the caller hangs up or one request has
/// been served (`keep_open` keeps it for more). `open_log` is given each
/// dump or restore request's log file and level before it runs.
pub fn serve(fd: i32, open_log: &mut dyn FnMut(Option<std::path::PathBuf>, i32)) -> Result<(), CriuError> {
    let sock = stasis_sys::fd::inherited(fd).map_err(CriuError::io(format!("using fd {fd} as the RPC socket")))?;
    let peer = stasis_sys::net::peer_pid(std::os::fd::AsFd::as_fd(&sock))
        .map_err(CriuError::io("asking who is at the other end of the RPC socket"))?;
    let mut conn = Conn::new(std::fs::File::from(sock));
    while let Some(req) = conn.recv()? {
        let keep = req.keep_open();
        serve_one(&mut conn, peer, req, open_log)?;
        if !keep {
            break;
        }
    }
    Ok(())
}
