//! Clumps' member vectors in memory, for [`nearest_texts`](crate::vectors::nearest_texts).
//!
//! A search takes the nearest representatives by HNSW and then scores every
//! member of their clumps (see [`vectors`](crate::vectors)). PostgreSQL does that
//! row by row at ~1.3 µs a member, and a top-50 search over 193,101 texts scores
//! 15,000 or more members (27 ms at p50). Here a clump's members are read once,
//! binary, and kept as one contiguous array that a search scores in a tight loop.
//!
//! A copy is only used while it is the clump: each clump has a revision
//! (`embedding_clumps`, kept by triggers on `embedding_texts`) that changes
//! whenever its members do, and the search reads the representatives' revisions
//! in the same statement as the HNSW search. A search never waits for a clump to
//! be read: PostgreSQL scores the clumps the cache does not hold at their current
//! revision, and the cache notes them as wanted, for
//! [`fill_clump_cache`](crate::vectors::fill_clump_cache) to read off the search
//! path. Copies are dropped least recently used first once they take more than
//! the cache's capacity.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use crate::vectors::TextKey;

/// One clump's members at one revision: their keys and vectors, row by row.
#[derive(Debug)]
pub struct Clump {
    revision: i64,
    keys: Vec<TextKey>,
    /// `keys.len()` vectors of `dimensions` each, one after another.
    vectors: Vec<f32>,
    dimensions: usize,
    /// 1 / |v| of each vector (stored vectors are unit length, up to rounding).
    inverse_norms: Vec<f32>,
}

impl Clump {
    /// A clump at `revision` from its members' keys and vectors. Members whose
    /// vector has another length than the first are left out (a vector column has
    /// one dimension, so there are none).
    pub fn new(revision: i64, members: Vec<(TextKey, Vec<f32>)>) -> Clump {
        let dimensions = members.first().map_or(0, |(_, v)| v.len());
        let mut keys = Vec::with_capacity(members.len());
        let mut vectors = Vec::with_capacity(members.len() * dimensions);
        let mut inverse_norms = Vec::with_capacity(members.len());
        for (key, vector) in members {
            if vector.len() != dimensions {
                continue;
            }
            let norm = dot(&vector, &vector).sqrt();
            inverse_norms.push(if norm > 0.0 { 1.0 / norm } else { 0.0 });
            keys.push(key);
            vectors.extend_from_slice(&vector);
        }
        Clump {
            revision,
            keys,
            vectors,
            dimensions,
            inverse_norms,
        }
    }

    /// Its revision in `embedding_clumps`.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes it holds (what counts against the cache's capacity).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Clump>()
            + self.keys.len() * std::mem::size_of::<TextKey>()
            + (self.vectors.len() + self.inverse_norms.len()) * std::mem::size_of::<f32>()
    }

    /// Offers every member to `nearest`, at its cosine distance to `query` (the
    /// same measure as pgvector's `<=>`). A query of another dimension scores
    /// nothing.
    pub fn score(&self, query: &[f32], nearest: &mut NearestTexts) {
        if query.len() != self.dimensions || self.dimensions == 0 {
            return;
        }
        let query_norm = f64::from(dot(query, query).sqrt());
        if query_norm == 0.0 {
            return;
        }
        let rows = self.vectors.chunks_exact(self.dimensions);
        for ((key, vector), inverse_norm) in self.keys.iter().zip(rows).zip(&self.inverse_norms) {
            let similarity = f64::from(dot(query, vector)) * f64::from(*inverse_norm) / query_norm;
            nearest.offer(*key, 1.0 - similarity.clamp(-1.0, 1.0));
        }
    }
}

/// The dot product, eight lanes at a time so the compiler keeps it in vector
/// registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// A text and its cosine distance to the query.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    distance: f64,
    key: TextKey,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// The `n` nearest texts offered so far.
#[derive(Debug)]
pub struct NearestTexts {
    n: usize,
    /// A max-heap: the farthest kept text on top, to be pushed out.
    kept: BinaryHeap<Candidate>,
}

impl NearestTexts {
    /// Keeps the `n` nearest.
    pub fn new(n: usize) -> NearestTexts {
        NearestTexts {
            n,
            kept: BinaryHeap::with_capacity(n + 1),
        }
    }

    /// Offers `key` at `distance`.
    pub fn offer(&mut self, key: TextKey, distance: f64) {
        let candidate = Candidate { distance, key };
        if self.kept.len() < self.n {
            self.kept.push(candidate);
        } else if self
            .kept
            .peek()
            .is_some_and(|farthest| candidate < *farthest)
        {
            self.kept.pop();
            self.kept.push(candidate);
        }
    }

    /// The kept texts, nearest first, with their distances.
    pub fn into_sorted(self) -> Vec<(TextKey, f64)> {
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|c| (c.key, c.distance))
            .collect()
    }
}

