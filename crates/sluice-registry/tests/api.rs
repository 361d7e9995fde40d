//! The registry's REST API over HTTP: an in-process server on 127.0.0.1:0,
//! driven with reqwest, checked against Confluent's shapes and error codes.

use serde_json::{json, Value};
use sluice_registry::Registry;

const USER_V1: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"name","type":"string"}]}"#;
/// USER_V1 written differently (whitespace, key order, `{"type": "string"}`).
const USER_V1_REFORMATTED: &str = r#"{
    "namespace": "com.example",
    "fields": [ { "type": {"type": "string"}, "name": "name" } ],
    "name": "User",
    "type": "record"
}"#;
/// Adds a field with a default: compatible under BACKWARD.
const USER_V2: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"name","type":"string"},{"name":"email","type":["null","string"],"default":null}]}"#;
/// Adds a field without a default: incompatible under BACKWARD.
const USER_V2_NO_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"name","type":"string"},{"name":"age","type":"int"}]}"#;

struct Server {
    base: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(registry: Registry) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        sluice_registry::serve(listener, registry)
            .await
            .expect("serve");
    });
    Server {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        task,
    }
}

async fn start_in_memory() -> Server {
    start(Registry::in_memory().expect("in-memory registry")).await
}

impl Server {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert_eq!(
            content_type, "application/vnd.schemaregistry.v1+json",
            "content type of a {status} response"
        );
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(self.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string()),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.client
                .put(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Registers an Avro schema; returns its id (panics on failure).
    async fn register(&self, subject: &str, schema: &str) -> i64 {
        let (status, body) = self
            .post(
                &format!("/subjects/{subject}/versions"),
                json!({ "schema": schema }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["id"].as_i64().expect("id")
    }
}

fn assert_error(response: (u16, Value), status: u16, error_code: u64) {
    let (actual_status, body) = response;
    assert_eq!(actual_status, status, "{body}");
    assert_eq!(body["error_code"], json!(error_code), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn register_fetch_and_reregister() {
    let server = start_in_memory().await;
    let id = server.register("users-value", USER_V1).await;
    assert_eq!(id, 1);

    assert_eq!(server.get("/subjects").await, (200, json!(["users-value"])));
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1]))
    );
    let expected = json!({"subject": "users-value", "version": 1, "id": 1, "schema": USER_V1});
    assert_eq!(
        server.get("/subjects/users-value/versions/1").await,
        (200, expected.clone())
    );
    assert_eq!(
        server.get("/subjects/users-value/versions/latest").await,
        (200, expected)
    );
    // The raw schema, and the schema by id (no schemaType for AVRO).
    let (status, raw) = server.get("/subjects/users-value/versions/1/schema").await;
    assert_eq!(status, 200);
    assert_eq!(raw, serde_json::from_str::<Value>(USER_V1).unwrap());
    assert_eq!(
        server.get("/schemas/ids/1").await,
        (200, json!({ "schema": USER_V1 }))
    );

    // The same schema again, even written differently, is the same version.
    assert_eq!(server.register("users-value", USER_V1).await, 1);
    assert_eq!(server.register("users-value", USER_V1_REFORMATTED).await, 1);
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1]))
    );

    // A new compatible version gets a new id and version 2.
    let id2 = server.register("users-value", USER_V2).await;
    assert_eq!(id2, 2);
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1, 2]))
    );
    let (_, latest) = server.get("/subjects/users-value/versions/latest").await;
    assert_eq!(latest["version"], json!(2));
    assert_eq!(latest["id"], json!(2));

    // Lookup (POST /subjects/{subject}) finds the version of a schema.
    assert_eq!(
        server
            .post(
                "/subjects/users-value",
                json!({ "schema": USER_V1_REFORMATTED })
            )
            .await,
        (
            200,
            json!({"subject": "users-value", "version": 1, "id": 1, "schema": USER_V1})
        )
    );
    assert_error(
        server
            .post(
                "/subjects/users-value",
                json!({ "schema": USER_V2_NO_DEFAULT }),
            )
            .await,
        404,
        40403,
    );
    assert_error(
        server
            .post("/subjects/nobody", json!({ "schema": USER_V1 }))
            .await,
        404,
        40401,
    );
}

