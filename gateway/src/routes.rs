//! The JSON API's route table: every endpoint once, as (method, path template, name).
//!
//! The API router (`front::api::router`) is built from this table, and every client of the
//! API builds its URLs from it: the peers' client (`engine::remote`), and the CLI's patient
//! link, witness and audit (`src/link.rs`, `src/witness.rs`, `src/patient.rs`). A path spelled
//! in one place only cannot drift between the side that serves it and the side that calls it.
//!
//! Templates use axum's `{name}` form for path parameters; [`Route::path`] fills them in,
//! each percent-encoded as one path segment, and [`Route::path_query`] adds a query string
//! encoded as `application/x-www-form-urlencoded` (what the peers' client always sent).
//! [`Route::name`] is the handler's name, which is also the operation id in the OpenAPI
//! document (`/openapi.json`); the API's tests check that document's paths against this
//! table and that every route is served.
//!
//! A base module: it uses no layer of the gateway, and every layer may use it.

use axum::http::Method;

/// Defines [`Route`] (one variant per row), [`Route::ALL`] and each route's row, from one
/// table, so a route cannot be added to one and not the others.
macro_rules! route_table {
    ($( $(#[$doc:meta])* $variant:ident => $verb:ident $template:literal $name:literal, )*) => {
        /// One endpoint of the JSON API.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Route {
            $(
                #[doc = concat!("`", stringify!($verb), " ", $template, "`, handled by `", $name, "`.")]
                $(#[$doc])*
                $variant,
            )*
        }

        impl Route {
            /// Every route, in table order.
            pub const ALL: &'static [Route] = &[$(Route::$variant,)*];

            /// The (method, template, name) row of this route.
            const fn row(self) -> (Verb, &'static str, &'static str) {
                match self {
                    $(Route::$variant => (Verb::$verb, $template, $name),)*
                }
            }
        }
    };
}

route_table! {
    /// The OpenAPI document (public).
    OpenApi => GET "/openapi.json" "openapi_json",
    /// The latest checkpoint (public).
    LogCheckpoint => GET "/v1/log/checkpoint" "log_checkpoint",
    /// Query `index`, `size` (public).
    LogInclusion => GET "/v1/log/proofs/inclusion" "log_inclusion",
    /// Query `from`, `to` (public).
    LogConsistency => GET "/v1/log/proofs/consistency" "log_consistency",
    /// A witness's cosignature (public: the cosignature is what is checked).
    LogCosign => POST "/v1/log/cosignatures" "log_cosign",
    AdminPatients => GET "/v1/admin/patients" "admin_patients",
    AdminRegister => POST "/v1/admin/patients" "admin_register",
    AdminPatient => GET "/v1/admin/patients/{id}" "admin_patient",
    AdminBreakGlass => POST "/v1/admin/patients/{id}/break-glass" "admin_break_glass",
    /// Query `patient`.
    AdminRequests => GET "/v1/admin/requests" "admin_requests",
    AdminNewRequest => POST "/v1/admin/requests" "admin_new_request",
    AdminRequest => GET "/v1/admin/requests/{id}" "admin_request",
    /// Query `patient`.
    AdminGrants => GET "/v1/admin/grants" "admin_grants",
    AdminAccessKeys => GET "/v1/admin/access-keys" "admin_access_keys",
    AdminNewAccessKey => POST "/v1/admin/access-keys" "admin_new_access_key",
    AdminDeleteAccessKey => DELETE "/v1/admin/access-keys/{id}" "admin_delete_access_key",
    /// Query `from`, `limit`, `patient`.
    AdminEvents => GET "/v1/admin/events" "admin_events",
    AdminVerify => POST "/v1/admin/verify" "admin_verify",
    AdminMounts => GET "/v1/admin/mounts" "admin_mounts",
    AdminMount => POST "/v1/admin/mounts" "admin_mount",
    /// Anyone may ask.
    PatientChallenge => POST "/v1/patient/challenge" "patient_challenge",
    PatientMe => GET "/v1/patient/me" "patient_me",
    /// Query `all`.
    PatientRequests => GET "/v1/patient/requests" "patient_requests",
    PatientRequest => GET "/v1/patient/requests/{id}" "patient_request",
    PatientApprove => POST "/v1/patient/requests/{id}/approve" "patient_approve",
    PatientDeny => POST "/v1/patient/requests/{id}/deny" "patient_deny",
    PatientGrants => GET "/v1/patient/grants" "patient_grants",
    PatientRevoke => POST "/v1/patient/revocations" "patient_revoke",
    PatientKeyChange => POST "/v1/patient/key-change" "patient_key_change",
    PatientEntries => GET "/v1/patient/entries" "patient_entries",
    /// Anyone may ask, for a grant in force.
    RecipientChallenge => POST "/v1/recipient/challenge" "recipient_challenge",
    /// Signed with the grant's recipient key.
    RecipientExchange => POST "/v1/recipient/exchange" "recipient_exchange",
    PeerNewRequest => POST "/v1/peer/requests" "peer_new_request",
    PeerRequest => GET "/v1/peer/requests/{id}" "peer_request",
    /// Query `grant`.
    PeerObjects => GET "/v1/peer/objects" "peer_objects",
    PeerExchange => POST "/v1/peer/exchange" "peer_exchange",
    /// Query `grant`, `bucket`, `key`, `blob`, `chunk`.
    PeerBlob => GET "/v1/peer/blob" "peer_blob",
    /// The institution's key rollovers (public: each is signed).
    PeerRollover => GET "/v1/peer/rollover" "peer_rollover",
}

impl Route {
    /// The HTTP method.
    pub fn method(self) -> Method {
        match self.row().0 {
            Verb::GET => Method::GET,
            Verb::POST => Method::POST,
            Verb::DELETE => Method::DELETE,
        }
    }

    /// The path template, parameters in axum's `{name}` form (`/v1/patient/requests/{id}`).
    pub const fn template(self) -> &'static str {
        self.row().1
    }

    /// The handler's name, which is also the operation id in the OpenAPI document.
    pub const fn name(self) -> &'static str {
        self.row().2
    }

    /// The names of the template's parameters, in order (`["id"]`).
    pub fn params(self) -> Vec<&'static str> {
        self.template()
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }

    /// The concrete path: each `{name}` of the template replaced by the value `params` gives
    /// for it, percent-encoded as one path segment (every byte but `A-Z a-z 0-9 - . _ ~`).
    /// A parameter `params` does not give stays as `{name}` (sent as `%7Bname%7D`): the
    /// request reaches this route with a value that names nothing, never another route.
    pub fn path(self, params: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.template().len() + 32);
        for (i, seg) in self.template().split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            let given = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .and_then(|name| params.iter().find(|(n, _)| *n == name));
            match given {
                Some((_, value)) => out.push_str(&encode_segment(value)),
                None => out.push_str(seg),
            }
        }
        out
    }

    /// [`Route::path`] with a query string (`?k=v&...`, form-urlencoded); no `?` when
    /// `query` is empty.
    pub fn path_query(self, params: &[(&str, &str)], query: &[(&str, &str)]) -> String {
        let mut out = self.path(params);
        if !query.is_empty() {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            out.push('?');
            out.push_str(&q.finish());
        }
        out
    }
}