/// How the cache has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClumpCacheStats {
    /// Clumps held now.
    pub clumps: usize,
    /// Their members.
    pub members: usize,
    /// Bytes they take.
    pub bytes: usize,
    /// Clumps a search found here at the revision it needed.
    pub hits: u64,
    /// Clumps it had to read (absent, or another revision).
    pub misses: u64,
}

/// Clumps' member vectors kept between searches, at most `capacity` bytes of
/// them. Shared by the searches of one server (`Arc`).
#[derive(Debug)]
pub struct ClumpCache {
    capacity: usize,
    held: Mutex<Held>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Whether a fill is reading clumps now (one at a time).
    filling: AtomicBool,
}

#[derive(Debug, Default)]
struct Held {
    clumps: HashMap<TextKey, HeldClump>,
    /// Representatives whose clumps a search missed, to be read.
    wanted: HashSet<TextKey>,
    bytes: usize,
    members: usize,
    /// Counts uses, to order the clumps by last use.
    clock: u64,
}

#[derive(Debug)]
struct HeldClump {
    clump: Arc<Clump>,
    last_used: u64,
}

impl ClumpCache {
    /// A cache of at most `capacity` bytes of member vectors.
    pub fn new(capacity: usize) -> ClumpCache {
        ClumpCache {
            capacity,
            held: Mutex::new(Held::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            filling: AtomicBool::new(false),
        }
    }

    /// Its capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The clump of `representative` if held at `revision`; counts a hit or a
    /// miss, and a missed clump is wanted.
    pub fn get(&self, representative: &TextKey, revision: i64) -> Option<Arc<Clump>> {
        let mut held = self.lock();
        held.clock += 1;
        let now = held.clock;
        let found = held
            .clumps
            .get_mut(representative)
            .filter(|h| h.clump.revision == revision)
            .map(|h| {
                h.last_used = now;
                Arc::clone(&h.clump)
            });
        if found.is_some() {
            self.hits.fetch_add(1, AtomicOrdering::Relaxed);
        } else {
            self.misses.fetch_add(1, AtomicOrdering::Relaxed);
            held.wanted.insert(*representative);
        }
        found
    }

    /// Whether a search missed clumps that no fill has read yet.
    pub fn has_wanted(&self) -> bool {
        !self.lock().wanted.is_empty()
    }

    /// The wanted representatives, up to `at_most` of them, no longer wanted.
    pub fn take_wanted(&self, at_most: usize) -> Vec<TextKey> {
        let mut held = self.lock();
        let taken: Vec<TextKey> = held.wanted.iter().take(at_most).copied().collect();
        for key in &taken {
            held.wanted.remove(key);
        }
        taken
    }

    /// The right to fill the cache, unless another fill has it: held until the
    /// returned turn is dropped.
    pub fn fill_turn(&self) -> Option<FillTurn<'_>> {
        (!self.filling.swap(true, AtomicOrdering::AcqRel)).then_some(FillTurn { cache: self })
    }

    /// Keeps `clump` as `representative`'s, in place of any other revision, then
    /// drops the least recently used clumps until the rest fit. A clump larger
    /// than the whole capacity is not kept.
    pub fn insert(&self, representative: TextKey, clump: Arc<Clump>) {
        let bytes = clump.bytes();
        if bytes > self.capacity {
            return;
        }
        let mut held = self.lock();
        held.clock += 1;
        let last_used = held.clock;
        let members = clump.len();
        if let Some(old) = held
            .clumps
            .insert(representative, HeldClump { clump, last_used })
        {
            held.bytes -= old.clump.bytes();
            held.members -= old.clump.len();
        }
        held.bytes += bytes;
        held.members += members;
        if held.bytes > self.capacity {
            held.evict_to(self.capacity);
        }
    }

