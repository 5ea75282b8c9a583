//! Bit values CRIU stores in image fields that protobuf types only as
//! integers: VMA status, pagemap entry flags, task states, image version.
//!
//! They come from CRIU's C headers (`criu/include/image.h`, `pagemap.h`,
//! `magic.h`), not from the `.proto` files, so they are listed here.

/// `inventory_entry.img_version` of the current layout (CRIU's
/// `CRTOOLS_IMAGES_V1_1`: every file starts with two magics).
pub const IMG_VERSION: u32 = 2;

/// `inventory_entry.stasis_format` written by this crate. Readers refuse a
/// larger value.
pub const STASIS_FORMAT: u32 = 1;

/// `vma_entry.status` bits (CRIU's `VMA_*`).
pub mod vma {
    /// An ordinary, restorable area.
    pub const AREA_REGULAR: u32 = 1 << 0;
    /// The main thread's stack.
    pub const AREA_STACK: u32 = 1 << 1;
    /// `[vsyscall]`.
    pub const AREA_VSYSCALL: u32 = 1 << 2;
    /// `[vdso]`.
    pub const AREA_VDSO: u32 = 1 << 3;
    /// `[heap]`.
    pub const AREA_HEAP: u32 = 1 << 5;
    /// Private mapping of a file.
    pub const FILE_PRIVATE: u32 = 1 << 6;
    /// Shared mapping of a file.
    pub const FILE_SHARED: u32 = 1 << 7;
    /// Shared anonymous memory.
    pub const ANON_SHARED: u32 = 1 << 8;
    /// Private anonymous memory.
    pub const ANON_PRIVATE: u32 = 1 << 9;
    /// SysV IPC shared memory.
    pub const AREA_SYSVIPC: u32 = 1 << 10;
    /// Packet socket ring.
    pub const AREA_SOCKET: u32 = 1 << 11;
    /// `[vvar]`.
    pub const AREA_VVAR: u32 = 1 << 12;
    /// AIO ring.
    pub const AREA_AIORING: u32 = 1 << 13;
    /// memfd mapping.
    pub const AREA_MEMFD: u32 = 1 << 14;
    /// Shadow stack.
    pub const AREA_SHSTK: u32 = 1 << 15;
    /// Stack guard gap.
    pub const AREA_GUARD: u32 = 1 << 16;
    /// `[uprobes]`.
    pub const AREA_UPROBES: u32 = 1 << 17;
    /// Area CRIU cannot dump.
    pub const UNSUPP: u32 = 1 << 31;
}

/// `pagemap_entry.flags` bits (CRIU's `PE_*`).
pub mod pe {
    /// The pages are in the parent image set (incremental dump).
    pub const PARENT: u32 = 1 << 0;
    /// The pages may be restored lazily (on fault).
    pub const LAZY: u32 = 1 << 1;
    /// The pages are in this set's `pages-N.img`.
    pub const PRESENT: u32 = 1 << 2;
}

/// `task_core_entry.task_state` values (CRIU's `TASK_*`).
pub mod task_state {
    /// Running task.
    pub const ALIVE: u32 = 0x1;
    /// Exited task (only as a thread group leader kept for its threads).
    pub const DEAD: u32 = 0x2;
    /// Stopped by a signal.
    pub const STOPPED: u32 = 0x3;
    /// Zombie waiting to be reaped.
    pub const ZOMBIE: u32 = 0x6;
}
