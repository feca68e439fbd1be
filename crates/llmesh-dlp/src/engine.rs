//! The compiled policy: every class's detector built once, and the scan
//! that runs them over a text and resolves overlaps.
//!
//! One scan is: the built-in detectors (emails and secrets over the whole
//! text behind literal prefilters, the digit-based ones only on the small
//! windows around digits that could hold a value, see `regions.rs`), the
//! custom patterns (see `custom.rs`), and one Aho-Corasick pass per
//! dictionary automaton. Candidates are validated, then overlaps resolved:
//! the earliest start wins, then the longest, then the rule listed first.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use crate::custom::{case_variants, Dict, Patterns};
use crate::error::DlpError;
use crate::regions::Builtins;
use crate::rule::{label_of, Action, ClassRule, ClassSource};

/// One finding: which rule's class, and where in the scanned text (byte
/// offsets). Holds no text, so it can be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Index of the rule in the list given to [`Engine::new`].
    pub rule: usize,
    /// Byte range in the scanned text.
    pub range: Range<usize>,
}

/// The findings of one scan, sorted by position and not overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    items: Vec<Finding>,
}

impl Findings {
    /// The findings in text order.
    pub fn as_slice(&self) -> &[Finding] {
        &self.items
    }

    /// Iterates the findings in text order.
    pub fn iter(&self) -> std::slice::Iter<'_, Finding> {
        self.items.iter()
    }

    /// Number of findings.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<'a> IntoIterator for &'a Findings {
    type Item = &'a Finding;
    type IntoIter = std::slice::Iter<'a, Finding>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// A class as compiled: its name, placeholder label and action.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) class: String,
    pub(crate) label: String,
    pub(crate) action: Action,
}

/// A data policy compiled into detectors. Build it once per policy (it is
/// `Send + Sync`; share it in an `Arc`), then [`scan`](Engine::scan) text or
/// [`process`](Engine::process) whole request bodies.
pub struct Engine {
    pub(crate) rules: Vec<Rule>,
    builtins: Builtins,
    custom: Option<Patterns>,
    dicts: Vec<Dict>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field(
                "classes",
                &self
                    .rules
                    .iter()
                    .map(|r| (r.class.as_str(), r.action))
                    .collect::<Vec<_>>(),
            )
            .field("builtin_detectors", &self.builtins.len())
            .field(
                "custom_patterns",
                &self.custom.as_ref().map_or(0, Patterns::len),
            )
            .field(
                "dictionary_words",
                &self.dicts.iter().map(Dict::len).sum::<usize>(),
            )
            .finish()
    }
}

impl Engine {
    /// Compiles `rules`. Fails on the first invalid rule, naming its index
    /// (and the pattern, for a regex that does not compile).
    pub fn new(rules: Vec<ClassRule>) -> Result<Engine, DlpError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut builtins = Builtins::default();
        let mut patterns: Vec<(usize, &str)> = Vec::new();
        let mut dict_words: [Vec<(usize, String)>; 2] = [Vec::new(), Vec::new()];
        for (index, rule) in rules.iter().enumerate() {
            let label = label_of(&rule.class).map_err(|reason| DlpError::InvalidClassName {
                index,
                class: rule.class.clone(),
                reason,
            })?;
            if let Some(&first) = labels.get(&label) {
                return Err(DlpError::DuplicateClass {
                    index,
                    class: rule.class.clone(),
                    first,
                    other: rules[first].class.clone(),
                });
            }
            labels.insert(label.clone(), index);
            let empty = |what| DlpError::EmptySource {
                index,
                class: rule.class.clone(),
                what,
            };
            match &rule.source {
                ClassSource::Builtin(b) => {
                    let first =
                        builtins
                            .enable(*b, index)
                            .map_err(|e| DlpError::InvalidPattern {
                                index,
                                class: rule.class.clone(),
                                pattern: format!("<built-in {b}>"),
                                reason: e.to_string(),
                            })?;
                    if let Some(first) = first {
                        return Err(DlpError::DuplicateBuiltin {
                            index,
                            builtin: b.name(),
                            first,
                        });
                    }
                }
                ClassSource::Patterns(ps) => {
                    if ps.is_empty() {
                        return Err(empty("patterns"));
                    }
                    patterns.extend(ps.iter().map(|p| (index, p.as_str())));
                }
                ClassSource::Dictionary {
                    words,
                    case_insensitive,
                } => {
                    let before = dict_words[usize::from(*case_insensitive)].len();
                    for w in words.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
                        let slot = &mut dict_words[usize::from(*case_insensitive)];
                        slot.push((index, w.to_string()));
                        if *case_insensitive && !w.is_ascii() {
                            for v in case_variants(w) {
                                slot.push((index, v));
                            }
                        }
                    }
                    if dict_words[usize::from(*case_insensitive)].len() == before {
                        return Err(empty("dictionary"));
                    }
                }
            }
            compiled.push(Rule {
                class: rule.class.clone(),
                label,
                action: rule.action,
            });
        }
        let custom = Patterns::compile(&rules, &patterns)?;
        let mut dicts = Vec::new();
        for (ci, words) in dict_words.iter().enumerate() {
            if !words.is_empty() {
                dicts.push(Dict::compile(&rules, words, ci == 1)?);
            }
        }
        Ok(Engine {
            rules: compiled,
            builtins,
            custom,
            dicts,
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True for an engine without classes (every scan finds nothing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The class name of rule `rule` (as in [`Finding::rule`]).
    pub fn class(&self, rule: usize) -> Option<&str> {
        self.rules.get(rule).map(|r| r.class.as_str())
    }

    /// The action of rule `rule`.
    pub fn action(&self, rule: usize) -> Option<Action> {
        self.rules.get(rule).map(|r| r.action)
    }

    /// Finds every value of every class in `text`.
    pub fn scan(&self, text: &str) -> Findings {
        let mut items = Vec::new();
        self.scan_into(text, &mut items);
        Findings { items }
    }

    /// [`scan`](Engine::scan) into a reused vector (cleared first).
    pub(crate) fn scan_into(&self, text: &str, out: &mut Vec<Finding>) {
        out.clear();
        if text.is_empty() || self.rules.is_empty() {
            return;
        }
        self.builtins.find(text, out);
        if let Some(custom) = &self.custom {
            custom.find(text, out);
        }
        for dict in &self.dicts {
            dict.find(text, out);
        }
        resolve(out);
    }
}

/// Sorts candidates and drops those overlapping an earlier kept one:
/// earliest start first, then longest, then the rule listed first.
fn resolve(c: &mut Vec<Finding>) {
    if c.len() < 2 {
        return;
    }
    c.sort_unstable_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
            .then(a.rule.cmp(&b.rule))
    });
    let mut end = 0;
    c.retain(|f| {
        if f.range.start >= end {
            end = f.range.end;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests;
