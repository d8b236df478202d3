//! Diagnostics: errors that say where they happened, `PATH:LINE:COL: message`.
//!
//! Spec loading, validation and planning report every problem they find as a
//! [`Diagnostic`] and carry on, so a run reports all of them at once.

use std::fmt;

/// One problem, located in a spec file (or another input) where that is known.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file, relative to the specs directory (or as given for other inputs).
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub fn at(
        path: impl Into<String>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            path: path.into(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    pub fn in_file(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A problem that belongs to no file (a rule broken by what the state
    /// holds for an account no spec declares any more).
    pub fn general(message: impl Into<String>) -> Self {
        Diagnostic {
            path: String::new(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    /// A diagnostic at an [`Origin`](crate::desired::Origin).
    pub fn at_origin(origin: &crate::desired::Origin, message: impl Into<String>) -> Self {
        Diagnostic {
            path: origin.path.to_string(),
            line: Some(origin.line),
            column: Some(origin.column),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{}:{}: {}", self.path, line, column, self.message)
            }
            (Some(line), None) => write!(f, "{}:{}: {}", self.path, line, self.message),
            _ if self.path.is_empty() => f.write_str(&self.message),
            _ => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Several diagnostics, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
