//! Custom classes from policy: regex patterns and dictionaries.
//!
//! A pattern with a literal prefix or suffix (`JIRA-[0-9]+`,
//! `[a-z]+\.corp\.example\.net`) runs on its own: the regex crate finds its
//! candidates with a literal prefilter at memchr/Teddy speed, far faster
//! than any shared automaton. Patterns without one share a single
//! `RegexSet` pass that tells which of them match at all; only those run
//! again for positions.
//!
//! Dictionaries are one Aho-Corasick automaton for the case-sensitive
//! words of all rules and one for the case-insensitive ones.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexSet};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::engine::Finding;
use crate::error::DlpError;
use crate::rule::ClassRule;

/// The custom patterns of all rules, each with its rule index.
#[derive(Debug)]
pub(crate) struct Patterns {
    literal: Vec<(usize, Regex)>,
    other: Vec<(usize, Regex)>,
    /// Over `other`, when it holds more than one pattern.
    set: Option<RegexSet>,
}

/// True when the regex crate can find `pattern`'s candidates with a
/// literal prefilter: all its matches start (or end) with the same two or
/// more bytes, or with one of at most 64 literals of three or more bytes
/// (`(?i)confidential`). Digit classes (`[0-9]{6}`) do not count: prose is
/// full of digits.
fn has_literal(pattern: &str) -> bool {
    let Ok(hir) = regex_syntax::parse(pattern) else {
        return false;
    };
    [ExtractKind::Prefix, ExtractKind::Suffix]
        .into_iter()
        .any(|kind| {
            let prefix = matches!(kind, ExtractKind::Prefix);
            let mut seq = Extractor::new().kind(kind).extract(&hir);
            let common = if prefix {
                seq.longest_common_prefix()
            } else {
                seq.longest_common_suffix()
            };
            if common.is_some_and(|c| c.len() >= 2) {
                return true;
            }
            if prefix {
                seq.optimize_for_prefix_by_preference();
            } else {
                seq.optimize_for_suffix_by_preference();
            }
            seq.len().is_some_and(|n| n <= 64) && seq.min_literal_len().is_some_and(|n| n >= 3)
        })
}

impl Patterns {
    /// Compiles `(rule index, pattern)` pairs; `None` when there are none.
    pub(crate) fn compile(
        rules: &[ClassRule],
        patterns: &[(usize, &str)],
    ) -> Result<Option<Patterns>, DlpError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let bad = |index: usize, p: &str, reason: String| DlpError::InvalidPattern {
            index,
            class: rules[index].class.clone(),
            pattern: p.to_string(),
            reason,
        };
        let mut literal = Vec::new();
        let mut other = Vec::new();
        let mut other_src = Vec::new();
        for &(index, p) in patterns {
            let re = Regex::new(p).map_err(|e| bad(index, p, e.to_string()))?;
            if has_literal(p) {
                literal.push((index, re));
            } else {
                other.push((index, re));
                other_src.push((index, p));
            }
        }
        let set = match other_src.as_slice() {
            [] | [_] => None,
            [(index, first), ..] => Some(RegexSet::new(other_src.iter().map(|(_, p)| p)).map_err(
                |e| {
                    bad(
                        *index,
                        first,
                        format!("the patterns together are too large: {e}"),
                    )
                },
            )?),
        };
        Ok(Some(Patterns {
            literal,
            other,
            set,
        }))
    }

    /// Number of patterns.
    pub(crate) fn len(&self) -> usize {
        self.literal.len() + self.other.len()
    }

    pub(crate) fn find(&self, text: &str, out: &mut Vec<Finding>) {
        let mut run = |rule: usize, re: &Regex| {
            for m in re.find_iter(text) {
                if !m.is_empty() {
                    out.push(Finding {
                        rule,
                        range: m.range(),
                    });
                }
            }
        };
        for (rule, re) in &self.literal {
            run(*rule, re);
        }
        match &self.set {
            None => {
                for (rule, re) in &self.other {
                    run(*rule, re);
                }
            }
            Some(set) => {
                for i in set.matches(text).iter() {
                    if let Some((rule, re)) = self.other.get(i) {
                        run(*rule, re);
                    }
                }
            }
        }
    }
}