#[tokio::test]
async fn one_schema_under_two_subjects_shares_its_id() {
    let server = start_in_memory().await;
    let a = server.register("orders-value", USER_V1).await;
    let b = server
        .register("customers-value", USER_V1_REFORMATTED)
        .await;
    assert_eq!(a, b);
    assert_eq!(
        server.get("/subjects").await,
        (200, json!(["customers-value", "orders-value"]))
    );
    assert_eq!(
        server.get(&format!("/schemas/ids/{a}/versions")).await,
        (
            200,
            json!([
                {"subject": "customers-value", "version": 1},
                {"subject": "orders-value", "version": 1}
            ])
        )
    );
    assert_eq!(
        server.get(&format!("/schemas/ids/{a}/subjects")).await,
        (200, json!(["customers-value", "orders-value"]))
    );
    // A different schema gets the next id.
    assert_eq!(server.register("orders-value", USER_V2).await, a + 1);
    assert_eq!(
        server.get("/subjects?subjectPrefix=ord").await,
        (200, json!(["orders-value"]))
    );
}

#[tokio::test]
async fn backward_compatibility_is_enforced_and_none_allows_anything() {
    let server = start_in_memory().await;
    server.register("users-value", USER_V1).await;
    assert_eq!(
        server.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );

    // A new field without a default breaks BACKWARD: 409.
    let (status, body) = server
        .post(
            "/subjects/users-value/versions",
            json!({ "schema": USER_V2_NO_DEFAULT }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], json!(409));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Schema being registered is incompatible with an earlier schema for subject \"users-value\""
        ),
        "{message}"
    );
    assert!(
        message.contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
        "{message}"
    );
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1]))
    );

    // The compatibility endpoint says the same, with reasons when verbose.
    assert_eq!(
        server
            .post(
                "/compatibility/subjects/users-value/versions/latest",
                json!({ "schema": USER_V2_NO_DEFAULT })
            )
            .await,
        (200, json!({"is_compatible": false}))
    );
    let (status, verbose) = server
        .post(
            "/compatibility/subjects/users-value/versions/1?verbose=true",
            json!({ "schema": USER_V2_NO_DEFAULT }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(verbose["is_compatible"], json!(false));
    assert!(!verbose["messages"].as_array().unwrap().is_empty());
    assert_eq!(
        server
            .post(
                "/compatibility/subjects/users-value/versions/latest",
                json!({ "schema": USER_V2 })
            )
            .await,
        (200, json!({"is_compatible": true}))
    );
    assert_eq!(
        server
            .post(
                "/compatibility/subjects/users-value/versions",
                json!({ "schema": USER_V2 })
            )
            .await,
        (200, json!({"is_compatible": true}))
    );
    // A subject with no versions accepts anything against "latest".
    assert_eq!(
        server
            .post(
                "/compatibility/subjects/new-subject/versions/latest",
                json!({ "schema": USER_V2_NO_DEFAULT })
            )
            .await,
        (200, json!({"is_compatible": true}))
    );

    // Subject-level NONE lets it through.
    assert_error(server.get("/config/users-value").await, 404, 40408);
    assert_eq!(
        server.get("/config/users-value?defaultToGlobal=true").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        server
            .put("/config/users-value", json!({"compatibility": "NONE"}))
            .await,
        (200, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        server.get("/config/users-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_eq!(server.register("users-value", USER_V2_NO_DEFAULT).await, 2);
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1, 2]))
    );

    // Deleting the subject's level falls back to the global one.
    assert_eq!(
        server.delete("/config/users-value").await,
        (200, json!({"compatibilityLevel": "NONE"}))
    );
    assert_error(server.delete("/config/users-value").await, 404, 40401);

    // Global level changes; bad levels are 42203.
    assert_eq!(
        server
            .put("/config", json!({"compatibility": "full"}))
            .await,
        (200, json!({"compatibility": "FULL"}))
    );
    assert_eq!(
        server.get("/config").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_error(
        server
            .put("/config", json!({"compatibility": "SIDEWAYS"}))
            .await,
        422,
        42203,
    );
    assert_eq!(
        server.delete("/config").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(
        server.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
}

#[tokio::test]
async fn transitive_levels_check_every_version() {
    let server = start_in_memory().await;
    let v1 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    // v2 drops `a`; v3 adds it back as a string with a default: compatible
    // with v2 but not with v1 (int data read as string).
    let v2 = r#"{"type":"record","name":"R","fields":[]}"#;
    let v3 = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string","default":""}]}"#;
    server
        .put("/config/t", json!({"compatibility": "BACKWARD_TRANSITIVE"}))
        .await;
    server.register("t", v1).await;
    server.register("t", v2).await;
    assert_error(
        server
            .post("/subjects/t/versions", json!({ "schema": v3 }))
            .await,
        409,
        409,
    );
    server
        .put("/config/t", json!({"compatibility": "BACKWARD"}))
        .await;
    server.register("t", v3).await;
}

#[tokio::test]
async fn soft_and_permanent_deletes() {
    let server = start_in_memory().await;
    let id1 = server.register("s", USER_V1).await;
    let id2 = server.register("s", USER_V2).await;

    // Permanent before soft is refused.
    assert_error(
        server.delete("/subjects/s/versions/2?permanent=true").await,
        404,
        40407,
    );
    assert_eq!(
        server.delete("/subjects/s/versions/2").await,
        (200, json!(2))
    );
    assert_error(server.delete("/subjects/s/versions/2").await, 404, 40406);
    assert_error(server.get("/subjects/s/versions/2").await, 404, 40402);
    let (status, deleted) = server.get("/subjects/s/versions/2?deleted=true").await;
    assert_eq!(status, 200);
    assert_eq!(deleted["id"], json!(id2));
    assert_eq!(server.get("/subjects/s/versions").await, (200, json!([1])));
    assert_eq!(
        server.get("/subjects/s/versions?deleted=true").await,
        (200, json!([1, 2]))
    );
    let (_, latest) = server.get("/subjects/s/versions/latest").await;
    assert_eq!(latest["version"], json!(1));
    // Soft-deleted schemas stay readable by id.
    assert_eq!(server.get(&format!("/schemas/ids/{id2}")).await.0, 200);

    // Registering it again makes a new version with the same id.
    assert_eq!(server.register("s", USER_V2).await, id2);
    assert_eq!(
        server.get("/subjects/s/versions").await,
        (200, json!([1, 3]))
    );

    // Subject delete: soft, then again soft is 40404, then permanent.
    assert_error(
        server.delete("/subjects/s?permanent=true").await,
        404,
        40405,
    );
    assert_eq!(server.delete("/subjects/s").await, (200, json!([1, 3])));
    assert_error(server.get("/subjects/s/versions").await, 404, 40401);
    assert_eq!(server.get("/subjects").await, (200, json!([])));
    assert_eq!(
        server.get("/subjects?deleted=true").await,
        (200, json!(["s"]))
    );
    assert_error(server.delete("/subjects/s").await, 404, 40404);
    assert_eq!(
        server.delete("/subjects/s?permanent=true").await,
        (200, json!([1, 2, 3]))
    );
    assert_error(server.delete("/subjects/s").await, 404, 40401);
    assert_eq!(server.get("/subjects?deleted=true").await, (200, json!([])));
    // Permanently deleted: the ids are gone.
    assert_error(server.get(&format!("/schemas/ids/{id1}")).await, 404, 40403);

    // A subject starts again at version 1; the schema keeps its old id.
    assert_eq!(server.register("s", USER_V1).await, id1);
    assert_eq!(server.get("/subjects/s/versions").await, (200, json!([1])));
}

#[tokio::test]
async fn errors_have_confluent_codes() {
    let server = start_in_memory().await;
    server.register("s", USER_V1).await;

    assert_eq!(
        server.get("/subjects/nope/versions").await,
        (
            404,
            json!({"error_code": 40401, "message": "Subject 'nope' not found."})
        )
    );
    assert_error(server.get("/subjects/nope/versions/1").await, 404, 40401);
    assert_eq!(
        server.get("/subjects/s/versions/7").await,
        (
            404,
            json!({"error_code": 40402, "message": "Version 7 not found."})
        )
    );
    assert_eq!(
        server.get("/schemas/ids/99").await,
        (
            404,
            json!({"error_code": 40403, "message": "Schema 99 not found"})
        )
    );
    for bad in ["0", "abc", "2147483648", "-2"] {
        assert_error(
            server.get(&format!("/subjects/s/versions/{bad}")).await,
            422,
            42202,
        );
    }

    // Invalid schemas are 42201, with the parser's message.
    let (status, body) = server
        .post(
            "/subjects/s/versions",
            json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"a","type":"nosuchtype"}]}"#}),
        )
        .await;
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, json!(42201)),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("nosuchtype"),
        "{body}"
    );
    assert_error(
        server
            .post("/subjects/s/versions", json!({"schema": "not json"}))
            .await,
        422,
        42201,
    );
    assert_error(
        server.post("/subjects/s/versions", json!({})).await,
        422,
        42201,
    );
    assert_error(
        server
            .post(
                "/subjects/j/versions",
                json!({"schema": "{oops", "schemaType": "JSON"}),
            )
            .await,
        422,
        42201,
    );
    assert_error(
        server
            .post(
                "/subjects/j/versions",
                json!({"schema": "{}", "schemaType": "XML"}),
            )
            .await,
        422,
        42201,
    );

    // Bodies that are not JSON, or of another media type.
    let response = server
        .send(
            server
                .client
                .post(server.url("/subjects/s/versions"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_error(response, 400, 400);
    let response = server
        .send(
            server
                .client
                .post(server.url("/subjects/s/versions"))
                .header("content-type", "text/plain")
                .body(json!({"schema": USER_V1}).to_string()),
        )
        .await;
    assert_error(response, 415, 415);
    // Plain application/vnd.schemaregistry+json is accepted.
    let response = server
        .send(
            server
                .client
                .post(server.url("/subjects/s/versions"))
                .header("content-type", "application/vnd.schemaregistry+json")
                .body(json!({"schema": USER_V1}).to_string()),
        )
        .await;
    assert_eq!(response, (200, json!({"id": 1})));

    // Unknown paths and methods.
    assert_error(server.get("/no/such/path").await, 404, 404);
    assert_error(server.get("/schemas/ids/x").await, 404, 404);
    let response = server
        .send(server.client.patch(server.url("/subjects")))
        .await;
    assert_error(response, 405, 405);
}

#[tokio::test]
async fn json_schema_and_protobuf_are_stored_with_their_type() {
    let server = start_in_memory().await;
    assert_eq!(
        server.get("/schemas/types").await,
        (200, json!(["JSON", "PROTOBUF", "AVRO"]))
    );
    let json_schema = r#"{"type":"object","properties":{"a":{"type":"string"}}}"#;
    let (status, body) = server
        .post(
            "/subjects/j-value/versions",
            json!({"schema": json_schema, "schemaType": "JSON"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}")).await,
        (200, json!({"schema": json_schema, "schemaType": "JSON"}))
    );
    let (_, version) = server.get("/subjects/j-value/versions/1").await;
    assert_eq!(version["schemaType"], json!("JSON"));

    let proto = "syntax = \"proto3\";\nmessage M { string a = 1; }\n";
    let (status, body) = server
        .post(
            "/subjects/p-value/versions",
            json!({"schema": proto, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}")).await,
        (200, json!({"schema": proto, "schemaType": "PROTOBUF"}))
    );
    // JSON and Protobuf changes are not checked (as NONE).
    let (status, _) = server
        .post(
            "/subjects/p-value/versions",
            json!({"schema": "syntax = \"proto3\";\nmessage M { int64 b = 2; }\n", "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(status, 200);
    // The same text as Avro is a different schema (and invalid here).
    assert_error(
        server
            .post("/subjects/p-value/versions", json!({"schema": proto}))
            .await,
        422,
        42201,
    );
}

#[tokio::test]
async fn avro_references_resolve_and_protect_what_they_reference() {
    let server = start_in_memory().await;
    let address = r#"{"type":"record","name":"Address","namespace":"com.example","fields":[{"name":"city","type":"string"}]}"#;
    server.register("address", address).await;
    let person = r#"{"type":"record","name":"Person","namespace":"com.example","fields":[{"name":"home","type":"com.example.Address"}]}"#;
    let references = json!([{"name": "com.example.Address", "subject": "address", "version": 1}]);

    // Without the reference the name is unknown.
    assert_error(
        server
            .post("/subjects/person/versions", json!({"schema": person}))
            .await,
        422,
        42201,
    );
    let (status, body) = server
        .post(
            "/subjects/person/versions",
            json!({"schema": person, "references": references}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(
        server.get(&format!("/schemas/ids/{id}")).await,
        (200, json!({"schema": person, "references": references}))
    );
    assert_eq!(
        server
            .get("/subjects/address/versions/1/referencedby")
            .await,
        (200, json!([id]))
    );
    // A reference to a version that does not exist is an invalid schema.
    assert_error(
        server
            .post(
                "/subjects/other/versions",
                json!({"schema": person, "references": [{"name": "com.example.Address", "subject": "address", "version": 5}]}),
            )
            .await,
        422,
        42201,
    );
    // The referenced version cannot be deleted while it is used.
    assert_error(
        server.delete("/subjects/address/versions/1").await,
        422,
        42206,
    );
    assert_error(server.delete("/subjects/address").await, 422, 42206);
    assert_eq!(server.delete("/subjects/person").await, (200, json!([1])));
    assert_eq!(
        server.delete("/subjects/address/versions/1").await,
        (200, json!(1))
    );
}

#[tokio::test]
async fn state_survives_reopening_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("schema-registry.db");
    {
        let server = start(Registry::open(&path).expect("open")).await;
        assert_eq!(server.register("users-value", USER_V1).await, 1);
        assert_eq!(server.register("users-value", USER_V2).await, 2);
        server
            .put("/config/users-value", json!({"compatibility": "FULL"}))
            .await;
        server.delete("/subjects/users-value/versions/2").await;
    }
    // The first server's task is aborted; give it a moment to drop its handle.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(path.exists());

    let server = start(Registry::open(&path).expect("reopen")).await;
    assert_eq!(
        server.get("/subjects/users-value/versions").await,
        (200, json!([1]))
    );
    assert_eq!(
        server.get("/schemas/ids/2").await,
        (200, json!({"schema": USER_V2}))
    );
    assert_eq!(
        server.get("/config/users-value").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    assert_eq!(server.register("users-value", USER_V1).await, 1);
    // Ids and versions continue where they were.
    let v3 = r#"{"type":"record","name":"User","namespace":"com.example","fields":[{"name":"name","type":"string"},{"name":"n","type":"int","default":0}]}"#;
    assert_eq!(server.register("users-value", v3).await, 3);
    let (_, latest) = server.get("/subjects/users-value/versions/latest").await;
    assert_eq!(latest["version"], json!(3));
}

#[tokio::test]
async fn router_nests_under_a_prefix() {
    let app = axum::Router::new().nest(
        "/registry",
        sluice_registry::router(Registry::in_memory().unwrap()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = reqwest::get(format!("http://{address}/registry/subjects"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "[]");
    task.abort();
}
