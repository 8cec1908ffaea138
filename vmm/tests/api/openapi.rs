//! vmm/openapi.yaml against what the server really serves and answers.

use super::*;

/// The spec as JSON.
fn spec() -> Value {
    serde_yaml_ng::from_str(OPENAPI).expect("openapi.yaml parses")
}

fn spec_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// Resolves a `$ref` (or returns the schema itself).
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

#[test]
fn openapi_routes_are_the_served_routes() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let described = spec_routes(&spec);
    let b = default_vm();
    // Every path the spec names, and paths a user might guess.
    let mut paths: BTreeSet<String> = described.iter().map(|(_, p)| p.clone()).collect();
    for guess in [
        "/",
        "/vm/info",
        "/vm/pause",
        "/vm/memory/limits",
        "/actions",
        "/machine-config",
        "/balloon/stats",
        "/metrics/",
    ] {
        paths.insert(guess.to_string());
    }
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
            // A body no route accepts (unknown field): probing never changes the VM.
            let body = (method != "GET").then_some(&br#"{"probe": true}"#[..]);
            let answer = http(&b.sock, method, path, body);
            if answer.status != 404 && answer.status != 405 {
                if method != "GET" {
                    assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
                }
                served.insert((method.to_string(), path.clone()));
            }
        }
    }
    assert_eq!(
        served, described,
        "served routes (left) vs openapi.yaml (right)"
    );
    assert_eq!(b.json("/vm")["state"], "running");

    // Every operation has an id, and every JSON body and answer has an example.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["operationId"].is_string(), "{method} {path}");
            if let Some(body) = op.get("requestBody") {
                let examples = body["content"]["application/json"]["examples"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path}: no request examples"));
                assert!(!examples.is_empty());
            }
            // Only Firecracker's PUT /balloon, refused after boot, has no success answer.
            let Some((_, ok)) = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(code, _)| code.starts_with('2'))
            else {
                assert_eq!((method.as_str(), path.as_str()), ("put", "/balloon"));
                continue;
            };
            if let Some(content) = ok.get("content") {
                let (_, media) = content.as_object().unwrap().iter().next().unwrap();
                assert!(media.get("example").is_some(), "{method} {path}");
            }
        }
    }
}

#[test]
fn openapi_examples_are_accepted_and_answers_match_the_schemas() {
    let spec = spec();
    // Big enough for every example (limit 256 MiB, balloon 64 MiB), with statistics on.
    let mut b = ballast(Launch {
        memory: "512M",
        balloon: "stats_polling_interval_s=1",
        ..Launch::default()
    });

    // The JSON answers have exactly the fields their schemas describe, and so do the examples.
    for (path, item) in spec["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        let media = &op["responses"]["200"]["content"]["application/json"];
        if media.is_null() {
            continue;
        }
        let schema = resolve(&spec, &media["schema"]);
        let properties: BTreeSet<&String> =
            schema["properties"].as_object().unwrap().keys().collect();
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        let answer = b.json(path);
        let fields: BTreeSet<&String> = answer.as_object().unwrap().keys().collect();
        assert!(
            fields.is_subset(&properties),
            "GET {path}: {fields:?} vs {properties:?}"
        );
        for field in &required {
            assert!(answer.get(field).is_some(), "GET {path} lacks {field}");
        }
        let example: BTreeSet<&String> = media["example"].as_object().unwrap().keys().collect();
        assert!(
            example.is_subset(&properties),
            "GET {path} example: {example:?}"
        );
    }

    // Every request example is accepted; the VM actions go last, in the order that makes sense.
    let mut actions = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(examples) =
                op["requestBody"]["content"]["application/json"]["examples"].as_object()
            else {
                continue;
            };
            for (name, example) in examples {
                let body = serde_json::to_string(&example["value"]).unwrap();
                if path == "/vm/actions" {
                    actions.push((name.clone(), body));
                    continue;
                }
                let answer = b.send(&method.to_uppercase(), path, &body);
                // An operation without a success answer answers what the spec lists.
                let expected = if op["responses"].get("204").is_some()
                    || op["responses"].get("200").is_some()
                {
                    2
                } else {
                    4
                };
                assert_eq!(
                    answer.status / 100,
                    expected,
                    "{method} {path} example {name} ({body}): {}",
                    answer.body
                );
            }
        }
    }
    let names: Vec<&str> = actions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pause", "resume", "shutdown"]);
    for (name, body) in &actions {
        let answer = b.send("PUT", "/vm/actions", body);
        assert_eq!(answer.status, 204, "action example {name}: {}", answer.body);
    }
    let status = b
        .wait_exit(Duration::from_secs(10))
        .expect("Shutdown ends ballast");
    assert_eq!(status.code(), Some(0));
}
