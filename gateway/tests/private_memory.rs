//! The `PrivateStore` conformance suite on the in-memory `Kv` (`store::kv::memory`): the
//! same rules (`store::rules::KvStore`) over a second adapter, the proof that an adapter is
//! all a new store needs. Sled-only tests (reopening, upgrades of old sled rows, racing
//! threads on sled's optimistic transactions) stay in `private_sled.rs`.

mod conformance;

use gateway::store::kv::memory::MemoryKv;
use gateway::store::private::PrivateStore;
use gateway::store::rules::KvStore;

fn fresh() -> KvStore<MemoryKv> {
    KvStore::new(MemoryKv::new()).unwrap()
}

macro_rules! on_memory {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let store = fresh();
            conformance::$name(&store as &dyn PrivateStore).await;
        }
    )*};
}

conformance::every_test!(on_memory);

/// What the persistence tests write reads back whole from the same store (the in-memory
/// store has no reopen).
#[tokio::test]
async fn memory_keeps_everything_it_committed() {
    let store = fresh();
    let persisted = conformance::persistence_write(&store as &dyn PrivateStore).await;
    conformance::persistence_check(&store as &dyn PrivateStore, &persisted).await;
    let store = fresh();
    let persisted = conformance::persistence_sharing_write(&store as &dyn PrivateStore).await;
    conformance::persistence_sharing_check(&store as &dyn PrivateStore, &persisted).await;
}
