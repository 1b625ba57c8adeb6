//! The route table against the router and the OpenAPI document: every route is served on
//! its method, and the document lists exactly the table's routes.

use super::*;
use crate::engine::record::EngineConfig;
use crate::store::private::sled::SledStore;
use crate::store::private::PrivateStore;
use keyring::Identity;

/// The API over a fresh engine (sled in a temporary folder, an in-memory public store), no
/// peers, admin token `token`, listening on a loopback port.
async fn serve() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let private = Arc::new(SledStore::open(dir.path(), 4 << 20).unwrap());
    let engine = Arc::new(Engine::new(
        Arc::new(object_store::memory::InMemory::new()),
        private as Arc<dyn PrivateStore>,
        Arc::new(Identity::generate()),
        EngineConfig::default(),
    ));
    let admin = AdminContext {
        engine: Arc::clone(&engine),
        serving: false,
        public_root: None,
        peers: Vec::new(),
        progress: None,
    };
    let state = ApiState::new(
        engine,
        admin,
        Zeroizing::new("token".into()),
        Vec::new(),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    (dir, base)
}

/// What the router answers to `method path` (no credentials): status and body.
async fn ask(base: &str, method: Method, path: &str) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

fn unrouted(status: StatusCode, body: &str) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED || body.contains("no such API path")
}

#[tokio::test]
async fn every_route_of_the_table_is_served_on_its_method() {
    let (_dir, base) = serve().await;
    for &route in Route::ALL {
        let params: Vec<(&str, &str)> = route.params().into_iter().map(|p| (p, "x")).collect();
        let path = route.path(&params);
        let (status, body) = ask(&base, route.method(), &path).await;
        assert!(
            !unrouted(status, &body),
            "{route:?} ({} {path}) is not routed: {status} {body}",
            route.method()
        );
    }
    // The check can fail: a path outside the table, and a table path on another method.
    let (status, body) = ask(&base, Method::GET, "/v1/patient/nothing").await;
    assert!(unrouted(status, &body), "{status} {body}");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = ask(&base, Method::DELETE, Route::PatientMe.template()).await;
    assert!(unrouted(status, &body), "{status} {body}");
    // A parameter a client forgot leaves `{id}` in the path, which is a real segment here,
    // never another route.
    let (status, _) = ask(&base, Method::GET, &Route::AdminPatient.path(&[])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_of_the_table() {
    let doc = openapi();
    let mut documented = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::HEAD, &item.head),
            (Method::OPTIONS, &item.options),
        ] {
            if let Some(op) = op {
                documented.push((method, path.clone(), op.operation_id.clone()));
            }
        }
    }
    let mut table: Vec<_> = Route::ALL
        .iter()
        // The document does not describe itself.
        .filter(|r| **r != Route::OpenApi)
        .map(|r| {
            (
                r.method(),
                r.template().to_string(),
                Some(r.name().to_string()),
            )
        })
        .collect();
    let key = |(m, p, n): &(Method, String, Option<String>)| (p.clone(), m.to_string(), n.clone());
    documented.sort_by_key(key);
    table.sort_by_key(key);
    assert_eq!(documented, table);
}
