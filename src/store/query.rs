//! Reads over the declared indexes: filter (eq, range, is-not-null, AND) with order and
//! limit, COUNT, COUNT DISTINCT and GROUP BY .. ORDER BY count DESC LIMIT n.
//!
//! The planner picks the index whose leading fields are the equality filters, then a range or
//! the ordering field. Filters and aggregates over fields of that index are answered from the
//! index keys alone; only fields outside it need the row. With no usable index the query
//! falls back to a scan of the entity (correct, slow, logged).

use super::blocks::BlockMeta;
use super::codec::{decode_component, encode_component, prefix_successor};
use super::commit::latest_key;
use super::layout::{EntityLayout, IndexLayout, PostingLayout, Values, POSTING_BUCKET_US};
use super::postings;
use super::{Row, Store, StoreError, Value};
use crate::schema::FieldType;
use ormdb_core::storage::VersionedKey;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

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
pub(super) struct Pred {
    pub pos: usize,
    kind: PredKind,
}
enum PredKind {
    Eq(Vec<u8>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
    NotNull,
}

/// Sorts rows by field `pos` in order `o` (values compared by their encodings, a stable
/// sort), then keeps the first `limit`.
pub(super) fn sort_rows(
    rows: &mut Vec<Values>,
    order: Option<(usize, Order)>,
    limit: Option<usize>,
) {
    if let Some((pos, o)) = order {
        rows.sort_by(|a, b| {
            let c = enc(&a[pos]).cmp(&enc(&b[pos]));
            if o == Order::Desc {
                c.reverse()
            } else {
                c
            }
        });
    }
    if let Some(n) = limit {
        rows.truncate(n);
    }
}

pub(super) fn enc(v: &Value) -> Vec<u8> {
    let mut b = Vec::new();
    encode_component(&mut b, v);
    b
}

impl Pred {
    /// The filters of `q` on entity `e`.
    pub(super) fn of(e: &EntityLayout, q: &Query) -> Result<Vec<Pred>, StoreError> {
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
        Ok(preds)
    }

    /// Checks an encoded component (encodings compare like the values).
    pub(super) fn matches(&self, comp: &[u8]) -> bool {
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
    posting: Option<&'a PostingLayout>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Iterate the index backwards.
    reverse: bool,
    /// The index order is the requested order (no sort needed).
    ordered: bool,
}

/// The key prefix of index `no` for the equality filters on its leading `fields`, and how
/// many fields it covers.
fn eq_prefix(no: u8, fields: &[usize], preds: &[Pred]) -> (Vec<u8>, usize) {
    let mut prefix = vec![no];
    let mut k = 0;
    for &f in fields {
        let eq = preds.iter().find_map(|pr| match &pr.kind {
            PredKind::Eq(v) if pr.pos == f => Some(v),
            _ => None,
        });
        let Some(v) = eq else { break };
        prefix.extend_from_slice(v);
        k += 1;
    }
    (prefix, k)
}

/// How well a candidate index serves a query: the equality prefix first, then a range, then
/// the order, then covering the wanted field. None when it serves none of them.
fn score(k: usize, has_range: bool, serves_order: bool, covers: bool) -> Option<u32> {
    if k == 0 && !has_range && !serves_order {
        return None;
    }
    Some(k as u32 * 8 + has_range as u32 * 4 + serves_order as u32 * 2 + covers as u32)
}

impl<'a> Plan<'a> {
    /// A plan over keys starting with `prefix` (the equality filters), then `range` of the
    /// next component; `ordered` when that order is the query's. Its index is set by the caller.
    fn over(
        prefix: &[u8],
        range: Option<KeyRange>,
        order: Option<(usize, Order)>,
        ordered: bool,
    ) -> Plan<'a> {
        let (lo, hi) = key_bounds(prefix, range);
        Plan {
            index: None,
            posting: None,
            lo,
            hi,
            reverse: matches!(order, Some((_, Order::Desc))) && ordered,
            ordered: order.is_none() || ordered,
        }
    }
}

/// One matching row: its id and, per index field position, the encoded component.
/// Called per match with the row when the scan had to read it; false stops the scan.
type OnHit<'a> = dyn FnMut(&Hit, Option<Values>) -> Result<bool, StoreError> + 'a;

struct Hit {
    id: [u8; 16],
    comps: Vec<(usize, Vec<u8>)>,
}

impl Store {
    /// The blocks of `q`'s entity (a `@blocks` entity) that may hold rows matching its
    /// filters on the block keys (org, topic, partition) and its time range, as the catalog
    /// lists them now. Resident blocks (`mixed`) may hold rows of any key.
    pub fn blocks_for(&self, q: &Query) -> Result<Vec<Arc<BlockMeta>>, StoreError> {
        let e = self.inner().layout.entity(&q.entity)?;
        if e.blocks.is_none() {
            return Err(StoreError::Query {
                entity: q.entity.clone(),
                message: "is not kept in blocks (@blocks)".into(),
            });
        }
        Ok(super::blocks::scan::candidates(self.inner(), e, q))
    }

