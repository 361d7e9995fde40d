"""Drives Sluice's schema registry with Confluent's own Python client.

Usage: python confluent_client.py http://127.0.0.1:PORT

Registers schemas, serializes a record with AvroSerializer and reads it back
with AvroDeserializer (each with a fresh client, so the schema really comes
from the registry), and checks lookups, compatibility and error codes as the
client reports them. Exits non-zero on the first failed check.

Needs confluent-kafka 2.16.1 with the schema registry and Avro extras (see
docs/schema-registry.md for the pinned package list).
"""

import json
import struct
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

USER_V1 = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "favorite_number", "type": ["null", "int"], "default": None},
        ],
    }
)
# Adds a field with a default: BACKWARD compatible.
USER_V2 = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "favorite_number", "type": ["null", "int"], "default": None},
            {"name": "favorite_color", "type": "string", "default": "green"},
        ],
    }
)
# Adds a field without a default: not BACKWARD compatible.
USER_BAD = json.dumps(
    {
        "type": "record",
        "name": "User",
        "namespace": "com.example",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "age", "type": "int"},
        ],
    }
)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def expect_error(call, status, code, what):
    try:
        result = call()
    except SchemaRegistryError as error:
        check(
            error.http_status_code == status and error.error_code == code,
            f"{what}: HTTP {status}, error code {code} (got {error.http_status_code}/{error.error_code}: {error.error_message})",
        )
        return error
    raise AssertionError(f"{what}: expected error {code}, got {result!r}")


def main(url):
    client = SchemaRegistryClient({"url": url})
    topic = "users"
    subject = f"{topic}-value"

    # Register, re-register (a fresh client: no cache), share across subjects.
    id1 = client.register_schema(subject, Schema(USER_V1, "AVRO"))
    check(isinstance(id1, int) and id1 > 0, f"registered {subject} as id {id1}")
    again = SchemaRegistryClient({"url": url}).register_schema(subject, Schema(USER_V1, "AVRO"))
    check(again == id1, "registering the same schema again returns the same id")
    other = SchemaRegistryClient({"url": url}).register_schema("other-value", Schema(USER_V1, "AVRO"))
    check(other == id1, "the same schema under another subject shares the id")

    fetched = SchemaRegistryClient({"url": url}).get_schema(id1)
    check(fetched.schema_type == "AVRO", "get_schema reports AVRO")
    check(json.loads(fetched.schema_str) == json.loads(USER_V1), "get_schema returns the schema")

    latest = client.get_latest_version(subject)
    check(
        (latest.subject, latest.version, latest.schema_id) == (subject, 1, id1),
        "get_latest_version: subject, version 1, id",
    )
    check(client.get_versions(subject) == [1], "get_versions")
    check(sorted(client.get_subjects()) == ["other-value", subject], "get_subjects")
    found = SchemaRegistryClient({"url": url}).lookup_schema(subject, Schema(USER_V1, "AVRO"))
    check((found.schema_id, found.version) == (id1, 1), "lookup_schema finds version 1")
    check("AVRO" in client.get_schema_types(), "get_schema_types lists AVRO")

    # Serialize with the Confluent wire format and read it back.
    serializer = AvroSerializer(
        SchemaRegistryClient({"url": url}),
        USER_V1,
        conf={"auto.register.schemas": True},
    )
    context = SerializationContext(topic, MessageField.VALUE)
    record = {"name": "Alyssa", "favorite_number": 256}
    payload = serializer(record, context)
    magic, schema_id = struct.unpack(">bI", payload[:5])
    check(magic == 0 and schema_id == id1, f"the payload starts with magic byte 0 and id {id1}")
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": url}))
    check(deserializer(payload, context) == record, "AvroDeserializer reads the record back")

    # Compatibility: the default BACKWARD refuses a field without a default.
    check(client.get_compatibility() == "BACKWARD", "the global level is BACKWARD")
    check(
        client.test_compatibility(subject, Schema(USER_V2, "AVRO")) is True,
        "test_compatibility accepts a field with a default",
    )
    check(
        client.test_compatibility(subject, Schema(USER_BAD, "AVRO")) is False,
        "test_compatibility refuses a field without a default",
    )
    expect_error(
        lambda: client.register_schema(subject, Schema(USER_BAD, "AVRO")),
        409,
        409,
        "registering an incompatible schema",
    )
    id2 = client.register_schema(subject, Schema(USER_V2, "AVRO"))
    check(id2 != id1 and client.get_versions(subject) == [1, 2], "a compatible version is added")

    # A record written with v2 still reads with the deserializer.
    serializer2 = AvroSerializer(SchemaRegistryClient({"url": url}), USER_V2)
    record2 = {"name": "Ben", "favorite_number": None, "favorite_color": "red"}
    payload2 = serializer2(record2, context)
    check(struct.unpack(">bI", payload2[:5])[1] == id2, "v2 records carry the v2 id")
    check(deserializer(payload2, context) == record2, "AvroDeserializer reads a v2 record")

    check(
        client.set_compatibility(subject, "NONE") == {"compatibility": "NONE"},
        "set_compatibility on the subject",
    )
    check(client.get_compatibility(subject) == "NONE", "get_compatibility on the subject")
    id3 = client.register_schema(subject, Schema(USER_BAD, "AVRO"))
    check(client.get_version(subject, 3).schema_id == id3, "NONE accepts the incompatible schema")

    # JSON Schema is stored with its type.
    json_schema = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    json_id = client.register_schema("json-value", Schema(json_schema, "JSON"))
    check(
        SchemaRegistryClient({"url": url}).get_schema(json_id).schema_type == "JSON",
        "a JSON schema comes back as JSON",
    )

    # Errors, as the client reports them.
    expect_error(lambda: client.get_latest_version("nobody"), 404, 40401, "an unknown subject")
    expect_error(lambda: client.get_version(subject, 99), 404, 40402, "an unknown version")
    expect_error(lambda: client.get_schema(987654), 404, 40403, "an unknown schema id")
    expect_error(
        lambda: client.register_schema("bad-value", Schema('{"type": "nosuchtype"}', "AVRO")),
        422,
        42201,
        "an invalid Avro schema",
    )
    expect_error(
        lambda: SchemaRegistryClient({"url": url}).lookup_schema(subject, Schema(json.dumps({"type": "string"}), "AVRO")),
        404,
        40403,
        "looking up a schema the subject does not have",
    )

    # Deletes.
    check(client.delete_version(subject, 3) == 3, "delete_version (soft)")
    expect_error(lambda: client.get_version(subject, 3), 404, 40402, "a soft-deleted version")
    check(client.delete_subject("other-value") == [1], "delete_subject (soft)")
    check(client.delete_subject("other-value", permanent=True) == [1], "delete_subject (permanent)")
    check("other-value" not in client.get_subjects(), "the deleted subject is gone")
    check(
        json.loads(SchemaRegistryClient({"url": url}).get_schema(id1).schema_str) == json.loads(USER_V1),
        "a schema still used by another subject stays readable",
    )
    print("confluent client interop: all checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: confluent_client.py REGISTRY_URL")
    main(sys.argv[1])
