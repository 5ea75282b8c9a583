//! Sorted, disjoint address ranges `[start, end)` and the set operations
//! an incremental dump needs: which stored pages may come from the parent
//! image (tracked ∩ stored in parent − written since).

/// A set of addresses as sorted, disjoint, non-adjacent ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Builds the set from ranges in any order, overlapping or not.
    pub fn from_unsorted(mut v: Vec<(u64, u64)>) -> Ranges {
        v.retain(|(s, e)| s < e);
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ranges(out)
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total bytes covered.
    pub fn len_bytes(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// The addresses in both sets.
    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < a.len() && j < b.len() {
            let s = a[i].0.max(b[j].0);
            let e = a[i].1.min(b[j].1);
            if s < e {
                out.push((s, e));
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    /// The addresses of `self` not in `other`.
    pub fn subtract(&self, other: &Ranges) -> Ranges {
        let b = &other.0;
        let mut out = Vec::new();
        let mut j = 0;
        for &(s, e) in &self.0 {
            let mut cur = s;
            while j < b.len() && b[j].1 <= cur {
                j += 1;
            }
            let mut k = j;
            while k < b.len() && b[k].0 < e {
                if b[k].0 > cur {
                    out.push((cur, b[k].0));
                }
                cur = cur.max(b[k].1);
                k += 1;
            }
            if cur < e {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    /// Cuts `[start, end)` into pieces inside and outside the set, in
    /// address order: `(piece_start, piece_end, inside)`.
    pub fn split(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        let mut cur = start;
        let first = self.0.partition_point(|&(_, e)| e <= start);
        for &(s, e) in &self.0[first..] {
            if s >= end {
                break;
            }
            if s > cur {
                out.push((cur, s, false));
            }
            let (a, b) = (s.max(cur), e.min(end));
            if a < b {
                out.push((a, b, true));
            }
            cur = b;
        }
        if cur < end {
            out.push((cur, end, false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;

    fn r(v: &[(u64, u64)]) -> Ranges {
        Ranges::from_unsorted(v.to_vec())
    }

    #[test]
    fn builds_merged_and_sorted() {
        assert_eq!(r(&[(30, 40), (0, 10), (10, 20), (35, 50), (60, 60)]).as_slice(), &[(0, 20), (30, 50)]);
    }

    #[test]
    fn intersects() {
        let a = r(&[(0, 100), (200, 300)]);
        let b = r(&[(50, 250), (290, 400)]);
        assert_eq!(a.intersect(&b).as_slice(), &[(50, 100), (200, 250), (290, 300)]);
        assert!(a.intersect(&Ranges::default()).is_empty());
    }

    #[test]
    fn subtracts() {
        let a = r(&[(0, 100), (200, 300)]);
        let b = r(&[(10, 20), (90, 210), (250, 260)]);
        assert_eq!(a.subtract(&b).as_slice(), &[(0, 10), (20, 90), (210, 250), (260, 300)]);
        assert_eq!(a.subtract(&r(&[(0, 1000)])).as_slice(), &[]);
        assert_eq!(a.subtract(&Ranges::default()), a);
    }

    #[test]
    fn splits_a_range() {
        let a = r(&[(10, 20), (30, 40)]);
        assert_eq!(a.split(0, 35), vec![(0, 10, false), (10, 20, true), (20, 30, false), (30, 35, true)]);
        assert_eq!(a.split(12, 18), vec![(12, 18, true)]);
        assert_eq!(a.split(40, 50), vec![(40, 50, false)]);
    }
}
