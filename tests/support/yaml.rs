//! The one YAML splitter of the tests: a multi-document stream (manifests, CRDs, `helm template` output) into
//! its documents. (Included by tests/crds.rs by path, as that test needs no sandbox.)

/// Every non-empty document of a multi-document YAML stream; a document of comments only is empty.
pub fn parse_documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}
