//! CRIU's RPC messages (generated from `proto/rpc.proto`) and their
//! transport: each message is one SOCK_SEQPACKET datagram.

use crate::CriuError;
use prost::Message;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/criu_rpc.rs"));
}

pub use pb::{CriuReq, CriuReqType, CriuResp};

/// Largest message we accept (runc's buffer is 40 KiB).
const MAX_MSG: usize = 1 << 20;

/// One end of the socket pair.
pub struct Conn {
    sock: File,
}

impl Conn {
    pub fn new(sock: File) -> Conn {
        Conn { sock }
    }

    /// The next request; `None` when the peer closed.
    pub fn recv(&mut self) -> Result<Option<CriuReq>, CriuError> {
        let mut buf = vec![0u8; MAX_MSG];
        let n = self.sock.read(&mut buf).map_err(CriuError::io("reading a request"))?;
        if n == 0 {
            return Ok(None);
        }
        CriuReq::decode(&buf[..n]).map(Some).map_err(|e| CriuError::Rpc(format!("undecodable request: {e}")))
    }

    pub fn send(&mut self, resp: &CriuResp) -> Result<(), CriuError> {
        self.sock.write_all(&resp.encode_to_vec()).map_err(CriuError::io("sending a response"))
    }

    /// Sends a NOTIFY for `script` (with the tree's root `pid`, 0 if none,
    /// and `fd` attached if given) and waits for the caller's answer.
    pub fn notify(&mut self, script: &str, pid: i32, fd: Option<BorrowedFd<'_>>) -> Result<(), CriuError> {
        log::debug!("notify {script} (pid {pid})");
        let msg = CriuResp {
            r#type: CriuReqType::Notify as i32,
            success: true,
            notify: Some(pb::CriuNotify { script: Some(script.into()), pid: Some(pid) }),
            ..Default::default()
        };
        match fd {
            None => self.send(&msg)?,
            Some(fd) => {
                stasis_sys::net::send_with_fd(self.sock.as_fd(), &msg.encode_to_vec(), fd)
                    .map_err(CriuError::io(format!("sending {script} with its fd")))?;
            }
        }
        match self.recv()? {
            Some(r) if r.r#type == CriuReqType::Notify as i32 && r.notify_success() => Ok(()),
            Some(r) if r.r#type == CriuReqType::Notify as i32 => Err(CriuError::NotifyRefused(script.into())),
            Some(r) => Err(CriuError::Rpc(format!("expected the answer to {script}, got request type {}", r.r#type))),
            None => Err(CriuError::Rpc(format!("the caller hung up during {script}"))),
        }
    }
}
