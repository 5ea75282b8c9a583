//! Image kinds: their magics, how their files are framed, and their names.
//!
//! Every CRIU image file except `inventory.img` and raw ones starts with two
//! little-endian u32 magics: a leading magic saying which family the file
//! belongs to ([`IMG_COMMON_MAGIC`] for checkpoint state, [`IMG_SERVICE_MAGIC`]
//! for statistics and caches), then the per-kind magic. `inventory.img` has
//! only its per-kind magic; `pages-N.img` has no header at all. Values are
//! CRIU's (`criu/include/magic.h`); `crit` keys its decoders on them.

/// Leading magic of checkpoint state files.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Leading magic of service files (`stats-*.img`, `irmap-cache.img`).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;

/// What precedes the per-kind magic in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// Nothing (only `inventory.img`).
    None,
    /// [`IMG_COMMON_MAGIC`].
    Common,
    /// [`IMG_SERVICE_MAGIC`].
    Service,
}

/// How the body of a file is laid out after its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Entries, each `u32 LE length` + protobuf message, to end of file.
    Entries,
    /// Like [`Framing::Entries`], but the first entry is a `pagemap_head`
    /// and the rest are `pagemap_entry`.
    Pagemap,
    /// Each `pipe_data_entry` is followed by `bytes` raw bytes.
    PipesData,
    /// Each `tcp_stream_entry` is followed by `inq_len` then `outq_len` bytes.
    TcpStream,
    /// No header and no entries: raw bytes (`pages-N.img`).
    Raw,
}

