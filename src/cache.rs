//! [`BudgetCache`]: the one in-memory cache type of the crate, bounded by a budget of
//! weight (usually bytes) and optionally by freshness. The store's row cache, the stats
//! reader's decoded sketches and the WebSocket push reads all keep their entries in one.
//!
//! It does no locking of its own: its owner puts it behind the lock that also guards
//! whatever must change together with it (the row cache's epoch, for example).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Which entry goes first when a new one does not fit the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// The one inserted longest ago (a hit costs one hash lookup, nothing more).
    Fifo,
    /// The one read or inserted longest ago (a hit also reorders the entry).
    Lru,
}

/// A map whose entries' weights add up to at most a budget. Inserting past the budget
/// evicts entries in [`Eviction`] order until the new one fits; with a time to live,
/// entries older than it are not served (and are dropped when met).
#[derive(Debug)]
pub struct BudgetCache<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Every entry's key by its tick: the first is the next to evict.
    order: BTreeMap<u64, K>,
    next_tick: u64,
    weight: usize,
    budget: usize,
    eviction: Eviction,
    ttl: Option<Duration>,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    weight: usize,
    tick: u64,
    /// When it was inserted; kept only with a time to live.
    at: Option<Instant>,
}

impl<K: Hash + Eq + Clone, V> BudgetCache<K, V> {
    /// An empty cache holding at most `budget` of weight. A budget of 0 keeps nothing.
    pub fn new(budget: usize, eviction: Eviction) -> Self {
        BudgetCache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
            weight: 0,
            budget,
            eviction,
            ttl: None,
        }
    }

    /// Entries are served for `ttl` after their insertion, then treated as absent.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The value of `key`, if present and fresh.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let expired = match (self.entries.get(key)?.at, self.ttl) {
            (Some(at), Some(ttl)) => at.elapsed() >= ttl,
            _ => false,
        };
        if expired {
            self.remove(key);
            return None;
        }
        if self.eviction == Eviction::Lru {
            let tick = self.tick();
            let entry = self.entries.get_mut(key)?;
            if let Some(k) = self.order.remove(&entry.tick) {
                self.order.insert(tick, k);
            }
            entry.tick = tick;
        }
        self.entries.get(key).map(|e| &e.value)
    }

    /// Keeps `value` under `key` (replacing any value it had), evicting what it must to
    /// stay within the budget. A value heavier than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V, weight: usize) {
        self.remove(&key);
        if weight > self.budget {
            return;
        }
        while self.weight + weight > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.weight -= e.weight;
            }
        }
        let tick = self.tick();
        let at = self.ttl.map(|_| Instant::now());
        self.order.insert(tick, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                weight,
                tick,
                at,
            },
        );
        self.weight += weight;
    }

    /// Drops `key`'s value, returning it.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.tick);
        self.weight -= entry.weight;
        Some(entry.value)
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.weight = 0;
    }

    /// How many entries are kept (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The weight of the entries kept (bytes, for a byte budget).
    pub fn bytes(&self) -> usize {
        self.weight
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(budget: usize, eviction: Eviction) -> BudgetCache<u32, &'static str> {
        BudgetCache::new(budget, eviction)
    }

    fn keys(c: &BudgetCache<u32, &'static str>) -> Vec<u32> {
        let mut k: Vec<u32> = c.entries.keys().copied().collect();
        k.sort();
        k
    }

    #[test]
    fn weight_stays_within_the_budget() {
        let mut c = cache(100, Eviction::Fifo);
        for k in 0..50 {
            c.insert(k, "v", 30);
            assert!(c.bytes() <= 100, "{} over 100 after key {k}", c.bytes());
        }
        assert_eq!((c.len(), c.bytes()), (3, 90));
        // Replacing a key counts its new weight only.
        c.insert(49, "w", 10);
        assert_eq!((c.len(), c.bytes()), (3, 70));
        assert_eq!(c.get(&49), Some(&"w"));
    }

    #[test]
    fn a_value_over_the_whole_budget_is_not_kept() {
        assert_eq!(cache(0, Eviction::Lru).get(&1), None);
        let mut c = cache(100, Eviction::Fifo);
        c.insert(1, "a", 40);
        c.insert(1, "huge", 101);
        assert_eq!(c.get(&1), None, "nor is the value it replaced");
        assert!(c.is_empty() && c.bytes() == 0);
    }

    /// Keys 1, 2, 3 inserted in a cache of 3, key 1 read, key 4 inserted.
    fn after_reading_the_oldest(eviction: Eviction) -> BudgetCache<u32, &'static str> {
        let mut c = cache(3, eviction);
        for k in 1..=3 {
            c.insert(k, "v", 1);
        }
        assert_eq!(c.get(&1), Some(&"v"));
        c.insert(4, "v", 1);
        c
    }

    #[test]
    fn fifo_evicts_the_oldest_insert_even_if_read() {
        let mut c = after_reading_the_oldest(Eviction::Fifo);
        assert_eq!(keys(&c), [2, 3, 4]);
        // A re-insert counts as new.
        c.insert(2, "w", 1);
        c.insert(5, "v", 1);
        assert_eq!(keys(&c), [2, 4, 5]);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut c = after_reading_the_oldest(Eviction::Lru);
        assert_eq!(keys(&c), [1, 3, 4]);
        // One heavy entry evicts as many as it needs, oldest use first.
        c.get(&3);
        c.insert(5, "v", 2);
        assert_eq!(keys(&c), [3, 5]);
    }

    #[test]
    fn entries_past_their_ttl_are_not_served() {
        let mut c = cache(10, Eviction::Fifo).with_ttl(Duration::from_millis(1));
        c.insert(1, "old", 1);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get(&1), None);
        assert_eq!(
            (c.len(), c.bytes()),
            (0, 0),
            "an expired entry is dropped when met"
        );

        let mut c = cache(10, Eviction::Lru).with_ttl(Duration::from_secs(3600));
        c.insert(1, "fresh", 1);
        assert_eq!(c.get(&1), Some(&"fresh"));
    }

    #[test]
    fn remove_and_clear_invalidate() {
        let mut c = cache(10, Eviction::Lru);
        c.insert(1, "a", 4);
        c.insert(2, "b", 5);
        assert_eq!(c.remove(&1), Some("a"));
        assert_eq!(c.remove(&1), None);
        assert_eq!(c.get(&1), None);
        assert_eq!((c.len(), c.bytes()), (1, 5));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        // Nothing stale is left in the eviction order.
        for k in 10..20 {
            c.insert(k, "v", 1);
        }
        assert_eq!(keys(&c), (10..20).collect::<Vec<_>>());
    }

    #[test]
    fn borrowed_keys_look_up_owned_ones() {
        let mut c: BudgetCache<String, u8> = BudgetCache::new(10, Eviction::Fifo);
        c.insert("view".to_string(), 7, 1);
        assert_eq!(c.get("view"), Some(&7));
        assert_eq!(c.remove("view"), Some(7));
    }
}
