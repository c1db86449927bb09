//! Reads over the declared indexes: filter (eq, range, is-not-null, AND) with order and
//! limit, COUNT, COUNT DISTINCT and GROUP BY .. ORDER BY count DESC LIMIT n.
//!
//! The planner picks the index whose leading fields are the equality filters, then a range or
//! the ordering field. Filters and aggregates over fields of that index are answered from the
//! index keys alone; only fields outside it need the row. With no usable index the query
//! falls back to a scan of the entity (correct, slow, logged).

use super::codec::{decode_component, encode_component, prefix_successor};
use super::commit::{latest_key, type_key};
use super::layout::{EntityLayout, IndexLayout, Values};
use super::{Row, Store, StoreError, Value};
use ormdb_core::storage::VersionedKey;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Eq(String, Value),
    Range {
        field: String,
        lower: Bound<Value>,
        upper: Bound<Value>,
    },
    NotNull(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A filtered, ordered, limited read of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub entity: String,
    pub filters: Vec<Filter>,
    pub order: Option<(String, Order)>,
    pub limit: Option<usize>,
}

impl Query {
    pub fn new(entity: &str) -> Self {
        Query {
            entity: entity.to_string(),
            filters: Vec::new(),
            order: None,
            limit: None,
        }
    }
    pub fn eq(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.filters.push(Filter::Eq(field.into(), value.into()));
        self
    }
    /// `lower <= field <= upper` with each bound inclusive, exclusive or open.
    pub fn range(mut self, field: &str, lower: Bound<Value>, upper: Bound<Value>) -> Self {
        self.filters.push(Filter::Range {
            field: field.into(),
            lower,
            upper,
        });
        self
    }
    pub fn not_null(mut self, field: &str) -> Self {
        self.filters.push(Filter::NotNull(field.into()));
        self
    }
    pub fn order_by(mut self, field: &str, order: Order) -> Self {
        self.order = Some((field.into(), order));
        self
    }
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
}

/// Filters resolved to field positions.
struct Pred {
    pos: usize,
    kind: PredKind,
}
enum PredKind {
    Eq(Vec<u8>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
    NotNull,
}

fn enc(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    encode_component(&mut b, v);
    b
}

impl Pred {
    /// Checks an encoded component (encodings compare like the values).
    fn matches(&self, comp: &[u8]) -> bool {
        match &self.kind {
            PredKind::Eq(v) => comp == v.as_slice(),
            PredKind::NotNull => comp.first() != Some(&0),
            PredKind::Range(lo, hi) => {
                comp.first() != Some(&0)
                    && match lo {
                        Bound::Included(l) => comp >= l.as_slice(),
                        Bound::Excluded(l) => comp > l.as_slice(),
                        Bound::Unbounded => true,
                    }
                    && match hi {
                        Bound::Included(h) => comp <= h.as_slice(),
                        Bound::Excluded(h) => comp < h.as_slice(),
                        Bound::Unbounded => true,
                    }
            }
        }
    }
}

struct Plan<'a> {
    index: Option<&'a IndexLayout>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Iterate the index backwards.
    reverse: bool,
    /// The index order is the requested order (no sort needed).
    ordered: bool,
}

/// One matching row: its id and, per index field position, the encoded component.
/// Called per match with the row when the scan had to read it; false stops the scan.
type OnHit<'a> = dyn FnMut(&Hit, Option<Values>) -> Result<bool, StoreError> + 'a;

struct Hit {
    id: [u8; 16],
    comps: Vec<(usize, Vec<u8>)>,
}

impl Store {
    /// Rows matching `q`, in its order, at most its limit.
    pub fn query(&self, q: &Query) -> Result<Vec<Row>, StoreError> {
        let e = self.inner().layout.entity(&q.entity)?;
        let mut rows: Vec<Values> = Vec::new();
        let order = q
            .order
            .as_ref()
            .map(|(f, o)| e.field_pos(f).map(|p| (p, *o)))
            .transpose()?;
        let plan_ordered = self.scan(q, None, &mut |hit, row| {
            let values = match row {
                Some(v) => v,
                None => match self.get_values(&q.entity, &hit.id)? {
                    Some(v) => v,
                    None => return Ok(true),
                },
            };
            rows.push(values);
            Ok(true)
        })?;
        if let (Some((pos, o)), false) = (order, plan_ordered) {
            rows.sort_by(|a, b| {
                let c = enc(&a[pos]).cmp(&enc(&b[pos]));
                if o == Order::Desc {
                    c.reverse()
                } else {
                    c
                }
            });
            if let Some(n) = q.limit {
                rows.truncate(n);
            }
        }
        Ok(rows.into_iter().map(|v| e.to_row(v)).collect())
    }

