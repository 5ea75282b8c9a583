//! `/proc/PID/smaps`: only the `VmFlags:` line of each VMA.
//!
//! `maps` does not show the flags the dump must reproduce with `madvise` and
//! `mlock` on restore (`MADV_DONTDUMP`, `MADV_DONTFORK`, `MADV_WIPEONFORK`,
//! `MADV_HUGEPAGE`/`NOHUGEPAGE`, `MADV_MERGEABLE`, `mlock`), nor `VM_GROWSDOWN`.
//! smaps does, in two-letter codes (`show_smap_vma_flags` in
//! `fs/proc/task_mmu.c`).
//!
//! Generating smaps is slow for the kernel (it walks the page tables of every
//! VMA to count Rss), so read it *once* per task: [`read_smaps`] returns
//! every VMA with its flags — the same snapshot as `maps`, so the two never
//! disagree — and [`read_vm_flags`] just the flags by start address. The
//! parser looks only at the header and `VmFlags:` lines and skips the rest.

use std::collections::BTreeMap;

use super::maps::{parse_maps_line, MapsEntry};
use super::{parse_err, read_text, ProcError};

/// The flags of one VMA. The named fields cover what restore acts on; `raw`
/// keeps every code the kernel printed, in order, including ones not named here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmFlags {
    /// `rd` `wr` `ex` `sh`: VM_READ, VM_WRITE, VM_EXEC, VM_SHARED.
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    /// `mr` `mw` `me` `ms`: VM_MAY*.
    pub may_read: bool,
    pub may_write: bool,
    pub may_exec: bool,
    pub may_share: bool,
    /// `gd`: stack-like, grows down.
    pub grows_down: bool,
    /// `pf`: VM_PFNMAP (pure PFN range, e.g. `[vvar]`).
    pub pfn_map: bool,
    /// `io`: memory-mapped I/O.
    pub io: bool,
    /// `lo`: mlocked.
    pub locked: bool,
    /// `lf`: mlock(MLOCK_ONFAULT).
    pub lock_on_fault: bool,
    /// `dc`: MADV_DONTFORK.
    pub dont_copy: bool,
    /// `de`: cannot be expanded by mremap.
    pub dont_expand: bool,
    /// `ac`: accounted.
    pub account: bool,
    /// `nr`: MAP_NORESERVE.
    pub no_reserve: bool,
    /// `ht`: hugetlb.
    pub hugetlb: bool,
    /// `wf`: MADV_WIPEONFORK.
    pub wipe_on_fork: bool,
    /// `dd`: MADV_DONTDUMP.
    pub dont_dump: bool,
    /// `sd`: soft-dirty.
    pub soft_dirty: bool,
    /// `mm`: mixed map.
    pub mixed_map: bool,
    /// `hg`: MADV_HUGEPAGE.
    pub huge_page: bool,
    /// `nh`: MADV_NOHUGEPAGE.
    pub no_huge_page: bool,
    /// `mg`: MADV_MERGEABLE (KSM).
    pub mergeable: bool,
    /// `um` `uw` `ui`: registered with userfaultfd (missing, wp, minor).
    pub uffd_missing: bool,
    pub uffd_wp: bool,
    pub uffd_minor: bool,
    /// `ss`: shadow stack.
    pub shadow_stack: bool,
    /// `sl`: mseal()ed.
    pub sealed: bool,
    /// Every code as printed.
    pub raw: Vec<String>,
}

impl VmFlags {
    /// Parses the value of a `VmFlags:` line (`"rd wr mr mw me ac "`).
    pub fn parse(value: &str) -> Self {
        let mut f = VmFlags::default();
        for code in value.split_ascii_whitespace() {
            let slot = match code {
                "rd" => &mut f.read,
                "wr" => &mut f.write,
                "ex" => &mut f.exec,
                "sh" => &mut f.shared,
                "mr" => &mut f.may_read,
                "mw" => &mut f.may_write,
                "me" => &mut f.may_exec,
                "ms" => &mut f.may_share,
                "gd" => &mut f.grows_down,
                "pf" => &mut f.pfn_map,
                "io" => &mut f.io,
                "lo" => &mut f.locked,
                "lf" => &mut f.lock_on_fault,
                "dc" => &mut f.dont_copy,
                "de" => &mut f.dont_expand,
                "ac" => &mut f.account,
                "nr" => &mut f.no_reserve,
                "ht" => &mut f.hugetlb,
                "wf" => &mut f.wipe_on_fork,
                "dd" => &mut f.dont_dump,
                "sd" => &mut f.soft_dirty,
                "mm" => &mut f.mixed_map,
                "hg" => &mut f.huge_page,
                "nh" => &mut f.no_huge_page,
                "mg" => &mut f.mergeable,
                "um" => &mut f.uffd_missing,
                "uw" => &mut f.uffd_wp,
                "ui" => &mut f.uffd_minor,
                "ss" => &mut f.shadow_stack,
                "sl" => &mut f.sealed,
                _ => {
                    f.raw.push(code.to_owned());
                    continue;
                }
            };
            *slot = true;
            f.raw.push(code.to_owned());
        }
        f
    }

    /// Whether the kernel printed `code` (any two-letter code, known or not).
    pub fn has(&self, code: &str) -> bool {
        self.raw.iter().any(|c| c == code)
    }
}

/// One VMA of `smaps`: its `maps` line and its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry {
    pub vma: MapsEntry,
    pub flags: VmFlags,
}

/// Reads `/proc/PID/smaps` once and returns every VMA with its flags.
pub fn read_smaps(pid: i32) -> Result<Vec<SmapsEntry>, ProcError> {
    let (path, text) = read_text(pid, "smaps")?;
    parse_smaps(&text).map_err(|e| e.at(&path))
}

