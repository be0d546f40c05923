//! The block-store contract as one suite, run against every implementation.

use super::{BlockError, BlockStore, block_id, fetch_verified};
use bytes::Bytes;

pub(crate) fn run_all(s: &dyn BlockStore) {
    s.check().unwrap();
    let data = Bytes::from(vec![7u8; 100_000]);
    let id = block_id(&data);
    assert!(matches!(s.get(&id), Err(BlockError::NotFound(_))));
    s.put(&id, data.clone()).unwrap();
    assert_eq!(fetch_verified(s, &id).unwrap(), data);
    let listed = s.list().unwrap();
    let entry = listed.iter().find(|b| b.id == id).expect("listed");
    assert_eq!(entry.size, data.len() as u64);
    let first = entry.modified;
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.put(&id, data.clone()).unwrap();
    let again = s
        .list()
        .unwrap()
        .into_iter()
        .find(|b| b.id == id)
        .unwrap()
        .modified;
    assert!(
        again >= first,
        "putting again must not make the block look older"
    );
    let empty = Bytes::new();
    s.put(&block_id(&empty), empty.clone()).unwrap();
    assert_eq!(s.get(&block_id(&empty)).unwrap(), empty);
    s.delete(&id).unwrap();
    s.delete(&id).unwrap();
    assert!(matches!(s.get(&id), Err(BlockError::NotFound(_))));
}
