//! Route matching and REST request building: examples, then properties
//! (proptest) over arbitrary paths, queries and parameter values.

use proptest::prelude::*;
use serde_json::json;
use tiny_http::Method;

use super::*;

/// The first route making `request_type`.
fn route_of(request_type: &str) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.request_type == request_type)
        .unwrap()
}

/// Percent-encodes every byte but RFC 3986's unreserved ones, as a client does
/// for a path segment or a query key or value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The names of a route's `{name}` segments.
fn path_names(route: &Route) -> Vec<&'static str> {
    route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

#[test]
fn paths_match_with_parameters() {
    let Match::Found(route, params) = find(&Method::Get, "/api/sessions/a%20b/messages") else {
        panic!()
    };
    assert_eq!(route.request_type, "ChatHistory");
    assert_eq!(params, [("session_id", "a b".to_string())]);
    assert!(matches!(find(&Method::Put, "/health"), Match::WrongMethod(m) if m == ["GET"]));
    assert!(matches!(find(&Method::Get, "/nope"), Match::NotFound));
    assert!(matches!(
        find(&Method::Get, "/api/models/"),
        Match::NotFound
    ));
    // A sign is not a hex digit.
    assert!(matches!(
        find(&Method::Get, "/api/models/%+1"),
        Match::NotFound
    ));
}

#[test]
fn body_query_and_path_make_one_request() {
    let body = json!({"limit": 1, "role": "user"});
    let object = request_object(
        route_of("ChatHistory"),
        Some(body),
        "limit=10&order=oldest",
        vec![("session_id", "s".into())],
    )
    .unwrap();
    assert_eq!(object["limit"], 10);
    assert_eq!(object["order"], "oldest");
    assert_eq!(object["session_id"], "s");
    assert_eq!(object["request_type"], "ChatHistory");
    assert!(request_object(route_of("Health"), Some(json!([1])), "", vec![]).is_err());
}

#[test]
fn values_are_typed_by_the_route_not_by_their_look() {
    // A session, model or collection may be named `123` or `true`.
    let object = request_object(
        route_of("ChatHistory"),
        None,
        "order=1&limit=5&before=x",
        vec![("session_id", "123".into())],
    )
    .unwrap();
    assert_eq!(object["session_id"], "123");
    assert_eq!(object["order"], "1");
    assert_eq!(object["limit"], 5);
    // Not an integer: left for the request's parsing to refuse, naming it.
    assert_eq!(object["before"], "x");
    let delete = request_object(
        route_of("DeleteDocument"),
        None,
        "",
        vec![("collection", "7".into()), ("document_id", "7".into())],
    )
    .unwrap();
    assert_eq!(delete["collection"], "7");
    assert_eq!(delete["document_id"], 7);
    let force = request_object(
        route_of("DeleteModel"),
        None,
        "force=true",
        vec![("model", "true".into())],
    )
    .unwrap();
    assert_eq!(
        (&force["model"], &force["force"]),
        (&json!("true"), &json!(true))
    );
}

#[test]
fn a_required_body_must_be_there() {
    let error = request_object(route_of("SetParams"), None, "", vec![]).unwrap_err();
    assert!(error.contains("PATCH /api/params"), "{error}");
    assert!(request_object(route_of("SetParams"), Some(json!({})), "", vec![]).is_ok());
    // An optional body may be left out.
    assert!(request_object(route_of("LoadModel"), None, "", vec![("model", "m".into())]).is_ok());
}

#[test]
fn every_request_type_has_a_route() {
    // Request types reachable only through /v1/rpc would surprise REST users.
    let source = include_str!("../../../api/mod.rs");
    let enum_body = source
        .split("pub enum Request {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap();
    for line in enum_body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && l.contains('('))
    {
        let name = line.split('(').next().unwrap();
        // The key is handed over native messaging only (auth::native_only).
        if name == "GetApiKey" {
            continue;
        }
        assert!(
            ROUTES.iter().any(|r| r.request_type == name),
            "{name} has no HTTP route"
        );
    }
}

#[test]
fn typed_names_are_the_routes_own() {
    // A typo in a route's table would silently leave a number a string.
    for route in ROUTES {
        for (name, _) in route.typed {
            let documented = ["limit", "before", "force", "context_size", "from_id"].contains(name)
                || path_names(route).contains(name);
            assert!(documented, "{} {}: {name}", route.method, route.path);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_requests_never_panic(
        method in "[A-Z]{1,8}",
        path in "(/[^?]{0,12}){0,6}",
        query in ".{0,64}",
        raw in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let method = method.parse::<Method>().unwrap();
        let raw_path = String::from_utf8_lossy(&raw);
        for path in [path.as_str(), &raw_path] {
            match find(&method, path) {
                Match::Found(route, params) => {
                    let _ = request_object(route, None, &query, params);
                }
                Match::WrongMethod(allowed) => prop_assert!(!allowed.is_empty()),
                Match::NotFound => {}
            }
        }
        for route in ROUTES {
            let _ = request_object(route, Some(json!({})), &query, Vec::new());
        }
    }

    #[test]
    fn every_route_matches_its_own_path_with_any_parameter(
        index in 0..ROUTES.len(),
        values in proptest::collection::vec("\\PC{1,16}|[0-9]{1,4}|true|/|%|\\?", 2),
    ) {
        let route = &ROUTES[index];
        let names = path_names(route);
        let mut path = route.path.to_string();
        for (name, value) in names.iter().zip(&values) {
            path = path.replace(&format!("{{{name}}}"), &encode(value));
        }
        let method = route.method.parse::<Method>().unwrap();
        let Match::Found(found, params) = find(&method, &path) else {
            return Err(TestCaseError::fail(format!("{path} found no route")));
        };
        prop_assert_eq!((found.method, found.path), (route.method, route.path));
        let expected: Vec<(&str, String)> =
            names.iter().copied().zip(values.iter().cloned()).collect();
        prop_assert_eq!(&params, &expected);
        // A name that is not documented as a number is a string, whatever it looks like.
        if !route.request_type.is_empty() {
            let object = request_object(route, Some(json!({})), "", params).unwrap();
            for (name, value) in expected {
                if route.kind(name).is_none() {
                    prop_assert_eq!(&object[name], &json!(value));
                }
            }
        }
    }

    #[test]
    fn building_then_parsing_a_query_round_trips(
        pairs in proptest::collection::btree_map("[a-z_]{1,8}|\\PC{1,8}", "\\PC{0,12}", 0..6),
        limit in any::<i64>(),
        session in "\\PC{1,16}",
    ) {
        let route = route_of("ChatHistory");
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(k, _)| !["limit", "before", "session_id", "request_type"].contains(&k.as_str()))
            .collect();
        let mut query: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        query.push(format!("limit={limit}"));
        let object = request_object(
            route,
            None,
            &query.join("&"),
            vec![("session_id", session.clone())],
        )
        .unwrap();
        for (key, value) in &pairs {
            prop_assert_eq!(&object[key.as_str()], &json!(value));
        }
        prop_assert_eq!(&object["limit"], &json!(limit));
        prop_assert_eq!(&object["session_id"], &json!(session));
        prop_assert_eq!(&object["request_type"], &json!("ChatHistory"));
        prop_assert_eq!(object.as_object().unwrap().len(), pairs.len() + 3);
    }
}