    /// What it holds and how it has done.
    pub fn stats(&self) -> ClumpCacheStats {
        let held = self.lock();
        ClumpCacheStats {
            clumps: held.clumps.len(),
            members: held.members,
            bytes: held.bytes,
            hits: self.hits.load(AtomicOrdering::Relaxed),
            misses: self.misses.load(AtomicOrdering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock leaves the maps consistent (each update
        // is whole before the next), so the cache goes on.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One fill's hold on a [`ClumpCache`] ([`ClumpCache::fill_turn`]).
#[derive(Debug)]
pub struct FillTurn<'a> {
    cache: &'a ClumpCache,
}

impl Drop for FillTurn<'_> {
    fn drop(&mut self) {
        self.cache.filling.store(false, AtomicOrdering::Release);
    }
}

impl Held {
    /// Drops the least recently used clumps until at most `capacity` bytes are
    /// held (down to 90% of it, so the next few inserts do not each sort again).
    fn evict_to(&mut self, capacity: usize) {
        let target = capacity - capacity / 10;
        let mut by_use: Vec<(u64, TextKey)> = self
            .clumps
            .iter()
            .map(|(key, h)| (h.last_used, *key))
            .collect();
        by_use.sort_unstable();
        for (_, key) in by_use {
            if self.bytes <= target {
                break;
            }
            if let Some(old) = self.clumps.remove(&key) {
                self.bytes -= old.clump.bytes();
                self.members -= old.clump.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> TextKey {
        TextKey::from_stored(&[i; 32]).unwrap()
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for len in [0, 1, 7, 8, 9, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "length {len}");
        }
    }

    #[test]
    fn a_clump_scores_its_members_by_cosine_distance() {
        let clump = Clump::new(
            7,
            vec![
                (key(1), unit(&[1.0, 0.0, 0.0])),
                (key(2), unit(&[1.0, 1.0, 0.0])),
                (key(3), vec![0.0, 0.0, 2.0]), // not unit length: cosine still 0
                (key(4), vec![1.0, 0.0]),      // another dimension: left out
            ],
        );
        assert_eq!(clump.len(), 3);
        let mut nearest = NearestTexts::new(10);
        clump.score(&[2.0, 0.0, 0.0], &mut nearest);
        let found = nearest.into_sorted();
        let keys: Vec<TextKey> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![key(1), key(2), key(3)]);
        assert!(found[0].1.abs() < 1e-6);
        assert!((found[1].1 - (1.0 - 0.5f64.sqrt())).abs() < 1e-6);
        assert!((found[2].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn nearest_texts_keeps_only_the_n_nearest() {
        let mut nearest = NearestTexts::new(2);
        for (i, d) in [0.5, 0.1, 0.9, 0.3, 0.2].into_iter().enumerate() {
            nearest.offer(key(i as u8), d);
        }
        assert_eq!(nearest.into_sorted(), vec![(key(1), 0.1), (key(4), 0.2)]);
    }

    #[test]
    fn the_cache_answers_only_for_the_revision_it_holds() {
        let cache = ClumpCache::new(1 << 20);
        let clump = Arc::new(Clump::new(3, vec![(key(1), vec![1.0, 0.0])]));
        assert!(cache.get(&key(9), 3).is_none());
        cache.insert(key(9), clump);
        assert!(cache.get(&key(9), 3).is_some());
        assert!(
            cache.get(&key(9), 4).is_none(),
            "another revision is a miss"
        );
        cache.insert(key(9), Arc::new(Clump::new(4, vec![])));
        assert_eq!(cache.get(&key(9), 4).map(|c| c.len()), Some(0));
        let stats = cache.stats();
        assert_eq!((stats.clumps, stats.members), (1, 0));
        assert_eq!((stats.hits, stats.misses), (2, 2));
    }

    #[test]
    fn missed_clumps_are_wanted_until_taken() {
        let cache = ClumpCache::new(1 << 20);
        assert!(!cache.has_wanted());
        assert!(cache.get(&key(1), 1).is_none());
        assert!(cache.get(&key(2), 1).is_none());
        assert!(cache.has_wanted());
        let mut taken = cache.take_wanted(1);
        taken.extend(cache.take_wanted(10));
        taken.sort();
        assert_eq!(taken, vec![key(1), key(2)]);
        assert!(!cache.has_wanted());
    }

    #[test]
    fn one_fill_at_a_time() {
        let cache = ClumpCache::new(1 << 20);
        let turn = cache.fill_turn();
        assert!(turn.is_some());
        assert!(cache.fill_turn().is_none(), "taken");
        drop(turn);
        assert!(cache.fill_turn().is_some(), "given back");
    }

    #[test]
    fn the_least_recently_used_clumps_go_first() {
        let member = |i: u8| (key(i), vec![0.5f32; 64]);
        let one = Clump::new(1, vec![member(1)]).bytes();
        let cache = ClumpCache::new(one * 3);
        for i in 0..3 {
            cache.insert(key(i), Arc::new(Clump::new(1, vec![member(i)])));
        }
        assert!(cache.get(&key(0), 1).is_some(), "0 used last now");
        cache.insert(key(3), Arc::new(Clump::new(1, vec![member(3)])));
        let stats = cache.stats();
        assert!(stats.bytes <= cache.capacity(), "{stats:?}");
        assert!(cache.get(&key(0), 1).is_some(), "recently used: kept");
        assert!(cache.get(&key(3), 1).is_some(), "just inserted: kept");
        assert!(
            cache.get(&key(1), 1).is_none(),
            "least recently used: dropped"
        );
    }

    #[test]
    fn a_clump_larger_than_the_cache_is_not_kept() {
        let cache = ClumpCache::new(16);
        cache.insert(
            key(1),
            Arc::new(Clump::new(1, vec![(key(2), vec![1.0; 8])])),
        );
        assert_eq!(cache.stats().clumps, 0);
    }
}