    /// COUNT(*) of rows matching `q` (its order and limit are ignored).
    pub fn count(&self, q: &Query) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let q = Query {
            order: None,
            limit: None,
            ..q.clone()
        };
        self.scan(&q, None, &mut |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// COUNT(DISTINCT field) over rows matching `q` (nulls not counted).
    pub fn count_distinct(&self, q: &Query, field: &str) -> Result<u64, StoreError> {
        let e = self.inner().layout.entity(&q.entity)?;
        let pos = e.field_pos(field)?;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        self.for_each_value(q, pos, &mut |comp| {
            if comp.first() != Some(&0) && !seen.contains(comp) {
                seen.insert(comp.to_vec());
            }
        })?;
        Ok(seen.len() as u64)
    }

    /// SELECT field, COUNT(*) .. GROUP BY field ORDER BY count DESC, field LIMIT `limit`.
    pub fn group_count(
        &self,
        q: &Query,
        field: &str,
        limit: usize,
    ) -> Result<Vec<(Value, u64)>, StoreError> {
        let e = self.inner().layout.entity(&q.entity)?;
        let pos = e.field_pos(field)?;
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        self.for_each_value(q, pos, &mut |comp| {
            if let Some(c) = counts.get_mut(comp) {
                *c += 1;
            } else {
                counts.insert(comp.to_vec(), 1);
            }
        })?;
        let mut out: Vec<(Vec<u8>, u64)> = counts.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(limit);
        let ty = e.fields[pos].ty;
        Ok(out
            .into_iter()
            .filter_map(|(k, n)| decode_component(ty, &k).map(|(v, _)| (v, n)))
            .collect())
    }

    /// Calls `f` with the encoded value of field `pos` of every row matching `q`.
    fn for_each_value(
        &self,
        q: &Query,
        pos: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let q = Query {
            order: None,
            limit: None,
            ..q.clone()
        };
        self.scan(&q, Some(pos), &mut |hit, row| {
            if let Some((_, c)) = hit.comps.iter().find(|(p, _)| *p == pos) {
                f(c);
                return Ok(true);
            }
            let values = match row {
                Some(v) => v,
                None => match self.get_values(&q.entity, &hit.id)? {
                    Some(v) => v,
                    None => return Ok(true),
                },
            };
            f(&enc(&values[pos]));
            Ok(true)
        })?;
        Ok(())
    }

    fn plan<'a>(
        &self,
        e: &'a EntityLayout,
        preds: &[Pred],
        q: &Query,
        want: Option<usize>,
    ) -> Plan<'a> {
        let order = q
            .order
            .as_ref()
            .and_then(|(f, o)| e.field_pos(f).ok().map(|p| (p, *o)));
        let mut best: Option<(u32, Plan<'a>)> = None;
        for idx in &e.indexes {
            let mut prefix = vec![idx.no];
            let mut k = 0;
            for &p in &idx.fields {
                match preds
                    .iter()
                    .find(|pr| pr.pos == p && matches!(pr.kind, PredKind::Eq(_)))
                {
                    Some(Pred {
                        kind: PredKind::Eq(v),
                        ..
                    }) => {
                        prefix.extend_from_slice(v);
                        k += 1;
                    }
                    _ => break,
                }
            }
            let next = idx.fields.get(k).copied();
            let range = next.and_then(|p| {
                preds.iter().find_map(|pr| match &pr.kind {
                    PredKind::Range(lo, hi) if pr.pos == p => Some((lo.clone(), hi.clone())),
                    _ => None,
                })
            });
            let ordered = match order {
                None => true,
                Some((p, _)) => {
                    next == Some(p) || (k > 0 && idx.fields[k - 1] == p && k == idx.fields.len())
                }
            };
            let mut score = (k as u32) * 8;
            if range.is_some() {
                score += 4;
            }
            if order.is_some() && ordered {
                score += 2;
            }
            if want.is_some_and(|w| idx.fields.contains(&w)) {
                score += 1;
            }
            if k == 0 && range.is_none() && !(order.is_some() && ordered) {
                continue;
            }
            let (lo, hi) = match range {
                Some((lo, hi)) => (
                    match lo {
                        Bound::Included(v) => Bound::Included([prefix.as_slice(), &v].concat()),
                        Bound::Excluded(v) => {
                            match prefix_successor(&[prefix.as_slice(), &v].concat()) {
                                Some(s) => Bound::Included(s),
                                None => Bound::Unbounded,
                            }
                        }
                        Bound::Unbounded => Bound::Included([prefix.as_slice(), &[1]].concat()),
                    },
                    match hi {
                        Bound::Included(v) => {
                            match prefix_successor(&[prefix.as_slice(), &v].concat()) {
                                Some(s) => Bound::Excluded(s),
                                None => Bound::Unbounded,
                            }
                        }
                        Bound::Excluded(v) => Bound::Excluded([prefix.as_slice(), &v].concat()),
                        Bound::Unbounded => match prefix_successor(&prefix) {
                            Some(s) => Bound::Excluded(s),
                            None => Bound::Unbounded,
                        },
                    },
                ),
                None => (
                    Bound::Included(prefix.clone()),
                    match prefix_successor(&prefix) {
                        Some(s) => Bound::Excluded(s),
                        None => Bound::Unbounded,
                    },
                ),
            };
            let plan = Plan {
                index: Some(idx),
                lo,
                hi,
                reverse: matches!(order, Some((_, Order::Desc))) && ordered,
                ordered: order.is_none() || ordered,
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, plan));
            }
        }
        best.map(|(_, p)| p).unwrap_or(Plan {
            index: None,
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
            reverse: false,
            ordered: order.is_none(),
        })
    }

    /// Runs the scan for `q`, calling `on_hit` for each match (with the row when it had to
    /// be read) until it returns false or the limit is reached. Returns whether the hits came
    /// in the query's order.
    fn scan(
        &self,
        q: &Query,
        want: Option<usize>,
        on_hit: &mut OnHit<'_>,
    ) -> Result<bool, StoreError> {
        let inner = self.inner();
        let e = inner.layout.entity(&q.entity)?;
        let mut preds = Vec::new();
        for f in &q.filters {
            preds.push(match f {
                Filter::Eq(name, v) => Pred {
                    pos: e.field_pos(name)?,
                    kind: PredKind::Eq(enc(v)),
                },
                Filter::Range {
                    field,
                    lower,
                    upper,
                } => Pred {
                    pos: e.field_pos(field)?,
                    kind: PredKind::Range(lower.as_ref().map(enc), upper.as_ref().map(enc)),
                },
                Filter::NotNull(name) => Pred {
                    pos: e.field_pos(name)?,
                    kind: PredKind::NotNull,
                },
            });
        }
        let plan = self.plan(e, &preds, q, want);
        let limit = if plan.ordered { q.limit } else { None };
        let err = |op: &'static str| {
            let p = inner.path.clone();
            move |e: sled::Error| StoreError::Engine {
                path: p,
                op,
                message: e.to_string(),
            }
        };
        let mut emitted = 0usize;
        let Some(idx) = plan.index else {
            tracing::debug!(entity = %q.entity, "no index serves this query; scanning the entity");
            let prefix = type_key(&e.name, &[0; 16]);
            let prefix = &prefix[..prefix.len() - 16];
            for item in inner.trees.types.scan_prefix(prefix) {
                let (k, _) = item.map_err(err("scan an entity"))?;
                let id: [u8; 16] =
                    k[prefix.len()..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            what: format!("type index key of {} bytes", k.len()),
                        })?;
                let Some(values) = self.get_values(&q.entity, &id)? else {
                    continue;
                };
                if !preds.iter().all(|p| p.matches(&enc(&values[p.pos]))) {
                    continue;
                }
                if limit.is_some_and(|l| emitted >= l) {
                    break;
                }
                emitted += 1;
                if !on_hit(
                    &Hit {
                        id,
                        comps: Vec::new(),
                    },
                    Some(values),
                )? {
                    break;
                }
            }
            return Ok(plan.ordered);
        };
        let iter = inner
            .trees
            .index
            .range::<Vec<u8>, _>((plan.lo.clone(), plan.hi.clone()));
        let iter: Box<dyn Iterator<Item = _>> = if plan.reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        let row_preds: Vec<&Pred> = preds
            .iter()
            .filter(|p| !idx.fields.contains(&p.pos))
            .collect();
        for item in iter {
            let (k, _) = item.map_err(err("scan an index"))?;
            let mut rest = &k[1..];
            let mut comps = Vec::with_capacity(idx.fields.len());
            for &p in &idx.fields {
                let (_, r) =
                    decode_component(e.fields[p].ty, rest).ok_or_else(|| StoreError::Corrupt {
                        what: format!("index key of {} does not decode", e.name),
                    })?;
                comps.push((p, rest[..rest.len() - r.len()].to_vec()));
                rest = r;
            }
            let id: [u8; 16] = rest.try_into().map_err(|_| StoreError::Corrupt {
                what: format!(
                    "index key of {} ends in {} bytes, not an id",
                    e.name,
                    rest.len()
                ),
            })?;
            let key_ok = preds
                .iter()
                .all(|p| match comps.iter().find(|(cp, _)| *cp == p.pos) {
                    Some((_, c)) => p.matches(c),
                    None => true,
                });
            if !key_ok {
                continue;
            }
            let row = if row_preds.is_empty() {
                None
            } else {
                match self.get_values(&q.entity, &id)? {
                    Some(v) if row_preds.iter().all(|p| p.matches(&enc(&v[p.pos]))) => Some(v),
                    _ => continue,
                }
            };
            if limit.is_some_and(|l| emitted >= l) {
                break;
            }
            emitted += 1;
            if !on_hit(&Hit { id, comps }, row)? {
                break;
            }
        }
        Ok(plan.ordered)
    }
}

