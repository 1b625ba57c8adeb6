//! The `PrivateStore` conformance suite on the embedded sled store.

mod conformance;

use gateway::store::private::prelude::*;
use gateway::store::private::sled::SledStore;

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

conformance::every_test!(on_sled);

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

#[tokio::test]
async fn sled_reopen_keeps_sharing_state() {
    let dir = tempfile::tempdir().unwrap();
    let persisted = {
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        conformance::persistence_sharing_write(&store as &dyn PrivateStore).await
    };
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    conformance::persistence_sharing_check(&store as &dyn PrivateStore, &persisted).await;
}

/// `tokio::join!` in `conformance_decide_race` interleaves only at await points, and
/// sled's methods never yield, so there the two decisions run one after the other. This
/// races them on real threads.
#[test]
fn sled_decide_request_races_on_threads() {
    use futures::executor::block_on;
    use gateway::store::private::RequestState;

    const CONTENDERS: usize = 4;
    let (_dir, store) = fresh();
    for round in 0..32 {
        let id = format!("race-{round}");
        block_on(store.insert_request(conformance::request_record(&id, "p1"))).unwrap();
        let offers: Vec<_> = (0..CONTENDERS)
            .map(|i| {
                // One contender in four denies.
                if (round + i) % 4 == 0 {
                    (RequestState::Denied, None)
                } else {
                    let g = conformance::grant_record(&format!("{id}-{i}"), &id, "p1");
                    (RequestState::Approved, Some(g))
                }
            })
            .collect();
        let barrier = std::sync::Barrier::new(CONTENDERS);
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = offers
                .iter()
                .map(|(state, grant)| {
                    let (store, id, barrier) = (&store, &id, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        block_on(store.decide_request(id, *state, grant.clone()))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let contenders: Vec<_> = offers
            .into_iter()
            .zip(outcomes)
            .map(|((state, grant), outcome)| (state, grant.map(|g| g.id), outcome))
            .collect();
        block_on(conformance::check_one_decision(
            &store as &dyn PrivateStore,
            &id,
            &contenders,
        ));
    }
}
