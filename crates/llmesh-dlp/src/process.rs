//! Applying a policy to a request: find every class in the request's text,
//! decide block / restrict, and replace redacted and masked values.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;

use memchr::memchr_iter;
use serde_json::Value;

use crate::engine::{Engine, Finding, Rule};
use crate::json_text;
use crate::rule::Action;
use crate::vault::Vault;
use crate::walk::{self, Api, Text, TextKind};

/// How many values of a class a request held. For audit: no value is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    /// The class name.
    pub class: String,
    /// Its action.
    pub action: Action,
    /// Number of values found (each occurrence counts).
    pub count: usize,
}

/// What [`Engine::process`] did to a request.
///
/// Nothing here holds a found value except the [`Vault`], whose `Debug`
/// shows placeholders only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Classes found, in rule order, with counts and actions.
    pub found: Vec<ClassCount>,
    /// A class with [`Action::Block`] was found: refuse the request. The
    /// body was then left unchanged and the vault is empty.
    pub blocked: bool,
    /// Classes with [`Action::Restrict`] found, in rule order: send the
    /// request only to providers cleared for all of them.
    pub restricted: Vec<String>,
    /// Placeholders put in the request, to restore the answer.
    pub vault: Vault,
}

impl Outcome {
    /// True when no class was found.
    pub fn is_clean(&self) -> bool {
        self.found.is_empty()
    }

    /// The classes that blocked the request (empty unless `blocked`).
    pub fn blocking(&self) -> impl Iterator<Item = &ClassCount> {
        self.found.iter().filter(|c| c.action == Action::Block)
    }
}

impl fmt::Display for Outcome {
    /// `email=2 (redact), secret=1 (block)`, or `clean`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.found.is_empty() {
            return f.write_str("clean");
        }
        for (i, c) in self.found.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={} ({})", c.class, c.count, c.action)?;
        }
        Ok(())
    }
}

/// Findings in one walked string, or in one string value of JSON text.
struct Hit {
    text: usize,
    /// The string literal (quotes included) inside JSON text.
    literal: Option<Range<usize>>,
    /// Its decoded value, when it differs from the literal's inside.
    decoded: Option<String>,
    findings: Range<usize>,
}

impl Engine {
    /// Applies the policy to a request body of format `api`, in place: scans
    /// exactly the text fields listed in the crate docs (message text, tool
    /// definitions, documents, user ids, image URLs, ...), then
    ///
    /// - if a `block` class was found, leaves the body as it is and returns
    ///   `blocked`;
    /// - otherwise replaces `redact` values with placeholders (recorded in
    ///   the returned vault) and `mask` values with `[LABEL]`, leaving
    ///   `restrict` values in place.
    ///
    /// When nothing is found the body is untouched and the only allocation
    /// is the list of walked strings.
    pub fn process(&self, body: &mut Value, api: Api) -> Outcome {
        if self.is_empty() {
            return Outcome::default();
        }
        let mut texts = Vec::new();
        walk::request_texts(body, api, &mut texts);
        self.process_texts(texts)
    }

    /// [`process`](Engine::process) over a body and `more` plain texts
    /// scanned with it (the header values a request forwards): findings
    /// are counted, numbered and vaulted together, so one value gets one
    /// placeholder wherever it appears.
    pub fn process_with(&self, body: &mut Value, api: Api, more: &mut [String]) -> Outcome {
        if self.is_empty() {
            return Outcome::default();
        }
        let mut texts = Vec::new();
        walk::request_texts(body, api, &mut texts);
        texts.extend(more.iter_mut().map(|text| Text {
            kind: TextKind::Plain,
            text,
        }));
        self.process_texts(texts)
    }

    /// [`process`](Engine::process) for one plain text.
    pub fn process_text(&self, text: &mut String) -> Outcome {
        self.process_texts(vec![Text {
            kind: TextKind::Plain,
            text,
        }])
    }

