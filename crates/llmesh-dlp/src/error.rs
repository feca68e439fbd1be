//! Errors of compiling a policy into an [`Engine`](crate::Engine).
//!
//! Errors carry policy text (class names, patterns), never text that was
//! scanned: they are built before any request is seen.

/// Why [`Engine::new`](crate::Engine::new) refused a rule list. `index` is
/// the position of the offending rule in the list it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlpError {
    /// A custom pattern does not compile.
    #[error("rule {index} (class {class:?}): pattern {pattern:?} is not a valid regex: {reason}")]
    InvalidPattern {
        /// Position of the rule.
        index: usize,
        /// Its class.
        class: String,
        /// The pattern as given.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A class name cannot be turned into a placeholder label.
    #[error("rule {index}: class name {class:?} is invalid: {reason}")]
    InvalidClassName {
        /// Position of the rule.
        index: usize,
        /// The name as given.
        class: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two rules define the same class, or two classes would share a
    /// placeholder label (`a-b` and `a_b` are both `[A_B_n]`).
    #[error("rule {index}: class {class:?} clashes with class {other:?} of rule {first} (same name or same placeholder label)")]
    DuplicateClass {
        /// Position of the later rule.
        index: usize,
        /// Its class.
        class: String,
        /// Position of the earlier rule.
        first: usize,
        /// The earlier rule's class.
        other: String,
    },
    /// Two rules use the same built-in detector.
    #[error("rule {index}: built-in detector {builtin:?} is already used by rule {first}")]
    DuplicateBuiltin {
        /// Position of the later rule.
        index: usize,
        /// The detector's name.
        builtin: &'static str,
        /// Position of the earlier rule.
        first: usize,
    },
    /// A custom class with no pattern, or a dictionary with no word.
    #[error("rule {index} (class {class:?}): {what} is empty")]
    EmptySource {
        /// Position of the rule.
        index: usize,
        /// Its class.
        class: String,
        /// `"patterns"` or `"dictionary"`.
        what: &'static str,
    },
    /// The dictionaries could not be compiled (too large).
    #[error("rule {index} (class {class:?}): dictionary cannot be compiled: {reason}")]
    Dictionary {
        /// Position of the first dictionary rule of the failing automaton.
        index: usize,
        /// Its class.
        class: String,
        /// What the automaton builder said.
        reason: String,
    },
}
