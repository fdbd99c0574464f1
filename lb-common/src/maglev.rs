//! Maglev-style consistent-hash table over weighted readers (Eisenbud et al., NSDI 2016).
//!
//! Each backend id has a fixed preference permutation of the table slots
//! (`offset + j·skip mod M`, M prime, offset and skip from [`crate::hash::id_hash`]), so the
//! table depends only on the set of (id, weight) pairs, not on their order. Backends take turns
//! claiming their next preferred free slot; with weights, every round a backend earns `weight`
//! credit and claims one slot per `max_weight` credit, so its share is proportional to its
//! weight. Removing a backend moves its own slots and only a few others.

use crate::{BACKEND_NONE, MAX_BACKENDS};

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The table length is not a prime number.
    SizeNotPrime {
        /// The given table length.
        len: usize,
    },
    /// More backends than [`MAX_BACKENDS`].
    TooManyBackends {
        /// How many were given.
        count: usize,
    },
    /// The same backend id appears twice.
    DuplicateId {
        /// The repeated id.
        id: u32,
    },
    /// A backend id equals [`BACKEND_NONE`].
    ReservedId,
}

impl core::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::SizeNotPrime { len } => write!(f, "maglev table length {len} is not prime"),
            Self::TooManyBackends { count } => {
                write!(f, "{count} readers exceed the limit of {MAX_BACKENDS}")
            }
            Self::DuplicateId { id } => write!(f, "reader id {id} is listed twice"),
            Self::ReservedId => write!(f, "reader id {BACKEND_NONE} is reserved"),
        }
    }
}

impl core::error::Error for MaglevError {}

/// Whether `n` is prime (trial division; `n` is a table size, small).
pub const fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

const OFFSET_SEED: u32 = 0x2545_f491;
const SKIP_SEED: u32 = 0x9e37_79b9;

