//! Reading rows through an overlay of changes: a scan merges a store's own rows with
//! changes held above them (a PostgreSQL transaction's buffered writes, the redb store's
//! in-memory layer of committed changes).
//!
//! Invariant: both inputs are in ascending key order with no repeated key; where both hold
//! a key the overlay's change wins, and a deletion (`None`) hides the base row.

use super::Pair;
use meridian_proto::MetaResult;
use std::cmp::Ordering;

/// Up to `limit` rows of `base` as changed by `over`, in key order.
pub(crate) fn merge<'a>(
    over: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    base: impl Iterator<Item = MetaResult<Pair>>,
    limit: usize,
) -> MetaResult<Vec<Pair>> {
    let mut over = over.peekable();
    let mut base = base.peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        if let Some(Err(_)) = base.peek() {
            return Err(base
                .next()
                .and_then(Result::err)
                .expect("an error was peeked"));
        }
        let order = match (over.peek(), base.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((k, _)), Some(Ok((b, _)))) => (*k).cmp(b.as_slice()),
            (Some(_), Some(Err(_))) => unreachable!("errors are returned above"),
        };
        if order != Ordering::Greater {
            let (k, v) = over.next().expect("peeked");
            if order == Ordering::Equal {
                base.next();
            }
            if let Some(v) = v {
                out.push((k.to_vec(), v.to_vec()));
            }
        } else if let Some(Ok(row)) = base.next() {
            out.push(row);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn model(
        base: &BTreeMap<Vec<u8>, Vec<u8>>,
        over: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        limit: usize,
    ) -> Vec<Pair> {
        let mut m = base.clone();
        for (k, v) in over {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
        m.into_iter().take(limit).collect()
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..4, 0..3)
    }

    proptest! {
        #[test]
        fn merging_equals_applying_the_changes(
            base in proptest::collection::btree_map(key(), key(), 0..12),
            over in proptest::collection::btree_map(key(), proptest::option::of(key()), 0..12),
            limit in 0usize..20,
        ) {
            let rows = merge(
                over.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
                base.clone().into_iter().map(Ok),
                limit,
            )
            .unwrap();
            prop_assert_eq!(rows, model(&base, &over, limit));
        }
    }

    #[test]
    fn an_error_in_the_base_is_returned() {
        let base = vec![
            Ok((b"a".to_vec(), b"1".to_vec())),
            Err(meridian_proto::MetaError::Store("disk".into())),
        ];
        let r = merge(std::iter::empty(), base.into_iter(), 10);
        assert!(matches!(r, Err(meridian_proto::MetaError::Store(m)) if m == "disk"));
    }
}
