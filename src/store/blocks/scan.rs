//! Filtered reads of `@blocks` rows: the catalog narrows the blocks (org, topic, partition,
//! time range), then only the columns the filters and the caller need are decoded.

use super::codec::BlockReader;
use super::BlockMeta;
use crate::store::layout::EntityLayout;
use crate::store::query::{enc, sort_rows, Filter, Order, Pred, Query};
use crate::store::{Inner, StoreError, Value};
use std::ops::Bound;
use std::sync::Arc;

/// Called with each matching row's chosen values; returns false to stop.
pub(crate) type OnRow<'a> = dyn FnMut(&BlockMeta, Vec<Value>) -> Result<bool, StoreError> + 'a;

/// The blocks that may hold rows matching `q`, by what the catalog knows.
pub(crate) fn candidates(inner: &Inner, e: &EntityLayout, q: &Query) -> Vec<Arc<BlockMeta>> {
    let keys = e.blocks.as_ref().expect("a @blocks entity");
    let field = |pos: Option<usize>| pos.map(|p| e.fields[p].name.as_str());
    let eq = |pos: Option<usize>| {
        q.filters.iter().find_map(|f| match f {
            Filter::Eq(name, v) if Some(name.as_str()) == field(pos) => Some(v.clone()),
            _ => None,
        })
    };
    let (org, topic, partition) = (eq(keys.org), eq(keys.topic), eq(keys.partition));
    let micros = |b: &Bound<Value>| match b {
        Bound::Included(Value::Timestamp(t)) | Bound::Excluded(Value::Timestamp(t)) => Some(*t),
        _ => None,
    };
    let (mut lower, mut upper) = (None, None);
    for f in &q.filters {
        if let Filter::Range {
            field: name,
            lower: l,
            upper: u,
        } = f
        {
            if Some(name.as_str()) == field(keys.time) {
                lower = micros(l);
                upper = micros(u);
            }
        }
    }
    inner.blocks.catalog.select(e.no, |m| {
        // A mixed (resident) block may hold any key: its rows are filtered one by one.
        (m.mixed
            || org.as_ref().is_none_or(|v| *v == m.org)
                && topic.as_ref().is_none_or(|v| *v == m.topic)
                && partition.as_ref().is_none_or(|v| *v == m.partition))
            && m.meets_time(lower, upper)
    })
}

/// Calls `f` with the values of `cols` (in that order) of every row matching `q`'s filters,
/// block by block in the order `q` asks for when it orders by the time field (newest blocks
/// first for descending); `f` returns false to stop. `stop_before(block)` may end the scan
/// before a block (an ordered, limited read that has what it needs).
pub(crate) fn scan(
    inner: &Inner,
    e: &EntityLayout,
    q: &Query,
    cols: &[usize],
    f: &mut OnRow<'_>,
    stop_before: &mut dyn FnMut(&BlockMeta) -> bool,
) -> Result<(), StoreError> {
    let preds = Pred::of(e, q)?;
    let mut blocks = candidates(inner, e, q);
    let time = e.blocks.as_ref().and_then(|k| k.time);
    if let Some((name, order)) = &q.order {
        if time.is_some_and(|t| e.fields[t].name == *name) {
            match order {
                Order::Asc => blocks.sort_by_key(|m| (m.min_time, m.no)),
                Order::Desc => blocks.sort_by_key(|m| std::cmp::Reverse((m.max_time, m.no))),
            }
        }
    }
    for meta in blocks {
        if stop_before(&meta) {
            break;
        }
        let bytes = match inner.blocks.bytes(meta.no) {
            Ok(b) => b,
            // Merged or rewritten away since the catalog was read: its rows are in a newer
            // block the catalog now holds, which this read does not see (as if it ran first).
            Err(_) if inner.blocks.catalog.get(meta.no).is_none() => continue,
            Err(err) => return Err(err),
        };
        let reader = BlockReader::open(&bytes)?;
        let mut keep = vec![true; reader.len()];
        for p in &preds {
            let column = reader.column(p.pos)?;
            for (k, v) in keep.iter_mut().zip(&column) {
                if *k && !p.matches(&enc(v)) {
                    *k = false;
                }
            }
        }
        if !keep.iter().any(|k| *k) {
            continue;
        }
        let columns = cols
            .iter()
            .map(|&c| reader.column(c))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            let row = columns.iter().map(|c| c[i].clone()).collect();
            if !f(&meta, row)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The rows matching `q`, in its order, at most its limit. An ordered, limited read by the
/// time field stops at the first block that cannot hold one of the rows it has kept.
pub(crate) fn query_rows(
    inner: &Inner,
    e: &EntityLayout,
    q: &Query,
) -> Result<Vec<crate::store::layout::Values>, StoreError> {
    let all: Vec<usize> = (0..e.fields.len()).collect();
    let order = q
        .order
        .as_ref()
        .map(|(f, o)| e.field_pos(f).map(|p| (p, *o)))
        .transpose()?;
    let sort = |rows: &mut Vec<Vec<Value>>| sort_rows(rows, order, q.limit);
    let by_time = order.filter(|(pos, _)| e.blocks.as_ref().and_then(|k| k.time) == Some(*pos));
    let rows = std::cell::RefCell::new(Vec::new());
    // The time of the last row kept once `limit` rows are held (sorted and cut).
    let bound = std::cell::Cell::new(None::<i64>);
    scan(
        inner,
        e,
        q,
        &all,
        &mut |_, row| {
            let mut rows = rows.borrow_mut();
            rows.push(row);
            if let (Some((pos, _)), Some(limit)) = (by_time, q.limit) {
                if rows.len() >= 2 * limit.max(64) {
                    sort(&mut rows);
                    if let Some(Value::Timestamp(t)) = rows.last().map(|r| &r[pos]) {
                        bound.set(Some(*t));
                    }
                }
            }
            Ok(true)
        },
        &mut |meta| {
            let (Some((_, o)), Some(limit), Some(t)) = (by_time, q.limit, bound.get()) else {
                return false;
            };
            if rows.borrow().len() < limit {
                return false;
            }
            match o {
                Order::Desc => meta.max_time.is_some_and(|m| m < t),
                Order::Asc => meta.min_time.is_some_and(|m| m > t),
            }
        },
    )?;
    let mut rows = rows.into_inner();
    sort(&mut rows);
    Ok(rows)
}
