//! The `PrivateStore` conformance suite on the embedded sled store.

mod conformance;

use gateway::private::sled::SledStore;
use gateway::private::PrivateStore;

fn fresh() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    (dir, store)
}

macro_rules! on_sled {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (_dir, store) = fresh();
            conformance::$name(&store as &dyn PrivateStore).await;
        }
    )*};
}

on_sled!(
    conformance_buckets,
    conformance_commit_requires_pending,
    conformance_commit_to_missing_bucket,
    conformance_commit_and_overwrite,
    conformance_shared_blob_and_dek,
    conformance_delete_object,
    conformance_preconditions,
    conformance_list_objects,
    conformance_leaves,
    conformance_reap,
    conformance_access_keys,
    conformance_uploads,
);

#[tokio::test]
async fn sled_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let persisted = {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        conformance::persistence_write(&store as &dyn PrivateStore).await
    };
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    conformance::persistence_check(&store as &dyn PrivateStore, &persisted).await;
}
