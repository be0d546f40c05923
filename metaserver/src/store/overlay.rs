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
    Merged::new(over, base).take(limit).collect()
}

/// The rows of `base` as changed by `over`, in key order (an error ends the rows).
pub(crate) struct Merged<'a, O: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, B: Iterator> {
    over: std::iter::Peekable<O>,
    base: std::iter::Peekable<B>,
}

impl<'a, O, B> Merged<'a, O, B>
where
    O: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    B: Iterator<Item = MetaResult<Pair>>,
{
    pub(crate) fn new(over: O, base: B) -> Self {
        Merged {
            over: over.peekable(),
            base: base.peekable(),
        }
    }
}

impl<'a, O, B> Iterator for Merged<'a, O, B>
where
    O: Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    B: Iterator<Item = MetaResult<Pair>>,
{
    type Item = MetaResult<Pair>;

    fn next(&mut self) -> Option<MetaResult<Pair>> {
        loop {
            let order = match (self.over.peek(), self.base.peek()) {
                (None, None) => return None,
                (_, Some(Err(_))) | (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some((k, _)), Some(Ok((b, _)))) => (*k).cmp(b.as_slice()),
            };
            if order == Ordering::Greater {
                return self.base.next(); // a row, or the error
            }
            let (k, v) = self.over.next().expect("peeked");
            if order == Ordering::Equal {
                self.base.next();
            }
            if let Some(v) = v {
                return Some(Ok((k.to_vec(), v.to_vec())));
            }
        }
    }
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

        #[test]
        fn merging_twice_equals_applying_both(
            base in proptest::collection::btree_map(key(), key(), 0..12),
            older in proptest::collection::btree_map(key(), proptest::option::of(key()), 0..12),
            newer in proptest::collection::btree_map(key(), proptest::option::of(key()), 0..12),
        ) {
            let mid = Merged::new(
                older.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
                base.clone().into_iter().map(Ok),
            );
            let top = Merged::new(newer.iter().map(|(k, v)| (k.as_slice(), v.as_deref())), mid);
            let rows: Vec<Pair> = top.collect::<MetaResult<_>>().unwrap();
            let mut both = older.clone();
            both.extend(newer.clone());
            prop_assert_eq!(rows, model(&base, &both, usize::MAX));
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
