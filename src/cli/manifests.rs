//! Reading Kubernetes manifests from files (or `-` for stdin): multi-document YAML, each document with the
//! file and line it starts at, so that every error says where.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Invalid { path: String, line: usize, message: String },
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: String,
    /// 1-based line of the document's first line.
    pub line: usize,
    pub text: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
    #[serde(default)]
    metadata: HeaderMetadata,
}

#[derive(Default, Deserialize)]
struct HeaderMetadata {
    name: Option<String>,
    namespace: Option<String>,
}

impl Document {
    /// Parses the whole document as `T`; an error names the file and the line.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ManifestError> {
        serde_yaml_ng::from_str(&self.text).map_err(|e| self.error_at(&e))
    }

    pub fn error(&self, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid { path: self.path.clone(), line: self.line, message: message.into() }
    }

    fn error_at(&self, error: &serde_yaml_ng::Error) -> ManifestError {
        let line = self.line + error.location().map_or(0, |l| l.line().saturating_sub(1));
        ManifestError::Invalid { path: self.path.clone(), line, message: error.to_string() }
    }
}

/// Every non-empty document of `path` (`-`: standard input).
pub fn read_documents(path: &str) -> Result<Vec<Document>, ManifestError> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ManifestError::Read { path: "stdin".into(), source })?;
        text
    } else {
        std::fs::read_to_string(Path::new(path)).map_err(|source| ManifestError::Read { path: path.into(), source })?
    };
    split_documents(path, &text)
}

pub fn split_documents(path: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    let flush = |start: usize, body: &mut String, documents: &mut Vec<Document>| -> Result<(), ManifestError> {
        let has_content = body.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if has_content {
            documents.push(document(path, start, std::mem::take(body))?);
        }
        body.clear();
        Ok(())
    };
    for (index, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            flush(start, &mut current, &mut documents)?;
            start = index + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(start, &mut current, &mut documents)?;
    Ok(documents)
}

fn document(path: &str, line: usize, text: String) -> Result<Document, ManifestError> {
    let mut doc = Document {
        path: path.to_string(),
        line,
        text,
        kind: String::new(),
        name: String::new(),
        namespace: String::new(),
    };
    let header: Header = doc.parse()?;
    doc.kind = header.kind.ok_or_else(|| doc.error("a Kubernetes object needs a `kind`"))?;
    doc.name = header.metadata.name.unwrap_or_default();
    doc.namespace = header.metadata.namespace.unwrap_or_else(|| "default".to_string());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_remembers_where_each_starts() {
        let text = "# comment\nkind: Pod\nmetadata: {name: a}\n---\n---\nkind: Deployment\nmetadata: {name: b, namespace: x}\n";
        let docs = split_documents("f.yaml", text).expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].line, docs[0].kind.as_str(), docs[0].namespace.as_str()), (1, "Pod", "default"));
        assert_eq!((docs[1].line, docs[1].name.as_str(), docs[1].namespace.as_str()), (6, "b", "x"));
    }

    #[test]
    fn errors_give_the_file_and_the_line() {
        let text = "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata:\n  name: [unclosed\n";
        let error = split_documents("pods.yaml", text).expect_err("malformed").to_string();
        assert!(error.starts_with("pods.yaml:6:"), "{error}");
        let error = split_documents("pods.yaml", "metadata: {name: a}\n").expect_err("no kind").to_string();
        assert_eq!(error, "pods.yaml:1: a Kubernetes object needs a `kind`");
    }
}
