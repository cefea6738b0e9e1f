//! Configuration errors: one line naming the file, the key and what was expected.

/// Why a configuration cannot be used. `Display` is one line, e.g.
/// `node1.yml: postgresql.listen: expected "host[,host]:port", found "localhost"`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is missing or has an unusable value. `file` is empty when the value did not come
    /// from a file (e.g. [`crate::DynamicConfig::validate`] on a REST request body).
    #[error("{}{path}: {message}", file_prefix(.file))]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    /// The file is not valid YAML; `message` includes the line and column.
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: String, message: String },
    /// A problem with the configuration as a whole (empty, no DCS section, ...).
    #[error("{file}: {message}")]
    Source { file: String, message: String },
    /// A configuration file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn file_prefix(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}
