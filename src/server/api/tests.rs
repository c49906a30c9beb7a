//! The backend API's routing, decoding and limits, without sockets.
use super::*;

const OPENAPI: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/api/openapi.yaml"
));

/// The (method, path) pairs under `paths:` of the OpenAPI document: path keys are indented
/// two spaces, operation keys four.
fn documented_operations(yaml: &str) -> Vec<(String, String)> {
    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut operations = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in yaml.lines() {
        let trimmed = line.trim_end();
        if trimmed.is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let indent = trimmed.len() - trimmed.trim_start().len();
        if indent == 0 {
            in_paths = trimmed == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        let key = trimmed.trim_start().strip_suffix(':');
        match (indent, key) {
            (2, Some(key)) => path = Some(key.trim_matches(|c| c == '"' || c == '\'').to_owned()),
            (4, Some(method)) if METHODS.contains(&method) => {
                let path = path.clone().expect("an operation under a path");
                operations.push((method.to_ascii_uppercase(), path));
            }
            _ => {}
        }
    }
    operations.sort();
    operations
}

fn served_operations() -> Vec<(String, String)> {
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    served.sort();
    served
}

#[test]
fn the_openapi_document_lists_exactly_the_served_endpoints() {
    let documented = documented_operations(OPENAPI);
    let served = served_operations();
    assert!(!documented.is_empty(), "no operations found under paths:");
    let undocumented: Vec<_> = served
        .iter()
        .filter(|op| !documented.contains(op))
        .collect();
    let unserved: Vec<_> = documented
        .iter()
        .filter(|op| !served.contains(op))
        .collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in docs/api/openapi.yaml: {undocumented:?}; documented but not \
         served: {unserved:?}"
    );
}

#[test]
fn every_documented_operation_reaches_its_handler_through_the_router() {
    for (method, path) in documented_operations(OPENAPI) {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let matched = route(&method, &concrete)
            .unwrap_or_else(|e| panic!("{method} {concrete} is not routed: {e}"));
        let expected = ROUTES
            .iter()
            .find(|(m, p, _)| *m == method.as_str() && *p == path)
            .map(|(_, _, e)| *e);
        assert_eq!(Some(matched.endpoint), expected, "{method} {path}");
    }
}

#[test]
fn the_openapi_document_lists_every_error_code() {
    for code in ERROR_CODES {
        assert!(
            OPENAPI.contains(&format!("- {code}\n")),
            "error code {code} is not in the ErrorCode enum of docs/api/openapi.yaml"
        );
    }
}

#[test]
fn the_documented_operation_parser_reads_paths_and_methods_only() {
    let yaml = "openapi: 3.0.3\npaths:\n  /a/{x}:\n    parameters:\n      - name: x\n    get:\n      summary: s\n    post:\n      responses:\n        \"200\":\n          description: ok\n  \"/b\":\n    delete:\n      summary: d\ncomponents:\n  schemas:\n    get:\n      type: object\n";
    assert_eq!(
        documented_operations(yaml),
        [
            ("DELETE".to_owned(), "/b".to_owned()),
            ("GET".to_owned(), "/a/{x}".to_owned()),
            ("POST".to_owned(), "/a/{x}".to_owned()),
        ]
    );
}

#[test]
fn names_in_paths_are_decoded_per_segment_and_bounded() {
    let m = route(&Method::POST, "/v1/identities/alice%2Fbob%40x+y/revoke").expect("routed");
    assert_eq!(m.endpoint, Endpoint::RevokeIdentity);
    assert_eq!(m.params, ["alice/bob@x+y"]);
    let m = route(&Method::GET, "/v1/rooms/caf%C3%A9").expect("routed");
    assert_eq!(m.params, ["café"]);
    let long = "a".repeat(MAX_NAME_BYTES + 1);
    let err = route(&Method::GET, &format!("/v1/rooms/{long}")).expect_err("too long");
    assert!(
        matches!(err, ApiError::InvalidArgument(ref m) if m.contains("room") && m.contains("129 bytes")),
        "{err}"
    );
    assert!(
        route(
            &Method::GET,
            &format!("/v1/rooms/{}", "a".repeat(MAX_NAME_BYTES))
        )
        .is_ok()
    );
    for bad in ["%zz", "%4", "%+1", "%FF"] {
        let err = route(&Method::GET, &format!("/v1/rooms/{bad}")).expect_err(bad);
        assert!(
            matches!(err, ApiError::InvalidArgument(ref m) if m.contains(bad)),
            "{bad}: {err}"
        );
    }
    for bad in ["%0A", "%00"] {
        let err = route(&Method::GET, &format!("/v1/rooms/a{bad}")).expect_err(bad);
        assert!(
            matches!(err, ApiError::InvalidArgument(ref m) if m.contains("room") && m.contains("control")),
            "{bad}: {err}"
        );
    }
    let err = route(&Method::GET, "/v1/rooms/").expect_err("empty");
    assert!(
        matches!(err, ApiError::InvalidArgument(ref m) if m.contains("empty")),
        "{err}"
    );
}