    /// A block's bytes; None when it was merged or rewritten away since the catalog listed
    /// it (its rows are then in a newer block).
    pub fn block_bytes(&self, no: u64) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        match self.inner().blocks.bytes(no) {
            Ok(b) => Ok(Some(b)),
            Err(_) if self.inner().blocks.catalog.get(no).is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Rows `at` (positions in the block) of block `no` of `entity`, in that order; None when
    /// the block was merged or rewritten away.
    pub fn block_rows(
        &self,
        entity: &str,
        no: u64,
        at: &[usize],
    ) -> Result<Option<Vec<Row>>, StoreError> {
        let e = self.inner().layout.entity(entity)?;
        let Some(bytes) = self.block_bytes(no)? else {
            return Ok(None);
        };
        let all = super::blocks::BlockReader::open(&bytes)?.rows_all()?;
        Ok(Some(
            at.iter()
                .filter_map(|&i| all.get(i).cloned())
                .map(|v| e.to_row(v))
                .collect(),
        ))
    }

    /// The position of `field` in `entity`'s rows: its column in a block.
    pub fn field_position(&self, entity: &str, field: &str) -> Result<usize, StoreError> {
        self.inner().layout.entity(entity)?.field_pos(field)
    }

    /// Rows matching `q`, in its order, at most its limit.
    pub fn query(&self, q: &Query) -> Result<Vec<Row>, StoreError> {
        let e = self.inner().layout.entity(&q.entity)?;
        if e.blocks.is_some() {
            let rows = super::blocks::scan::query_rows(self.inner(), e, q)?;
            return Ok(rows.into_iter().map(|v| e.to_row(v)).collect());
        }
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
        if let (Some(order), false) = (order, plan_ordered) {
            sort_rows(&mut rows, Some(order), q.limit);
        }
        Ok(rows.into_iter().map(|v| e.to_row(v)).collect())
    }

    /// COUNT(*) of rows matching `q` (its order and limit are ignored).
    pub fn count(&self, q: &Query) -> Result<u64, StoreError> {
        let mut n = 0u64;
        let e = self.inner().layout.entity(&q.entity)?;
        if e.blocks.is_some() && q.filters.is_empty() {
            return self.count_rows(&q.entity);
        }
        if e.blocks.is_some() {
            let mut count = |_: &super::blocks::BlockMeta, _| {
                n += 1;
                Ok(true)
            };
            super::blocks::scan::scan(self.inner(), e, q, &[], &mut count, &mut |_| false)?;
            return Ok(n);
        }
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
        let e = self.inner().layout.entity(&q.entity)?;
        if e.blocks.is_some() {
            let mut each = |_: &super::blocks::BlockMeta, v: Vec<Value>| {
                f(&enc(&v[0]));
                Ok(true)
            };
            return super::blocks::scan::scan(self.inner(), e, &q, &[pos], &mut each, &mut |_| {
                false
            });
        }
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
            let (prefix, k) = eq_prefix(idx.no, &idx.fields, preds);
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
            let covers = want.is_some_and(|w| idx.fields.contains(&w));
            let Some(score) = score(k, range.is_some(), order.is_some() && ordered, covers) else {
                continue;
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                let plan = Plan::over(&prefix, range, order, ordered);
                best = Some((
                    score,
                    Plan {
                        index: Some(idx),
                        posting: None,
                        ..plan
                    },
                ));
            }
        }
        for p in &e.postings {
            let bucket_at = p.fields.len() - 1;
            // A bucketed timestamp is never matched exactly by the key.
            let exact = if p.bucketed {
                bucket_at
            } else {
                p.fields.len()
            };
            let (prefix, k) = eq_prefix(p.no, &p.fields[..exact], preds);
            let next = p.fields.get(k).copied();
            let bucketed_next = p.bucketed && k == bucket_at;
            let range = next.and_then(|f| {
                preds.iter().find_map(|pr| match &pr.kind {
                    PredKind::Range(lo, hi) if pr.pos == f => Some((lo.clone(), hi.clone())),
                    PredKind::Eq(v) if pr.pos == f && bucketed_next => {
                        Some((Bound::Included(v.clone()), Bound::Included(v.clone())))
                    }
                    _ => None,
                })
            });
            // The key holds the bucket, not the timestamp: a range of buckets covers the range
            // and the exact values are filtered from the entries.
            let range = match range {
                Some((lo, hi)) if bucketed_next => Some((bucket_bound(lo), bucket_bound(hi))),
                r => r,
            };
            let ordered = match order {
                None => true,
                Some((o, _)) => next == Some(o) || p.fields[..k].contains(&o),
            };
            let covers = want.is_some_and(|w| e.feed_fields.contains(&w));
            let Some(score) = score(k, range.is_some(), order.is_some() && ordered, covers) else {
                continue;
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                let plan = Plan::over(&prefix, range, order, ordered);
                best = Some((
                    score,
                    Plan {
                        index: None,
                        posting: Some(p),
                        ..plan
                    },
                ));
            }
        }
        best.map(|(_, p)| p).unwrap_or(Plan {
            index: None,
            posting: None,
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
        let preds = Pred::of(e, q)?;
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
        if plan.posting.is_some() {
            let sort = q
                .order
                .as_ref()
                .filter(|_| plan.ordered)
                .and_then(|(f, o)| e.field_pos(f).ok().map(|pos| (pos, *o)));
            self.scan_postings(e, &plan, &preds, sort, want, limit, on_hit)?;
            return Ok(plan.ordered);
        }
        let Some(idx) = plan.index else {
            tracing::debug!(entity = %q.entity, "no index serves this query; scanning the entity");
            for id in super::entity_ids(&inner.trees.types, &e.name) {
                let id = id.map_err(err("scan an entity"))?;
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
    /// The posting-index part of [`Store::scan`]: walks the keys of the plan's range, replays
    /// each key's entries into its rows and emits those matching, sorted by `sort` within a
    /// key (keys come in the order's direction, so the whole scan is in order).
    #[allow(clippy::too_many_arguments)]
    fn scan_postings(
        &self,
        e: &EntityLayout,
        plan: &Plan<'_>,
        preds: &[Pred],
        sort: Option<(usize, Order)>,
        want: Option<usize>,
        limit: Option<usize>,
        on_hit: &mut OnHit<'_>,
    ) -> Result<(), StoreError> {
        let inner = self.inner();
        let iter = inner
            .trees
            .index
            .range::<Vec<u8>, _>((plan.lo.clone(), plan.hi.clone()));
        let mut iter: Box<dyn Iterator<Item = _>> = if plan.reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        };
        let (comp_preds, row_preds): (Vec<&Pred>, Vec<&Pred>) =
            preds.iter().partition(|pr| e.feed_fields.contains(&pr.pos));
        // The components decoded from each entry: those filtered, sorted or asked for.
        let wanted: Vec<usize> = (comp_preds.iter().map(|pr| pr.pos))
            .chain(sort.map(|(pos, _)| pos))
            .chain(want)
            .collect();
        let mut emitted = 0usize;
        let mut key: Vec<u8> = Vec::new();
        let mut bodies: Vec<sled::IVec> = Vec::new();
        loop {
            let item = iter.next().transpose().map_err(|err| StoreError::Engine {
                path: inner.path.clone(),
                op: "scan a posting index",
                message: err.to_string(),
            })?;
            let same_key = match &item {
                Some((k, _)) => postings::split_key(k)?.0 == key.as_slice(),
                None => false,
            };
            if !same_key && !bodies.is_empty() {
                if plan.reverse {
                    bodies.reverse();
                }
                let rows = postings::resolve(e, bodies.iter().map(|b| b.as_ref()))?;
                let mut hits = Vec::with_capacity(rows.len());
                for r in rows {
                    let comps = postings::comps(e, r.feed, &wanted);
                    let comp_ok = comp_preds.iter().all(|pr| {
                        comps
                            .iter()
                            .find(|(pos, _)| *pos == pr.pos)
                            .is_some_and(|(_, c)| pr.matches(c))
                    });
                    if !comp_ok {
                        continue;
                    }
                    let row = if row_preds.is_empty() {
                        None
                    } else {
                        match self.get_values(&e.name, &r.id)? {
                            Some(v) if row_preds.iter().all(|pr| pr.matches(&enc(&v[pr.pos]))) => {
                                Some(v)
                            }
                            _ => continue,
                        }
                    };
                    hits.push((Hit { id: r.id, comps }, row));
                }
                bodies.clear();
                if let Some((pos, order)) = sort {
                    let comp = |h: &Hit| {
                        h.comps
                            .iter()
                            .find(|(p, _)| *p == pos)
                            .map(|(_, c)| c.clone())
                    };
                    hits.sort_by_cached_key(|(h, _)| comp(h));
                    if order == Order::Desc {
                        hits.reverse();
                    }
                }
                for (hit, row) in hits {
                    if limit.is_some_and(|l| emitted >= l) || !on_hit(&hit, row)? {
                        return Ok(());
                    }
                    emitted += 1;
                }
            }
            let Some((k, v)) = item else {
                return Ok(());
            };
            if !same_key {
                key = postings::split_key(&k)?.0.to_vec();
            }
            bodies.push(v);
        }
    }
}

/// Lower and upper bound of encoded keys or components.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Index-key bounds for keys starting with `prefix`, then (optionally) a range of the next
/// component. Nulls sort first (tag 0) and no range includes them.
fn key_bounds(prefix: &[u8], range: Option<KeyRange>) -> KeyRange {
    match range {
        Some((lo, hi)) => (
            match lo {
                Bound::Included(v) => Bound::Included([prefix, &v].concat()),
                Bound::Excluded(v) => match prefix_successor(&[prefix, &v].concat()) {
                    Some(s) => Bound::Included(s),
                    None => Bound::Unbounded,
                },
                Bound::Unbounded => Bound::Included([prefix, &[1]].concat()),
            },
            match hi {
                Bound::Included(v) => match prefix_successor(&[prefix, &v].concat()) {
                    Some(s) => Bound::Excluded(s),
                    None => Bound::Unbounded,
                },
                Bound::Excluded(v) => Bound::Excluded([prefix, &v].concat()),
                Bound::Unbounded => match prefix_successor(prefix) {
                    Some(s) => Bound::Excluded(s),
                    None => Bound::Unbounded,
                },
            },
        ),
        None => (
            Bound::Included(prefix.to_vec()),
            match prefix_successor(prefix) {
                Some(s) => Bound::Excluded(s),
                None => Bound::Unbounded,
            },
        ),
    }
}

/// A bound on an encoded timestamp as the (inclusive) bound on its hour bucket.
fn bucket_bound(b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    let bucket = |v: &[u8]| match decode_component(FieldType::Timestamp, v) {
        Some((Value::Timestamp(t), _)) => Some(enc(&Value::Timestamp(
            t.div_euclid(POSTING_BUCKET_US) * POSTING_BUCKET_US,
        ))),
        _ => None,
    };
    match b {
        Bound::Included(v) | Bound::Excluded(v) => match bucket(&v) {
            Some(b) => Bound::Included(b),
            None => Bound::Unbounded,
        },
        Bound::Unbounded => Bound::Unbounded,
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
    // Indexes against rows: every entry of an `@index`, and every key's replayed rows of a
    // `@postings` index, must be what the live rows give.
    let mut expected: HashSet<Vec<u8>> = HashSet::new();
    let mut expected_posted: HashMap<Vec<u8>, HashMap<[u8; 16], Vec<u8>>> = HashMap::new();
    let mut posting_nos: HashMap<u8, &EntityLayout> = HashMap::new();
    for e in &inner.layout.entities {
        for p in &e.postings {
            posting_nos.insert(p.no, e);
        }
        for id in super::entity_ids(&inner.trees.types, &e.name) {
            let id = id.map_err(err("scan an entity"))?;
            if let Some(values) = store.get_values(&e.name, &id)? {
                for idx in &e.indexes {
                    expected.insert(e.index_key(idx, &values, &id));
                }
                for p in &e.postings {
                    expected_posted
                        .entry(e.posting_key(p, &values))
                        .or_default()
                        .insert(id, e.feed_values(&values));
                }
            }
        }
    }
    let mut posted: HashMap<Vec<u8>, Vec<sled::IVec>> = HashMap::new();
    for item in inner.trees.index.iter() {
        let (k, v) = item.map_err(err("scan the index tree"))?;
        if k.first().is_some_and(|no| posting_nos.contains_key(no)) {
            let (prefix, _) = postings::split_key(&k)?;
            posted.entry(prefix.to_vec()).or_default().push(v);
            continue;
        }
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
    for (key, bodies) in posted {
        let e = posting_nos[&key[0]];
        let want = expected_posted.entry(key.clone()).or_default();
        for r in postings::resolve(e, bodies.iter().map(|b| b.as_ref()))? {
            match want.remove(&r.id) {
                Some(v) if v == r.feed => {}
                Some(_) => problems.push(format!(
                    "posting index #{} key {:02x?} holds {} with other values than its row",
                    key[0],
                    key,
                    uuid::Uuid::from_bytes(r.id)
                )),
                None => problems.push(format!(
                    "posting index #{} key {:02x?} holds {}, which is not a live row under that key",
                    key[0],
                    key,
                    uuid::Uuid::from_bytes(r.id)
                )),
            }
        }
    }
    for (key, want) in expected_posted {
        for id in want.keys() {
            problems.push(format!(
                "row {} missing from posting index #{} key {:02x?}",
                uuid::Uuid::from_bytes(*id),
                key[0],
                key
            ));
        }
    }

    // The feed: contiguous from the floor to the head, every entry naming a stored version
    // (of a `@latest_only` entity: the latest version, or one it replaced).
    let mut next = store.feed_floor();
    let head = store.feed_head();
    let entries = store.feed_read(next, usize::MAX)?;
    // Ids whose last change is a delete: a deleted `@latest_only` row leaves nothing.
    let mut last_op: std::collections::HashMap<[u8; 16], super::ChangeOp> = Default::default();
    for entry in &entries {
        last_op.insert(entry.id, entry.op);
    }
    for entry in entries {
        if entry.seq != next {
            problems.push(format!("change feed jumps from {next} to {}", entry.seq));
        }
        next = entry.seq + 1;
        if inner
            .layout
            .entity(&entry.entity)
            .is_ok_and(|e| e.blocks.is_some())
        {
            // Blocks keep no old versions; `blocks::verify` checks the rows.
            continue;
        }
        let latest_only = inner
            .layout
            .entity(&entry.entity)
            .is_ok_and(|e| e.latest_only);
        let present = inner
            .trees
            .data
            .contains_key(VersionedKey::new(entry.id, entry.version).encode())
            .map_err(err("read a row version"))?;
        let latest = super::read_u64(&inner.trees.meta, &latest_key(&entry.id))
            .map_err(err("read a latest pointer"))?;
        let replaced = latest_only && latest.is_some_and(|v| v > entry.version);
        let purged = latest_only
            && latest.is_none()
            && last_op.get(&entry.id) == Some(&super::ChangeOp::Delete);
        if purged {
            continue;
        }
        if !present && !replaced {
            problems.push(format!(
                "change-feed entry {} names {} {} version {} which is not stored",
                entry.seq,
                entry.entity,
                uuid::Uuid::from_bytes(entry.id),
                entry.version
            ));
        }
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
    problems.extend(super::blocks::verify(inner)?);
    for (entity, rows) in super::migrate::pending(store)? {
        problems.push(format!(
            "{entity} is @blocks but {rows} of its rows are still ORMDB rows (not migrated)"
        ));
    }
    Ok(problems)
}