/// Reads `/proc/PID/smaps` once and returns the flags of every VMA, by start address.
pub fn read_vm_flags(pid: i32) -> Result<BTreeMap<u64, VmFlags>, ProcError> {
    let (path, text) = read_text(pid, "smaps")?;
    parse_vm_flags(&text).map_err(|e| e.at(&path))
}

/// Parses the text of an `smaps` file into VMAs with flags. Every VMA must
/// have a `VmFlags:` line (kernels since 3.8 print one).
pub fn parse_smaps(text: &str) -> Result<Vec<SmapsEntry>, ProcError> {
    let mut out: Vec<SmapsEntry> = Vec::new();
    let mut flags_seen = true;
    let mut last_header = 0;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if is_header(line) {
            if !flags_seen {
                return Err(parse_err("smaps", last_header, "VMA without a VmFlags line"));
            }
            let vma = parse_maps_line(line).map_err(|r| parse_err("smaps", n, r))?;
            out.push(SmapsEntry { vma, flags: VmFlags::default() });
            flags_seen = false;
            last_header = n;
        } else if let Some(v) = line.strip_prefix("VmFlags:") {
            let cur = out.last_mut().ok_or_else(|| parse_err("smaps", n, "VmFlags before any VMA"))?;
            cur.flags = VmFlags::parse(v);
            flags_seen = true;
        }
    }
    if !flags_seen {
        return Err(parse_err("smaps", last_header, "VMA without a VmFlags line"));
    }
    Ok(out)
}

/// Parses the text of an `smaps` file into flags by VMA start address.
pub fn parse_vm_flags(text: &str) -> Result<BTreeMap<u64, VmFlags>, ProcError> {
    Ok(parse_smaps(text)?.into_iter().map(|e| (e.vma.start, e.flags)).collect())
}

/// A VMA header starts with `start-end `; field lines start with `Key:`.
fn is_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    !first.ends_with(':')
        && first.split_once('-').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && super::hex_u64(a).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::maps::VmaKind;

    const SAMPLE: &str = include_str!("fixtures/python_smaps.txt");

    #[test]
    fn python_sample() {
        let v = parse_smaps(SAMPLE).unwrap();
        assert_eq!(v.len(), 17);
        let by_kind = |k: VmaKind| v.iter().find(|e| e.vma.kind == k).unwrap();

        let stack = &by_kind(VmaKind::Stack).flags;
        assert!(stack.grows_down && stack.read && stack.write && stack.account);
        assert!(!stack.shared);

        let vvar = &by_kind(VmaKind::Vvar).flags;
        assert!(vvar.pfn_map && vvar.io && vvar.dont_expand && vvar.dont_dump);
        assert_eq!(vvar.raw, ["rd", "mr", "pf", "io", "de", "dd"]);

        let memfd = &by_kind(VmaKind::Memfd).flags;
        assert!(memfd.shared && memfd.may_share);
        let sysv = v.iter().find(|e| e.vma.kind == VmaKind::SharedAnon).unwrap();
        assert!(sysv.flags.shared);

        // The guard page of a thread stack: PROT_NONE, MADV_NOHUGEPAGE.
        let guard = v.iter().find(|e| e.vma.start == 0x7f7c92cc4000).unwrap();
        assert_eq!(guard.flags.raw, ["mr", "mw", "me", "nh"]);
        assert!(guard.flags.no_huge_page && !guard.flags.read);

        let vsys = by_kind(VmaKind::Vsyscall);
        assert_eq!(vsys.flags.raw, ["ex"]);

        let flags = parse_vm_flags(SAMPLE).unwrap();
        assert_eq!(flags.len(), 17);
        assert!(flags[&0x560c256e7000].write);
    }

    #[test]
    fn every_code() {
        let f = VmFlags::parse(
            " rd wr ex sh mr mw me ms gd pf io lo lf dc de ac nr ht wf dd sd mm hg nh mg um uw ui ss sl zz ",
        );
        assert!(f.read && f.write && f.exec && f.shared);
        assert!(f.may_read && f.may_write && f.may_exec && f.may_share);
        assert!(f.grows_down && f.pfn_map && f.io && f.locked && f.lock_on_fault);
        assert!(f.dont_copy && f.dont_expand && f.account && f.no_reserve && f.hugetlb);
        assert!(f.wipe_on_fork && f.dont_dump && f.soft_dirty && f.mixed_map);
        assert!(f.huge_page && f.no_huge_page && f.mergeable);
        assert!(f.uffd_missing && f.uffd_wp && f.uffd_minor && f.shadow_stack && f.sealed);
        assert_eq!(f.raw.len(), 31);
        assert!(f.has("zz") && !f.has("xx"));
    }

    #[test]
    fn missing_flags_is_an_error() {
        let text = SAMPLE.replacen("VmFlags: rd mr mw me \n", "", 1);
        let e = parse_smaps(&text).unwrap_err();
        assert!(matches!(e, ProcError::Parse { line: 1, .. }), "{e:?}");
        let last = SAMPLE.rfind("VmFlags").unwrap();
        assert!(parse_smaps(&SAMPLE[..last]).is_err());
        assert!(parse_smaps("VmFlags: rd\n").is_err());
    }

    #[test]
    fn read_own_smaps_matches_maps() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = read_smaps(me).unwrap();
        assert!(s.iter().any(|e| e.vma.kind == VmaKind::Stack && e.flags.grows_down));
        assert!(s.iter().all(|e| e.flags.read == e.vma.prot.read));
        assert!(!read_vm_flags(me).unwrap().is_empty());
    }
}