/// Fills `table` (length M, prime) with backend ids from `readers` (`(id, weight)` pairs).
/// Readers with weight 0 are left out; with no reader of positive weight every slot is
/// [`BACKEND_NONE`]. Returns the number of readers placed.
pub fn build(readers: &[(u32, u32)], table: &mut [u32]) -> Result<usize, MaglevError> {
    let m = table.len();
    if !is_prime(m) {
        return Err(MaglevError::SizeNotPrime { len: m });
    }
    if readers.len() > MAX_BACKENDS as usize {
        return Err(MaglevError::TooManyBackends { count: readers.len() });
    }
    const N: usize = MAX_BACKENDS as usize;
    let mut ids = [0u32; N];
    let mut weights = [0u32; N];
    let mut offset = [0u64; N];
    let mut skip = [0u64; N];
    let mut next = [0u64; N];
    let mut credit = [0u64; N];
    let mut n = 0;
    for (i, &(id, weight)) in readers.iter().enumerate() {
        if id == BACKEND_NONE {
            return Err(MaglevError::ReservedId);
        }
        if readers[..i].iter().any(|&(other, _)| other == id) {
            return Err(MaglevError::DuplicateId { id });
        }
        if weight == 0 {
            continue;
        }
        ids[n] = id;
        weights[n] = weight;
        offset[n] = crate::hash::id_hash(id, OFFSET_SEED) as u64 % m as u64;
        skip[n] = crate::hash::id_hash(id, SKIP_SEED) as u64 % (m as u64 - 1) + 1;
        n += 1;
    }
    // Turn order follows the id, not the caller's order, so the table depends only on the set.
    for i in 1..n {
        let mut j = i;
        while j > 0 && ids[j - 1] > ids[j] {
            ids.swap(j - 1, j);
            weights.swap(j - 1, j);
            offset.swap(j - 1, j);
            skip.swap(j - 1, j);
            j -= 1;
        }
    }
    table.fill(BACKEND_NONE);
    if n == 0 {
        return Ok(0);
    }
    let max_weight = weights[..n].iter().copied().max().unwrap_or(1) as u64;
    let mut filled = 0;
    'rounds: loop {
        for i in 0..n {
            credit[i] += weights[i] as u64;
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            // Claim the next free slot in this backend's permutation. skip < M and M prime, so
            // the permutation visits every slot and a free one is found within M steps.
            loop {
                let slot = ((offset[i] + next[i] * skip[i]) % m as u64) as usize;
                next[i] += 1;
                if table[slot] == BACKEND_NONE {
                    table[slot] = ids[i];
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break 'rounds;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;
    use crate::MAGLEV_SIZE;

    fn table(readers: &[(u32, u32)]) -> Vec<u32> {
        let mut t = vec![0u32; MAGLEV_SIZE as usize];
        build(readers, &mut t).expect("building the maglev table");
        t
    }

    fn share(t: &[u32], id: u32) -> f64 {
        t.iter().filter(|&&x| x == id).count() as f64 / t.len() as f64
    }

    #[test]
    fn table_size_is_prime() {
        assert!(is_prime(MAGLEV_SIZE as usize), "MAGLEV_SIZE {MAGLEV_SIZE} must be prime");
        for (n, p) in [(0, false), (1, false), (2, true), (4093, true), (4095, false), (65537, true)] {
            assert_eq!(is_prime(n), p, "is_prime({n})");
        }
    }

    #[test]
    fn equal_weights_split_evenly() {
        for n in 1..=8u32 {
            let readers: Vec<(u32, u32)> = (0..n).map(|i| (i * 7 + 1, 100)).collect();
            let t = table(&readers);
            assert!(t.iter().all(|&x| x != BACKEND_NONE), "{n} readers: every slot filled");
            for &(id, _) in &readers {
                let s = share(&t, id);
                let want = 1.0 / n as f64;
                assert!((s - want).abs() < 0.01, "{n} readers: id {id} owns {s:.4}, want {want:.4}");
            }
        }
    }

    #[test]
    fn weights_set_the_shares() {
        let cases: &[&[(u32, u32)]] = &[&[(1, 1), (2, 2)], &[(1, 10), (2, 30), (3, 60)], &[(4, 5), (9, 5), (2, 1)]];
        for readers in cases {
            let t = table(readers);
            let total: u32 = readers.iter().map(|r| r.1).sum();
            for &(id, w) in *readers {
                let s = share(&t, id);
                let want = w as f64 / total as f64;
                assert!((s - want).abs() < 0.01, "{readers:?}: id {id} owns {s:.4}, want {want:.4}");
            }
        }
    }

    #[test]
    fn order_of_readers_does_not_matter() {
        let same = table(&[(1, 1), (2, 1), (3, 1)]) == table(&[(3, 1), (1, 1), (2, 1)]);
        assert!(same, "the same set of readers in another order built a different table");
    }

    #[test]
    fn removing_a_reader_moves_little_else() {
        for removed in [1u32, 2, 3, 4] {
            let before = table(&[(1, 1), (2, 1), (3, 1), (4, 1)]);
            let rest: Vec<(u32, u32)> = [1u32, 2, 3, 4].iter().filter(|&&i| i != removed).map(|&i| (i, 1)).collect();
            let after = table(&rest);
            let mut moved_other = 0;
            for (b, a) in before.iter().zip(&after) {
                assert_ne!(*a, removed, "removed reader {removed} still owns a slot");
                if *b != removed && b != a {
                    moved_other += 1;
                }
            }
            let frac = moved_other as f64 / before.len() as f64;
            // Ideal is 0; Maglev's published disruption for small sets is a few percent.
            assert!(frac < 0.06, "removing {removed} moved {:.2}% of the other readers' slots", frac * 100.0);
        }
    }

    #[test]
    fn adding_a_reader_takes_mostly_from_others_fairly() {
        let before = table(&[(1, 1), (2, 1)]);
        let after = table(&[(1, 1), (2, 1), (3, 1)]);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / before.len() as f64;
        let to_new = after.iter().filter(|&&a| a == 3).count() as f64 / before.len() as f64;
        assert!(moved - to_new < 0.06, "adding a reader moved {:.2}% of slots between old readers", (moved - to_new) * 100.0);
        assert!((to_new - 1.0 / 3.0).abs() < 0.01, "new reader owns {to_new:.4}");
    }

    #[test]
    fn zero_weight_and_empty() {
        let t = table(&[(1, 0), (2, 0)]);
        assert!(t.iter().all(|&x| x == BACKEND_NONE), "all weights zero: no reader");
        let t = table(&[]);
        assert!(t.iter().all(|&x| x == BACKEND_NONE), "no readers: every slot empty");
        let t = table(&[(1, 0), (2, 5)]);
        assert!(t.iter().all(|&x| x == 2), "only the weighted reader");
    }

    #[test]
    fn rejects_bad_input() {
        let mut t = vec![0u32; 4095];
        assert_eq!(build(&[(1, 1)], &mut t), Err(MaglevError::SizeNotPrime { len: 4095 }), "non-prime size");
        let mut t = vec![0u32; 7];
        assert_eq!(build(&[(1, 1), (1, 2)], &mut t), Err(MaglevError::DuplicateId { id: 1 }), "duplicate");
        assert_eq!(build(&[(BACKEND_NONE, 1)], &mut t), Err(MaglevError::ReservedId), "reserved id");
        let many: Vec<(u32, u32)> = (0..MAX_BACKENDS + 1).map(|i| (i, 1)).collect();
        assert_eq!(build(&many, &mut t), Err(MaglevError::TooManyBackends { count: many.len() }), "too many");
    }
}