/// See [`Store::verify`].
pub(crate) fn verify(store: &Store) -> Result<Vec<String>, StoreError> {
    let inner = store.inner();
    let mut problems = Vec::new();
    let err = |op: &'static str| {
        let p = inner.path.clone();
        move |e: sled::Error| StoreError::Engine {
            path: p,
            op,
            message: e.to_string(),
        }
    };
    // Indexes against rows.
    let mut expected: HashSet<Vec<u8>> = HashSet::new();
    for e in &inner.layout.entities {
        let prefix = type_key(&e.name, &[0; 16]);
        let prefix = &prefix[..prefix.len() - 16];
        for item in inner.trees.types.scan_prefix(prefix) {
            let (k, _) = item.map_err(err("scan an entity"))?;
            let id: [u8; 16] = k[prefix.len()..].try_into().unwrap_or_default();
            if let Some(values) = store.get_values(&e.name, &id)? {
                for idx in &e.indexes {
                    expected.insert(e.index_key(idx, &values, &id));
                }
            }
        }
    }
    let mut found = 0usize;
    for item in inner.trees.index.iter() {
        let (k, _) = item.map_err(err("scan the index tree"))?;
        found += 1;
        if !expected.remove(k.as_ref()) {
            problems.push(format!(
                "index entry {:02x?} names no live row with those values",
                &k[..]
            ));
        }
    }
    for k in expected {
        problems.push(format!("row missing from index #{}: key {:02x?}", k[0], k));
    }
    let _ = found;

    // The feed: contiguous from the floor to the head, every entry naming a stored version.
    let mut next = store.feed_floor();
    let head = store.feed_head();
    let entries = store.feed_read(next, usize::MAX)?;
    for entry in entries {
        if entry.seq != next {
            problems.push(format!("change feed jumps from {next} to {}", entry.seq));
        }
        next = entry.seq + 1;
        let present = inner
            .trees
            .data
            .contains_key(VersionedKey::new(entry.id, entry.version).encode())
            .map_err(err("read a row version"))?;
        if !present {
            problems.push(format!(
                "change-feed entry {} names {} {} version {} which is not stored",
                entry.seq,
                entry.entity,
                uuid::Uuid::from_bytes(entry.id),
                entry.version
            ));
        }
        let latest = inner
            .trees
            .meta
            .get(latest_key(&entry.id))
            .map_err(err("read a latest pointer"))?;
        if latest.is_none() {
            problems.push(format!(
                "change-feed entry {} names a row without a latest pointer",
                entry.seq
            ));
        }
    }
    if next != head {
        problems.push(format!("change feed ends at {next} but its head is {head}"));
    }
    Ok(problems)
}