#[test]
fn unknown_paths_are_404_and_other_methods_405_with_allow() {
    assert!(matches!(
        route(&Method::GET, "/v1/nothing"),
        Err(ApiError::UnknownEndpoint { .. })
    ));
    assert!(matches!(
        route(&Method::GET, "/v1/sessions/"),
        Err(ApiError::UnknownEndpoint { .. })
    ));
    let err = route(&Method::DELETE, "/v1/sessions").expect_err("405");
    assert!(
        matches!(err, ApiError::MethodNotAllowed { ref allowed, .. } if allowed == "GET"),
        "{err}"
    );
    let err = route(&Method::GET, "/v1/sessions/p-1/disconnect").expect_err("405");
    assert!(
        matches!(err, ApiError::MethodNotAllowed { ref allowed, .. } if allowed == "POST"),
        "{err}"
    );
}

#[test]
fn query_parameters_are_decoded_and_only_known_ones_accepted() {
    let q = query_params(Some("identity=a%2Bb%40x"), &["identity"]).expect("ok");
    assert_eq!(q, [("identity".to_owned(), "a+b@x".to_owned())]);
    assert!(query_params(None, &[]).expect("ok").is_empty());
    let err = query_params(Some("identiy=a"), &["identity"]).expect_err("typo");
    assert!(err.to_string().contains("identiy"), "{err}");
    assert!(query_params(Some("identity=a&identity=b"), &["identity"]).is_err());
    assert!(query_params(Some("identity="), &["identity"]).is_err());
    assert!(query_params(Some("x=1"), &[]).is_err());
}

#[test]
fn the_secret_is_a_bearer_token_compared_whole() {
    let secret = sha256(b"0123456789abcdef0123456789abcdef");
    let headers = |value: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header"),
        );
        h
    };
    assert!(authorize(&headers("Bearer 0123456789abcdef0123456789abcdef"), &secret).is_ok());
    assert!(
        authorize(
            &headers("bearer  0123456789abcdef0123456789abcdef "),
            &secret
        )
        .is_ok()
    );
    assert!(matches!(
        authorize(&HeaderMap::new(), &secret),
        Err(ApiError::MissingSecret)
    ));
    assert!(matches!(
        authorize(&headers("Basic 0123456789abcdef0123456789abcdef"), &secret),
        Err(ApiError::MissingSecret)
    ));
    for wrong in [
        "Bearer 0123456789abcdef0123456789abcde",
        "Bearer 0123456789abcdef0123456789abcdef0",
        "Bearer ",
        "Bearer 1123456789abcdef0123456789abcdef",
    ] {
        assert!(
            matches!(
                authorize(&headers(wrong), &secret),
                Err(ApiError::WrongSecret)
            ),
            "{wrong}"
        );
    }
}

#[test]
fn reasons_are_bounded_text() {
    assert!(check_reason("policy violation").is_ok());
    assert!(check_reason(" ").is_err());
    assert!(check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
    assert!(check_reason("two\nlines").is_err());
}

/// A hub that takes the request but never answers (or is gone) is a 503, not a hang.
#[tokio::test]
async fn a_hub_that_does_not_answer_is_unavailable() {
    let (hub, mut inputs) = mpsc::channel(4);
    let api = Api {
        hub,
        secret_sha256: [0; 32],
        auth: None,
        hub_timeout: Duration::from_millis(50),
    };
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(input) = inputs.recv().await {
            kept.push(input); // Never answered, never dropped.
        }
    });
    let err = api
        .ask(AdminRequest::Sessions)
        .await
        .expect_err("no answer");
    assert!(matches!(err, ApiError::HubUnavailable));
    assert_eq!(
        err.into_response().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    held.abort();
    let _ = held.await;
    let err = api.ask(AdminRequest::Rooms).await.expect_err("hub gone");
    assert!(matches!(err, ApiError::HubUnavailable));
}

#[test]
fn error_bodies_have_the_documented_shape_and_401s_ask_for_a_bearer() {
    let response = ApiError::WrongSecret.into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .expect("challenge");
    assert!(challenge.to_str().expect("ascii").starts_with("Bearer "));
    let response = ApiError::MethodNotAllowed {
        method: "PUT".into(),
        path: "/v1/rooms".into(),
        allowed: "GET".into(),
    }
    .into_response();
    assert_eq!(
        response
            .headers()
            .get(header::ALLOW)
            .map(HeaderValue::as_bytes),
        Some(&b"GET"[..])
    );
}
