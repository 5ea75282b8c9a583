//! A realistic synthetic image set shared by the integration tests: two
//! processes (parent and child) with registers, memory, pages and files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use stasis_image::flags::{pe, task_state, vma};
use stasis_image::pb::{self, core_entry::March, FdTypes};
use stasis_image::{ImageDirWriter, PipeData, TcpStream, PAGE_SIZE};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("stasis-image-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const PARENT: u32 = 100;
pub const CHILD: u32 = 101;
/// Thread of the parent.
pub const THREAD: u32 = 102;
pub const PIPE_INO: u32 = 4242;
pub const TCP_INO: u32 = 0x1abc;

pub fn fown() -> pb::FownEntry {
    pb::FownEntry { uid: 0, euid: 0, signum: 0, pid_type: 0, pid: 0 }
}

pub fn regs(pid: u32) -> pb::UserX86RegsEntry {
    pb::UserX86RegsEntry {
        r15: 15,
        r14: 14,
        r13: 13,
        r12: 12,
        bp: 0x7ffc_0000_1000,
        bx: 1,
        r11: 0x246,
        r10: 0,
        r9: 0,
        r8: 0,
        ax: u64::MAX - 3, // -ERESTARTSYS-like value
        cx: 0,
        dx: 0,
        si: 0,
        di: u64::from(pid),
        orig_ax: 61,
        ip: 0x40_1000,
        cs: 0x33,
        flags: 0x246,
        sp: 0x7ffc_0000_0f00,
        ss: 0x2b,
        fs_base: 0x7f00_0000_0740,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
        mode: Some(pb::UserX86RegsMode::Native as i32),
    }
}

pub fn fpregs() -> pb::UserX86FpregsEntry {
    pb::UserX86FpregsEntry {
        cwd: 0x37f,
        swd: 0,
        twd: 0,
        fop: 0,
        rip: 0,
        rdp: 0,
        mxcsr: 0x1f80,
        mxcsr_mask: 0xffff,
        st_space: vec![0; 32],
        xmm_space: (0..64).collect(),
        padding: vec![0; 24],
        xsave: Some(pb::UserX86XsaveEntry {
            xstate_bv: 0x7,
            ymmh_space: vec![7; 64],
            bndreg_state: vec![],
            bndcsr_state: vec![],
            opmask_reg: vec![],
            zmm_upper: vec![],
            hi16_zmm: vec![],
            pkru: vec![],
            cet: None,
        }),
    }
}

pub fn thread_core(tid: u32) -> pb::ThreadCoreEntry {
    pb::ThreadCoreEntry {
        futex_rla: 0x7f00_0000_0a20,
        futex_rla_len: 24,
        sched_nice: Some(0),
        sched_policy: Some(0),
        sched_prio: Some(0),
        blk_sigset: Some(0),
        sas: Some(pb::ThreadSasEntry { ss_sp: 0, ss_size: 0, ss_flags: 2 }),
        pdeath_sig: Some(0),
        signals_p: Some(pb::SignalQueueEntry { signals: vec![] }),
        creds: Some(pb::CredsEntry {
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            suid: 0,
            sgid: 0,
            fsuid: 0,
            fsgid: 0,
            cap_inh: vec![0, 0],
            cap_prm: vec![u32::MAX, 0x1ff],
            cap_eff: vec![u32::MAX, 0x1ff],
            cap_bnd: vec![u32::MAX, 0x1ff],
            secbits: 0,
            groups: vec![0, 10],
            lsm_profile: None,
            lsm_sockcreate: None,
            apparmor_data: None,
            no_new_privs: Some(0),
            cap_amb: vec![0, 0],
        }),
        seccomp_mode: Some(pb::SeccompMode::Disabled as i32),
        seccomp_filter: None,
        comm: Some(format!("thread-{tid}")),
        blk_sigset_extended: None,
        rseq_entry: Some(pb::RseqEntry {
            rseq_abi_pointer: 0x7f00_0000_0fe0,
            rseq_abi_size: 32,
            signature: 0x5305_3053,
            rseq_cs_pointer: Some(0),
        }),
        cg_set: None,
    }
}

pub fn core(pid: u32, tid: u32, comm: &str) -> pb::CoreEntry {
    let itimer = pb::ItimerEntry { isec: 0, iusec: 0, vsec: 0, vusec: 0 };
    let tc = (pid == tid).then(|| pb::TaskCoreEntry {
        task_state: task_state::ALIVE,
        exit_code: 0,
        personality: 0,
        flags: 0x40_0100,
        blk_sigset: 0,
        comm: comm.to_owned(),
        timers: Some(pb::TaskTimersEntry {
            real: itimer,
            virt: itimer,
            prof: itimer,
            posix: vec![pb::PosixTimerEntry {
                it_id: 0,
                clock_id: 1,
                si_signo: 14,
                it_sigev_notify: 0,
                sival_ptr: 0,
                overrun: 0,
                isec: 1,
                insec: 0,
                vsec: 0,
                vnsec: 500,
                notify_thread_id: None,
            }],
        }),
        rlimits: Some(pb::TaskRlimitsEntry {
            rlimits: (0..16).map(|i| pb::RlimitEntry { cur: i, max: u64::MAX }).collect(),
        }),
        cg_set: None,
        signals_s: Some(pb::SignalQueueEntry { signals: vec![pb::SiginfoEntry { siginfo: vec![10; 128] }] }),
        old_seccomp_mode: None,
        old_seccomp_filter: None,
        loginuid: Some(u32::MAX),
        oom_score_adj: Some(0),
        sigactions: (1..=64)
            .map(|_| pb::SaEntry {
                sigaction: 0,
                flags: 0x0400_0000,
                restorer: 0x40_2000,
                mask: 0,
                compat_sigaction: Some(false),
                mask_extended: None,
            })
            .collect(),
        child_subreaper: Some(false),
        blk_sigset_extended: None,
        stop_signo: None,
        membarrier_registration_mask: None,
    });
    pb::CoreEntry {
        mtype: March::X8664 as i32,
        thread_info: Some(pb::ThreadInfoX86 {
            clear_tid_addr: 0x7f00_0000_0a10,
            gpregs: regs(tid),
            fpregs: fpregs(),
            tls: vec![pb::UserDescT {
                entry_number: 12,
                base_addr: 0,
                limit: 0xfffff,
                seg_32bit: true,
                contents_h: false,
                contents_l: false,
                read_exec_only: true,
                limit_in_pages: true,
                seg_not_present: true,
                usable: false,
            }],
            xsave_raw: Some(vec![0xa5; 2696]),
        }),
        tc,
        ids: None,
        thread_core: Some(thread_core(tid)),
    }
}

fn vma_entry(start: u64, end: u64, prot: u32, flags: u32, status: u32, shmid: u64) -> pb::VmaEntry {
    pb::VmaEntry { start, end, pgoff: 0, shmid, prot, flags, status, fd: -1, madv: Some(0), fdflags: None }
}

/// File ids in files.img.
pub const EXE_ID: u32 = 1;
pub const LOG_ID: u32 = 2;
pub const PIPE_R_ID: u32 = 3;
pub const PIPE_W_ID: u32 = 4;
pub const ROOT_ID: u32 = 5;
pub const CWD_ID: u32 = 6;
pub const EVENTFD_ID: u32 = 7;

pub fn mm(pid: u32) -> pb::MmEntry {
    let r = vma::AREA_REGULAR;
    pb::MmEntry {
        mm_start_code: 0x40_0000,
        mm_end_code: 0x40_3000,
        mm_start_data: 0x60_0000,
        mm_end_data: 0x60_1000,
        mm_start_stack: 0x7ffc_0000_0ff0,
        mm_start_brk: 0x100_0000,
        mm_brk: 0x100_4000,
        mm_arg_start: 0x7ffc_0000_0ff0,
        mm_arg_end: 0x7ffc_0000_0ff8,
        mm_env_start: 0x7ffc_0000_0ff8,
        mm_env_end: 0x7ffc_0000_1000,
        exe_file_id: EXE_ID,
        mm_saved_auxv: vec![6, 4096, 0, 0],
        vmas: vec![
            pb::VmaEntry {
                fdflags: Some(0),
                ..vma_entry(0x40_0000, 0x40_3000, 5, 0x2, r | vma::FILE_PRIVATE, u64::from(EXE_ID))
            },
            vma_entry(0x100_0000, 0x100_4000, 3, 0x22, r | vma::ANON_PRIVATE | vma::AREA_HEAP, 0),
            vma_entry(0x7f00_0000_0000, 0x7f00_0001_0000, 3, 0x21, r | vma::ANON_SHARED, u64::from(pid) + 1000),
            vma_entry(0x7ffc_0000_0000, 0x7ffc_0000_2000, 3, 0x122, r | vma::ANON_PRIVATE | vma::AREA_STACK, 0),
            vma_entry(0x7ffc_0001_0000, 0x7ffc_0001_2000, 5, 0x22, r | vma::AREA_VDSO | vma::ANON_PRIVATE, 0),
        ],
        dumpable: Some(1),
        aios: vec![],
        thp_disabled: Some(false),
    }
}

pub fn file(id: u32, fd_type: FdTypes) -> pb::FileEntry {
    pb::FileEntry { r#type: fd_type as i32, id, ..Default::default() }
}

pub fn reg(id: u32, name: &str, flags: u32) -> pb::FileEntry {
    pb::FileEntry {
        reg: Some(pb::RegFileEntry {
            id,
            flags,
            pos: 17,
            fown: fown(),
            name: name.to_owned(),
            mnt_id: Some(22),
            size: Some(4096),
            ext: None,
            mode: Some(0o100644),
            build_id: vec![],
            checksum: None,
            checksum_config: None,
            checksum_parameter: None,
        }),
        ..file(id, FdTypes::Reg)
    }
}

pub fn pipe(id: u32, flags: u32) -> pb::FileEntry {
    pb::FileEntry {
        pipe: Some(pb::PipeEntry { id, pipe_id: PIPE_INO, flags, fown: fown() }),
        ..file(id, FdTypes::Pipe)
    }
}

pub fn fd(fd: u32, id: u32, ty: FdTypes) -> pb::FdinfoEntry {
    pb::FdinfoEntry { id, flags: 0, r#type: ty as i32, fd, xattr_security_selinux: None }
}

/// CLONE_NEWNS.
fn libc_newns() -> i32 {
    0x0002_0000
}

/// Writes the whole synthetic set into `final_dir` and commits it.
pub fn write_image_set(final_dir: &Path) -> PathBuf {
    let w = ImageDirWriter::create(final_dir).unwrap();
    w.write_inventory(&pb::InventoryEntry {
        img_version: 0, // overwritten by write_inventory
        fdinfo_per_id: Some(true),
        root_ids: Some(ids(PARENT)),
        ns_per_id: Some(true),
        root_cg_set: Some(1),
        lsmtype: Some(pb::Lsmtype::NoLsm as i32),
        dump_uptime: Some(123_456_789),
        pre_dump_mode: None,
        tcp_close: Some(false),
        network_lock_method: Some(1),
        plugins_entry: None,
        dump_criu_run_id: None,
        allow_uprobes: None,
        stasis_format: None,
        stasis_ns_flags: Some((libc_newns() | 0x2000_0000) as u32),
        stasis_ext_netns: Some("extRootNetNS".into()),
    })
    .unwrap();
    w.write_entries(
        &stasis_image::magic::file_name::mountpoints(1),
        stasis_image::ImageKind::Mnts,
        &[
            pb::MntEntry {
                fstype: 17,
                mnt_id: 40,
                root_dev: 0x0280_0001,
                parent_mnt_id: 1,
                flags: 0x0020_0000,
                root: "/".into(),
                mountpoint: "/".into(),
                source: "overlay".into(),
                options: "lowerdir=/l,upperdir=/u,workdir=/w".into(),
                sb_flags: Some(0),
                ..Default::default()
            },
            pb::MntEntry {
                fstype: 16,
                mnt_id: 41,
                root_dev: 0x0fe0_0000,
                parent_mnt_id: 40,
                flags: 0x0020_0000,
                root: "/var/lib/x/hosts".into(),
                mountpoint: "/etc/hosts".into(),
                source: "/dev/vda".into(),
                options: String::new(),
                fsname: Some("ext4".into()),
                ext_mount: Some(true),
                ext_key: Some("/etc/hosts".into()),
                ..Default::default()
            },
        ],
    )
    .unwrap();
    w.write_entries(
        &stasis_image::magic::file_name::utsns(1),
        stasis_image::ImageKind::Utsns,
        &[pb::UtsnsEntry { nodename: "ctr".into(), domainname: "(none)".into() }],
    )
    .unwrap();
    w.write_pstree(&[
        pb::PstreeEntry { pid: PARENT, ppid: 0, pgid: PARENT, sid: PARENT, threads: vec![PARENT, THREAD] },
        pb::PstreeEntry { pid: CHILD, ppid: PARENT, pgid: PARENT, sid: PARENT, threads: vec![CHILD] },
    ])
    .unwrap();
    w.write_core(PARENT, &core(PARENT, PARENT, "server")).unwrap();
    w.write_core(THREAD, &core(PARENT, THREAD, "server")).unwrap();
    w.write_core(CHILD, &core(CHILD, CHILD, "worker")).unwrap();

    for (pid, pages_id) in [(PARENT, 1), (CHILD, 2)] {
        w.write_mm(pid, &mm(pid)).unwrap();
        w.write_ids(pid, &ids(pid)).unwrap();
        w.write_fs(pid, &pb::FsEntry { cwd_id: CWD_ID, root_id: ROOT_ID, umask: Some(0o022) }).unwrap();
        let mut pw = w.page_writer(pages_id).unwrap();
        let page = |b: u8| vec![b; PAGE_SIZE as usize];
        // Heap: 2 contiguous pushes that merge, then a gap.
        pw.add(0x100_0000, &[page(1), page(2)].concat()).unwrap();
        pw.add(0x100_2000, &page(3)).unwrap();
        pw.add_parent(0x100_3000, 1).unwrap();
        pw.add_with_flags(0x7f00_0000_0000, &page(4), pe::PRESENT | pe::LAZY).unwrap();
        pw.add(0x7ffc_0000_1000, &page(5)).unwrap();
        let (head, entries) = pw.finish().unwrap();
        w.write_pagemap(pid, &head, &entries).unwrap();
    }

    w.write_files(&[
        reg(EXE_ID, "/usr/bin/server", 0),
        reg(LOG_ID, "/var/log/server.log", 0o2001),
        pipe(PIPE_R_ID, 0),
        pipe(PIPE_W_ID, 1),
        reg(ROOT_ID, "/", 0o200000),
        reg(CWD_ID, "/srv", 0o200000),
        pb::FileEntry {
            efd: Some(pb::EventfdFileEntry { id: EVENTFD_ID, flags: 2, fown: fown(), counter: 5 }),
            ..file(EVENTFD_ID, FdTypes::Eventfd)
        },
    ])
    .unwrap();
    w.write_fdinfo(
        PARENT,
        &[
            fd(0, PIPE_R_ID, FdTypes::Pipe),
            fd(1, LOG_ID, FdTypes::Reg),
            fd(2, LOG_ID, FdTypes::Reg),
            fd(3, PIPE_W_ID, FdTypes::Pipe),
            fd(4, EVENTFD_ID, FdTypes::Eventfd),
        ],
    )
    .unwrap();
    w.write_fdinfo(CHILD, &[fd(0, PIPE_R_ID, FdTypes::Pipe), fd(1, LOG_ID, FdTypes::Reg)]).unwrap();
    w.write_pipes_data(&[PipeData {
        entry: pb::PipeDataEntry { pipe_id: PIPE_INO, bytes: 0, size: Some(65536) },
        data: b"hello through the pipe\n".to_vec(),
    }])
    .unwrap();
    // Two connections: both go to tcp-streams.img.
    for (ino, inq, outq) in [(TCP_INO, &b"in"[..], &b"out"[..]), (TCP_INO + 1, &b""[..], &b"second"[..])] {
        w.write_tcp_stream(
            ino,
            &TcpStream {
                entry: pb::TcpStreamEntry {
                    inq_len: 0,
                    inq_seq: 1000,
                    outq_len: 0,
                    outq_seq: 2000,
                    opt_mask: 0x7,
                    snd_wscale: 7,
                    mss_clamp: 1460,
                    rcv_wscale: Some(7),
                    timestamp: Some(99),
                    cork: None,
                    nodelay: None,
                    unsq_len: Some(2),
                    snd_wl1: Some(1),
                    snd_wnd: Some(65535),
                    max_window: Some(65535),
                    rcv_wnd: Some(65535),
                    rcv_wup: Some(1000),
                    stasis_ino: None,
                },
                inq: inq.to_vec(),
                outq: outq.to_vec(),
            },
        )
        .unwrap();
    }
    w.write_seccomp(&pb::SeccompEntry {
        seccomp_filters: vec![pb::SeccompFilter {
            filter: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
            prev: None,
            flags: Some(0),
        }],
    })
    .unwrap();
    w.write_dump_stats(&pb::StatsEntry {
        dump: Some(pb::DumpStatsEntry {
            freezing_time: 10,
            frozen_time: 200,
            memdump_time: 50,
            memwrite_time: 60,
            pages_scanned: 100,
            pages_skipped_parent: 2,
            pages_written: 10,
            irmap_resolve: None,
            pages_lazy: 2,
            page_pipes: None,
            page_pipe_bufs: None,
            shpages_scanned: None,
            shpages_skipped_parent: None,
            shpages_written: None,
        }),
        restore: None,
    })
    .unwrap();
    w.commit().unwrap()
}

pub fn ids(pid: u32) -> pb::TaskKobjIdsEntry {
    pb::TaskKobjIdsEntry {
        vm_id: pid,
        files_id: pid,
        fs_id: pid,
        sighand_id: pid,
        pid_ns_id: Some(1),
        net_ns_id: Some(2),
        ipc_ns_id: Some(3),
        uts_ns_id: Some(4),
        mnt_ns_id: Some(5),
        user_ns_id: None,
        cgroup_ns_id: Some(6),
        time_ns_id: None,
    }
}