/// The methods the API uses (a `const fn` cannot build an `http::Method`).
#[derive(Clone, Copy)]
#[allow(clippy::upper_case_acronyms)]
enum Verb {
    GET,
    POST,
    DELETE,
}

/// `value` percent-encoded as one path segment: unreserved characters (RFC 3986) stay, every
/// other byte becomes `%XX`.
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once_and_no_two_share_method_and_template() {
        let mut seen = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for r in Route::ALL {
            assert!(
                seen.insert((r.method(), r.template())),
                "{r:?} repeats a method and template"
            );
            assert!(names.insert(r.name()), "{r:?} repeats a name");
            assert!(r.template().starts_with('/'), "{r:?}");
        }
        assert_eq!(seen.len(), Route::ALL.len());
    }

    #[test]
    fn paths_fill_and_encode_parameters() {
        assert_eq!(Route::PatientMe.path(&[]), "/v1/patient/me");
        assert_eq!(
            Route::PatientApprove.path(&[("id", "ab12")]),
            "/v1/patient/requests/ab12/approve"
        );
        // A value cannot leave its segment or start a query.
        assert_eq!(
            Route::PeerRequest.path(&[("id", "../x?y=1 #")]),
            "/v1/peer/requests/..%2Fx%3Fy%3D1%20%23"
        );
        assert_eq!(Route::AdminPatient.params(), vec!["id"]);
        assert!(Route::PeerBlob.params().is_empty());
        // Missing: the template stays (a value that names nothing, on this route).
        assert_eq!(Route::PeerRequest.path(&[]), "/v1/peer/requests/{id}");
    }

    #[test]
    fn queries_are_form_urlencoded_as_the_peer_client_always_sent_them() {
        assert_eq!(
            Route::PeerBlob.path_query(
                &[],
                &[
                    ("grant", "g 1"),
                    ("bucket", "b"),
                    ("key", "a/b+c"),
                    ("chunk", "3")
                ]
            ),
            "/v1/peer/blob?grant=g+1&bucket=b&key=a%2Fb%2Bc&chunk=3"
        );
        assert_eq!(
            Route::LogConsistency.path_query(&[], &[("from", "1"), ("to", "5")]),
            "/v1/log/proofs/consistency?from=1&to=5"
        );
        assert_eq!(Route::PeerObjects.path_query(&[], &[]), "/v1/peer/objects");
    }
}