/// A word or phrase of a dictionary, by Aho-Corasick pattern id.
#[derive(Debug, Clone, Copy)]
struct Word {
    rule: usize,
    /// The word starts (ends) with a word character, so the character
    /// before (after) a match must not be one.
    left: bool,
    right: bool,
}

/// One dictionary automaton.
#[derive(Debug)]
pub(crate) struct Dict {
    ac: AhoCorasick,
    words: Vec<Word>,
    /// Words and text are ASCII-lower-cased before matching.
    fold: bool,
}

/// Lower-case, upper-case and capitalised forms of a non-ASCII word, which
/// ASCII case folding would not match.
pub(crate) fn case_variants(w: &str) -> Vec<String> {
    let mut v = vec![w.to_lowercase(), w.to_uppercase()];
    let mut chars = w.chars();
    if let Some(first) = chars.next() {
        let mut cap: String = first.to_uppercase().collect();
        cap.push_str(&chars.as_str().to_lowercase());
        v.push(cap);
    }
    v.retain(|x| x != w);
    v.dedup();
    v
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Dict {
    /// Compiles `(rule index, word)` pairs into one automaton.
    pub(crate) fn compile(
        rules: &[ClassRule],
        words: &[(usize, String)],
        case_insensitive: bool,
    ) -> Result<Dict, DlpError> {
        // Case-insensitive: match lower-cased words in lower-cased text.
        // Aho-Corasick's own ASCII case folding gives up its prefilter and
        // runs 30x slower on prose; lower-casing ASCII keeps byte offsets.
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(words.iter().map(|(_, w)| {
                if case_insensitive {
                    w.to_ascii_lowercase()
                } else {
                    w.clone()
                }
            }))
            .map_err(|e| {
                let index = words.first().map_or(0, |w| w.0);
                DlpError::Dictionary {
                    index,
                    class: rules
                        .get(index)
                        .map_or_else(String::new, |r| r.class.clone()),
                    reason: e.to_string(),
                }
            })?;
        let words = words
            .iter()
            .map(|(rule, w)| Word {
                rule: *rule,
                left: w.chars().next().is_some_and(is_word_char),
                right: w.chars().next_back().is_some_and(is_word_char),
            })
            .collect();
        Ok(Dict {
            ac,
            words,
            fold: case_insensitive,
        })
    }

    /// Number of words (with their case variants).
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    pub(crate) fn find(&self, text: &str, out: &mut Vec<Finding>) {
        let folded;
        let hay: &[u8] = if self.fold {
            folded = text.to_ascii_lowercase();
            folded.as_bytes()
        } else {
            text.as_bytes()
        };
        // Overlapping matches, so that a longer phrase rejected for its
        // boundary does not hide a shorter word that fits.
        for m in self.ac.find_overlapping_iter(hay) {
            let Some(word) = self.words.get(m.pattern().as_usize()) else {
                continue;
            };
            let (s, e) = (m.start(), m.end());
            if !text.is_char_boundary(s) || !text.is_char_boundary(e) {
                continue;
            }
            if word.left && text[..s].chars().next_back().is_some_and(is_word_char) {
                continue;
            }
            if word.right && text[e..].chars().next().is_some_and(is_word_char) {
                continue;
            }
            out.push(Finding {
                rule: word.rule,
                range: s..e,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::has_literal;

    #[test]
    fn literal_patterns() {
        for p in [
            r"JIRA-[0-9]+",
            r"\bINC[0-9]{6}\b",
            r"[a-z]+\.corp\.example\.net",
            r"(?i)confidential",
            r"(?i)\b(?:confidential|internal only)\b",
            r"EMP-\d{6}",
        ] {
            assert!(has_literal(p), "{p}");
        }
        for p in [
            r"[A-Z]{2}[0-9]{6}",
            r"\w+",
            r"[0-9]+x",
            r"[0-9]{3}-[0-9]{4}",
        ] {
            assert!(!has_literal(p), "{p}");
        }
    }
}