macro_rules! kinds {
    ($( $(#[$doc:meta])* $kind:ident = $magic:expr, $name:literal, $prefix:ident, $framing:ident; )*) => {
        /// A kind of image file.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ImageKind {
            $( $(#[$doc])* $kind, )*
        }

        impl ImageKind {
            /// Every kind this crate knows.
            pub const ALL: &'static [ImageKind] = &[$(ImageKind::$kind),*];

            /// The per-kind magic (0 for raw files).
            pub const fn magic(self) -> u32 {
                match self { $(ImageKind::$kind => $magic,)* }
            }

            /// CRIU's name of the magic, as `crit` prints it.
            pub const fn name(self) -> &'static str {
                match self { $(ImageKind::$kind => $name,)* }
            }

            /// What precedes the per-kind magic.
            pub const fn prefix(self) -> Prefix {
                match self { $(ImageKind::$kind => Prefix::$prefix,)* }
            }

            /// How entries follow the header.
            pub const fn framing(self) -> Framing {
                match self { $(ImageKind::$kind => Framing::$framing,)* }
            }
        }
    };
}

kinds! {
    /// `inventory.img`.
    Inventory = 0x5831_3116, "INVENTORY", None, Entries;
    /// `pstree.img`.
    Pstree = 0x5027_3030, "PSTREE", Common, Entries;
    /// `core-PID.img`.
    Core = 0x5505_3847, "CORE", Common, Entries;
    /// `mm-PID.img`.
    Mm = 0x5749_2820, "MM", Common, Entries;
    /// `pagemap-PID.img`.
    Pagemap = 0x5608_4025, "PAGEMAP", Common, Pagemap;
    /// `pages-N.img`.
    Pages = 0, "PAGES", None, Raw;
    /// `ids-PID.img`.
    Ids = 0x5443_2030, "IDS", Common, Entries;
    /// `fs-PID.img`.
    Fs = 0x5140_3912, "FS", Common, Entries;
    /// `files.img`.
    Files = 0x5630_3138, "FILES", Common, Entries;
    /// `fdinfo-N.img`.
    Fdinfo = 0x5621_3732, "FDINFO", Common, Entries;
    /// `pipes-data.img`.
    PipesData = 0x5645_3709, "PIPES_DATA", Common, PipesData;
    /// `fifo-data.img`.
    FifoData = 0x5933_3054, "FIFO_DATA", Common, PipesData;
    /// `creds-PID.img` (legacy; creds now live in `core`).
    Creds = 0x5402_3547, "CREDS", Common, Entries;
    /// `sigacts-PID.img` (legacy; sigactions now live in `core`).
    Sigacts = 0x5534_4201, "SIGACT", Common, Entries;
    /// `stats-dump.img`, `stats-restore.img`.
    Stats = 0x5709_3306, "STATS", Service, Entries;
    /// `seccomp.img`.
    Seccomp = 0x6441_3049, "SECCOMP", Common, Entries;
    /// `tcp-streams.img` (ours: every connection), `tcp-stream-ID.img`
    /// (CRIU's: one, ID in hex).
    TcpStream = 0x5146_5506, "TCP_STREAM", Common, TcpStream;
    /// `sk-queues.img`: `sk_packet_entry` + `length` bytes of queued data.
    SkQueues = 0x5626_4026, "SK_QUEUES", Common, PipesData;
    /// `pipes.img` (legacy; pipes now live in `files.img`).
    Pipes = 0x5651_3555, "PIPES", Common, Entries;
    /// `reg-files.img` (legacy; regular files now live in `files.img`).
    RegFiles = 0x5036_3636, "REG_FILES", Common, Entries;
    /// `eventfd.img` (legacy; eventfds now live in `files.img`).
    EventfdFile = 0x4452_3722, "EVENTFD_FILE", Common, Entries;
    /// `rlimit-PID.img` (legacy; rlimits now live in `core`).
    Rlimit = 0x5711_3925, "RLIMIT", Common, Entries;
    /// `itimers-PID.img` (legacy; timers now live in `core`).
    Itimers = 0x5746_4056, "ITIMERS", Common, Entries;
    /// `posix-timers-PID.img` (legacy; timers now live in `core`).
    PosixTimers = 0x5260_3957, "POSIX_TIMERS", Common, Entries;
    /// `memfd.img`: one `memfd_inode_entry` per memfd.
    MemfdInode = 0x4845_3499, "MEMFD_INODE", Common, Entries;
    /// `tty-info.img`.
    TtyInfo = 0x5945_3036, "TTY_INFO", Common, Entries;
    /// `file-locks.img`.
    FileLocks = 0x5432_3616, "FILE_LOCKS", Common, Entries;
    /// `mountpoints-N.img`: a mount namespace's mounts.
    Mnts = 0x5556_3928, "MNTS", Common, Entries;
    /// `utsns-N.img`.
    Utsns = 0x5447_3203, "UTSNS", Common, Entries;
}

impl ImageKind {
    /// The kind whose per-kind magic is `magic` (raw files excluded).
    pub fn from_magic(magic: u32) -> Option<ImageKind> {
        if magic == 0 {
            return None;
        }
        ImageKind::ALL.iter().copied().find(|k| k.magic() == magic)
    }

    /// The leading magic, if any.
    pub const fn prefix_magic(self) -> Option<u32> {
        match self.prefix() {
            Prefix::None => None,
            Prefix::Common => Some(IMG_COMMON_MAGIC),
            Prefix::Service => Some(IMG_SERVICE_MAGIC),
        }
    }

    /// Header length in bytes: 0, 4 or 8.
    pub const fn header_len(self) -> usize {
        match (self.framing(), self.prefix()) {
            (Framing::Raw, _) => 0,
            (_, Prefix::None) => 4,
            _ => 8,
        }
    }
}

/// CRIU's name for the magic `magic`, for messages; "unknown" if none.
pub fn magic_name(magic: u32) -> &'static str {
    match magic {
        IMG_COMMON_MAGIC => "IMG_COMMON",
        IMG_SERVICE_MAGIC => "IMG_SERVICE",
        m => ImageKind::from_magic(m).map_or("unknown", ImageKind::name),
    }
}

/// File names inside an image directory (CRIU's `image-desc.c` patterns).
pub mod file_name {
    /// `inventory.img`.
    pub const INVENTORY: &str = "inventory.img";
    /// `pstree.img`.
    pub const PSTREE: &str = "pstree.img";
    /// `files.img`.
    pub const FILES: &str = "files.img";
    /// `pipes-data.img`.
    pub const PIPES_DATA: &str = "pipes-data.img";
    /// `fifo-data.img`.
    pub const FIFO_DATA: &str = "fifo-data.img";
    /// `sk-queues.img`.
    pub const SK_QUEUES: &str = "sk-queues.img";
    /// `seccomp.img`.
    pub const SECCOMP: &str = "seccomp.img";
    /// `memfd.img`.
    pub const MEMFD_INODE: &str = "memfd.img";
    /// `tty-info.img`.
    pub const TTY_INFO: &str = "tty-info.img";
    /// `file-locks.img`.
    pub const FILE_LOCKS: &str = "file-locks.img";
    /// `stats-dump.img`.
    pub const STATS_DUMP: &str = "stats-dump.img";
    /// `stats-restore.img`.
    pub const STATS_RESTORE: &str = "stats-restore.img";

    /// `core-PID.img`.
    pub fn core(pid: u32) -> String {
        format!("core-{pid}.img")
    }
    /// `mm-PID.img`.
    pub fn mm(pid: u32) -> String {
        format!("mm-{pid}.img")
    }
    /// `pagemap-PID.img`.
    pub fn pagemap(pid: u32) -> String {
        format!("pagemap-{pid}.img")
    }
    /// `pages-N.img`.
    pub fn pages(id: u32) -> String {
        format!("pages-{id}.img")
    }
    /// `ids-PID.img`.
    pub fn ids(pid: u32) -> String {
        format!("ids-{pid}.img")
    }
    /// `fs-PID.img`.
    pub fn fs(pid: u32) -> String {
        format!("fs-{pid}.img")
    }
    /// `fdinfo-N.img`, N being `task_kobj_ids_entry.files_id`.
    pub fn fdinfo(files_id: u32) -> String {
        format!("fdinfo-{files_id}.img")
    }
    /// `creds-PID.img`.
    pub fn creds(pid: u32) -> String {
        format!("creds-{pid}.img")
    }
    /// `sigacts-PID.img`.
    pub fn sigacts(pid: u32) -> String {
        format!("sigacts-{pid}.img")
    }
    /// `mountpoints-N.img`, N being the mount namespace's id.
    pub fn mountpoints(id: u32) -> String {
        format!("mountpoints-{id}.img")
    }
    /// `utsns-N.img`.
    pub fn utsns(id: u32) -> String {
        format!("utsns-{id}.img")
    }
    /// `tmpfs-dev-MNT.tar.gz.img`: the files of a tmpfs mount (a gzipped
    /// tar, raw: no header), MNT being its `mnt_entry.mnt_id`.
    pub fn tmpfs_dev(mnt_id: u32) -> String {
        format!("tmpfs-dev-{mnt_id}.tar.gz.img")
    }
    /// `tcp-streams.img`: every dumped connection (ours).
    pub const TCP_STREAMS: &str = "tcp-streams.img";
    /// `tcp-stream-ID.img`, ID in lower-case hex (the socket inode): one
    /// connection, as CRIU writes them.
    pub fn tcp_stream(id: u32) -> String {
        format!("tcp-stream-{id:x}.img")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_unique_and_round_trip() {
        for k in ImageKind::ALL {
            if k.framing() == Framing::Raw {
                assert_eq!(ImageKind::from_magic(k.magic()), None);
                continue;
            }
            assert_eq!(ImageKind::from_magic(k.magic()), Some(*k), "{k:?}");
        }
    }

    #[test]
    fn headers() {
        assert_eq!(ImageKind::Inventory.header_len(), 4);
        assert_eq!(ImageKind::Core.header_len(), 8);
        assert_eq!(ImageKind::Stats.prefix_magic(), Some(IMG_SERVICE_MAGIC));
        assert_eq!(ImageKind::Pages.header_len(), 0);
        assert_eq!(magic_name(0x5505_3847), "CORE");
        assert_eq!(magic_name(1), "unknown");
        assert_eq!(file_name::tcp_stream(255), "tcp-stream-ff.img");
    }
}
