//! Schema fragments shared by the kinds: value patterns and the few
//! hand-written schemas the derive cannot make structural by itself.

/// A duration such as `250ms`, `10s`, `1m30s` or `2h` (what
/// `llmesh_policy::parse_duration` reads).
pub(crate) const DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// An HTTP header name (RFC 9110 token characters).
pub(crate) const HEADER_NAME: &str = r"^[A-Za-z0-9!#$%&'*+.^_|~-]+$";

/// A data class name: lowercase, DNS-label-like.
pub(crate) const CLASS_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Kubernetes object name (DNS subdomain), as for a Secret.
pub(crate) const OBJECT_NAME: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A key of a Kubernetes Secret.
pub(crate) const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";

/// A model name, or a prefix pattern ending in `*`.
pub(crate) const MODEL_PATTERN: &str = r"^[^*]+\*?$";

/// A USD amount as a decimal string: `50`, `12.50`.
pub(crate) const DECIMAL: &str = r"^[0-9]+(\.[0-9]+)?$";

/// A JSON Schema given in a resource: any object, kept as written (the
/// policy compiler checks that it is a schema).
pub(crate) fn json_schema_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