    fn process_texts(&self, mut texts: Vec<Text<'_>>) -> Outcome {
        let mut all: Vec<Finding> = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        let mut scratch = Vec::new();
        for (ti, t) in texts.iter().enumerate() {
            let literals = match t.kind {
                TextKind::JsonText => json_text::string_values(t.text),
                TextKind::Plain => None,
            };
            let Some(literals) = literals else {
                self.scan_into(t.text, &mut scratch);
                if !scratch.is_empty() {
                    let s = all.len();
                    all.append(&mut scratch);
                    hits.push(Hit {
                        text: ti,
                        literal: None,
                        decoded: None,
                        findings: s..all.len(),
                    });
                }
                continue;
            };
            for lit in literals {
                let Some(value) = json_text::decode(&t.text[lit.clone()]) else {
                    continue;
                };
                self.scan_into(&value, &mut scratch);
                if !scratch.is_empty() {
                    let s = all.len();
                    all.append(&mut scratch);
                    hits.push(Hit {
                        text: ti,
                        literal: Some(lit),
                        decoded: match value {
                            std::borrow::Cow::Owned(v) => Some(v),
                            std::borrow::Cow::Borrowed(_) => None,
                        },
                        findings: s..all.len(),
                    });
                }
            }
        }
        if hits.is_empty() {
            return Outcome::default();
        }

        let mut counts = vec![0usize; self.rules.len()];
        for f in &all {
            counts[f.rule] += 1;
        }
        let mut outcome = Outcome::default();
        for (rule, &count) in self.rules.iter().zip(&counts) {
            if count == 0 {
                continue;
            }
            outcome.found.push(ClassCount {
                class: rule.class.clone(),
                action: rule.action,
                count,
            });
            match rule.action {
                Action::Block => outcome.blocked = true,
                Action::Restrict => outcome.restricted.push(rule.class.clone()),
                Action::Redact | Action::Mask => {}
            }
        }
        let rewrites =
            |f: &Finding| matches!(self.rules[f.rule].action, Action::Redact | Action::Mask);
        if outcome.blocked || !all.iter().any(rewrites) {
            return outcome;
        }

        let mut assign = Assign::new(&self.rules, &counts, &texts);
        let mut i = 0;
        while i < hits.len() {
            // The hits of one text are consecutive.
            let ti = hits[i].text;
            let n = hits[i..].iter().take_while(|h| h.text == ti).count();
            let group = &hits[i..i + n];
            i += n;
            if !group
                .iter()
                .any(|h| all[h.findings.clone()].iter().any(rewrites))
            {
                continue;
            }
            let src: &str = texts[ti].text;
            let mut new = String::with_capacity(src.len() + 16);
            let mut copied = 0;
            for h in group {
                let findings = &all[h.findings.clone()];
                match &h.literal {
                    None => apply(src, findings, &mut assign, &mut new),
                    Some(lit) => {
                        new.push_str(&src[copied..lit.start]);
                        let value = match &h.decoded {
                            Some(v) => v.as_str(),
                            None => &src[lit.start + 1..lit.end - 1],
                        };
                        let mut redacted = String::with_capacity(value.len() + 16);
                        apply(value, findings, &mut assign, &mut redacted);
                        new.push('"');
                        json_text::escape_into(&redacted, &mut new);
                        new.push('"');
                        copied = lit.end;
                    }
                }
            }
            if group[0].literal.is_some() {
                new.push_str(&src[copied..]);
            }
            *texts[ti].text = new;
        }
        outcome.vault = assign.into_vault();
        outcome
    }
}

/// Appends `src` to `out` with the redacted and masked findings replaced.
fn apply(src: &str, findings: &[Finding], assign: &mut Assign<'_>, out: &mut String) {
    let mut copied = 0;
    for f in findings {
        let rule = &assign.rules[f.rule];
        match rule.action {
            Action::Redact => {
                out.push_str(&src[copied..f.range.start]);
                out.push_str(assign.placeholder(f.rule, &src[f.range.clone()]));
            }
            Action::Mask => {
                out.push_str(&src[copied..f.range.start]);
                out.push('[');
                out.push_str(&rule.label);
                out.push(']');
            }
            Action::Block | Action::Restrict => continue,
        }
        copied = f.range.end;
    }
    out.push_str(&src[copied..]);
}

/// Placeholder numbering for one request: per class from 1, the same value
/// the same placeholder, skipping numbers whose placeholder the request
/// already contains literally (so restoring never turns the user's own
/// `[EMAIL_1]` into a value).
struct Assign<'e> {
    rules: &'e [Rule],
    by_value: Vec<HashMap<String, String>>,
    next: Vec<u32>,
    reserved: HashSet<(usize, u32)>,
}

impl<'e> Assign<'e> {
    fn new(rules: &'e [Rule], counts: &[usize], texts: &[Text<'_>]) -> Assign<'e> {
        // Labels of the classes about to get placeholders. One pass over
        // the `[`s of the request finds the placeholders it already holds.
        let labels: HashMap<&str, usize> = rules
            .iter()
            .enumerate()
            .filter(|(i, r)| counts[*i] > 0 && r.action == Action::Redact)
            .map(|(i, r)| (r.label.as_str(), i))
            .collect();
        let longest = labels.keys().map(|l| l.len()).max().unwrap_or(0) + 12;
        let mut reserved = HashSet::new();
        for t in texts {
            let b = t.text.as_bytes();
            for at in memchr_iter(b'[', b) {
                let Some(close) = b
                    .get(at + 1..b.len().min(at + longest))
                    .and_then(|w| w.iter().position(|&c| c == b']'))
                else {
                    continue;
                };
                let inner = &t.text[at + 1..at + 1 + close];
                let Some((label, n)) = inner.rsplit_once('_') else {
                    continue;
                };
                if let (Some(&rule), Ok(n)) = (labels.get(label), n.parse::<u32>()) {
                    reserved.insert((rule, n));
                }
            }
        }
        Assign {
            rules,
            by_value: vec![HashMap::new(); rules.len()],
            next: vec![0; rules.len()],
            reserved,
        }
    }

    fn placeholder(&mut self, rule: usize, value: &str) -> &str {
        if !self.by_value[rule].contains_key(value) {
            let n = loop {
                self.next[rule] += 1;
                if !self.reserved.contains(&(rule, self.next[rule])) {
                    break self.next[rule];
                }
            };
            let p = format!("[{}_{}]", self.rules[rule].label, n);
            self.by_value[rule].insert(value.to_string(), p);
        }
        self.by_value[rule].get(value).map_or("", String::as_str)
    }

    fn into_vault(self) -> Vault {
        let entries = self
            .by_value
            .into_iter()
            .flat_map(|m| m.into_iter().map(|(value, p)| (p, value)))
            .collect();
        Vault::from_entries(entries)
    }
}
