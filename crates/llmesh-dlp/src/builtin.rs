//! The built-in detectors: a candidate regex and a validator that confirms
//! (and may narrow) each candidate. Where they run is decided in
//! `regions.rs`.
//!
//! Regexes use ASCII classes and ASCII word boundaries (`(?-u:\b)`) only,
//! so the regex crate can always run them on its DFAs, whatever the text.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;

use crate::rule::Builtin;
use crate::validate::{
    after_version_word, iban_len, iban_mod97, left_clean, luhn, right_clean, ssn_ok,
};

const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9_][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?-u:\b)";

const PHONE: &str = concat!(
    // International: + or 00, country code, then up to six groups.
    r"(?:\+|(?-u:\b)00)[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,6}",
    // North American: (555) 123-4567, 555-123-4567, 1-800-555-1234.
    r"|(?:\([2-9][0-9]{2}\) ?|(?-u:\b)(?:1[-. ])?[2-9][0-9]{2}[-. ])[0-9]{3}[-. ][0-9]{4}",
    // National with a trunk 0: 020 7946 0958, 07700 900123, 01 23 45 67 89.
    r"|(?-u:\b)0[1-9][0-9]{0,4}(?:[ -][0-9]{2,8}){1,4}",
);

const CARD: &str = r"(?-u:\b)[2-6][0-9]{3}(?:[ -]?[0-9]){9,15}(?-u:\b)";

const IBAN: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,8}(?: ?[A-Z0-9]{1,3})?";

const SSN: &str = r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)";

const IPV4: &str = r"(?-u:\b)[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?-u:\b)";

const IPV6: &str = r"(?:(?-u:\b)[0-9A-Fa-f]{1,4}:|:)(?:[0-9A-Fa-f]{0,4}:){1,7}(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?";

const SECRET: &str = concat!(
    r"(?-u:\b)(?:",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"|sk-[A-Za-z0-9_-]{20,}",
    r"|gh[pousr]_[A-Za-z0-9]{36,}",
    r"|github_pat_[A-Za-z0-9_]{22,}",
    r"|AIza[0-9A-Za-z_-]{35}",
    r"|xox[baprs]-[A-Za-z0-9-]{10,}",
    r"|eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",
    r")",
    // A PEM private key, or its head when the END line is missing.
    r"|-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----",
    r"(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s]*)",
);

/// Confirms a candidate; returns the range that counts (possibly narrower,
/// or for emails wider).
type Validator = fn(&str, Range<usize>) -> Option<Range<usize>>;

/// One compiled candidate regex of a built-in class, with its validator.
#[derive(Debug)]
pub(crate) struct Detector {
    regex: Regex,
    validate: Validator,
}

impl Detector {
    fn new(re: &str, validate: Validator) -> Result<Detector, regex::Error> {
        Ok(Detector {
            regex: Regex::new(re)?,
            validate,
        })
    }

    /// Calls `out` with every confirmed match inside `window` of `text`.
    /// The regex sees only the window; validators see the whole text, so
    /// they judge the real context around a candidate.
    pub(crate) fn find(
        &self,
        text: &str,
        window: Range<usize>,
        out: &mut impl FnMut(Range<usize>),
    ) {
        let base = window.start;
        let Some(hay) = text.get(window) else {
            return;
        };
        let mut pos = 0;
        while pos <= hay.len() {
            let Some(m) = self.regex.find_at(hay, pos) else {
                break;
            };
            match (self.validate)(text, base + m.start()..base + m.end()) {
                Some(r) if r.end > r.start => {
                    pos = r.end.saturating_sub(base).max(m.start() + 1);
                    out(r);
                }
                // Rejected: a valid candidate may still start inside it.
                _ => pos = m.start() + hay[m.start()..].chars().next().map_or(1, char::len_utf8),
            }
            while !hay.is_char_boundary(pos) {
                pos += 1;
            }
        }
    }
}

/// The compiled detectors of one built-in class.
pub(crate) fn detectors(b: Builtin) -> Result<Vec<Detector>, regex::Error> {
    Ok(match b {
        Builtin::Email => vec![Detector::new(EMAIL, email)?],
        Builtin::Phone => vec![Detector::new(PHONE, phone)?],
        Builtin::PaymentCard => vec![Detector::new(CARD, card)?],
        // Run on windows that start at a possible IBAN: anchored.
        Builtin::Iban => vec![Detector::new(&format!("^(?:{IBAN})"), iban)?],
        Builtin::UsSsn => vec![Detector::new(SSN, ssn)?],
        Builtin::IpAddress => vec![Detector::new(IPV4, ipv4)?, Detector::new(IPV6, ipv6)?],
        Builtin::Secret => vec![Detector::new(SECRET, secret)?],
    })
}

fn email(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    // The regex's local part is ASCII: take in letters before it too
    // (`jörg@example.de`), so no part of an address is left in the clear.
    let head = &text[..r.start];
    let start = head
        .char_indices()
        .rev()
        .take_while(|&(_, c)| c.is_alphanumeric() || "._%+-".contains(c))
        .last()
        .map_or(r.start, |(i, _)| i);
    let start =
        start + text[start..r.start].len() - text[start..r.start].trim_start_matches('.').len();
    if r.end - start > 254 {
        return None;
    }
    Some(start..r.end)
}

fn digits(s: &[u8]) -> usize {
    s.iter().filter(|c| c.is_ascii_digit()).count()
}

fn phone(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let s = &b[r.clone()];
    let n = digits(s);
    let ok = match s.first()? {
        b'+' => (8..=15).contains(&n),
        // 00 + country code: only with separators, or it is a plain number.
        b'0' if s.starts_with(b"00") => {
            (10..=17).contains(&n) && s.iter().any(|c| matches!(c, b' ' | b'-' | b'.'))
        }
        b'0' => (9..=12).contains(&n),
        _ => n == 10 || n == 11,
    };
    // The tail of a longer run of digit groups (`DE89 3704 0044 0532 ...`)
    // is not a phone number.
    if r.start >= 2 && b[r.start - 1] == b' ' && b[r.start - 2].is_ascii_digit() {
        return None;
    }
    let first = s.iter().copied().find(u8::is_ascii_digit);
    let all_same = s
        .iter()
        .filter(|c| c.is_ascii_digit())
        .all(|&c| Some(c) == first);
    (ok && !all_same && left_clean(b, r.start) && right_clean(b, r.end)).then_some(r)
}

fn card(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    if r.start > 0 && b[r.start - 1] == b'+' || !left_clean(b, r.start) {
        return None;
    }
    let mut end = r.end;
    loop {
        let s = &b[r.start..end];
        if card_shape(s) && luhn(s) && right_clean(b, end) {
            return Some(r.start..end);
        }
        // A card followed by more digits (CVV, expiry): drop the last group.
        let cut = s.iter().rposition(|&c| c == b' ' || c == b'-')?;
        end = r.start + cut;
        if digits(&b[r.start..end]) < 13 {
            return None;
        }
    }
}

/// 13-19 digits, in one piece or in groups (4-4-4-4[-3], 4-4-4-1, 4-6-5,
/// 4-6-4) with one kind of separator, and not one digit repeated.
fn card_shape(s: &[u8]) -> bool {
    let n = digits(s);
    if !(13..=19).contains(&n) {
        return false;
    }
    let first = s[0];
    if s.iter().all(|&c| c == first || !c.is_ascii_digit()) {
        return false;
    }
    let sep = s.iter().copied().find(|c| !c.is_ascii_digit());
    let Some(sep) = sep else {
        return true;
    };
    let mut groups = [0usize; 8];
    let mut count = 0;
    for g in s.split(|&c| c == sep) {
        if count == groups.len() || g.is_empty() || !g.iter().all(u8::is_ascii_digit) {
            return false;
        }
        groups[count] = g.len();
        count += 1;
    }
    let groups = &groups[..count];
    match groups {
        [4, 6, 4] | [4, 6, 5] => true,
        [head @ .., last] => head.iter().all(|&g| g == 4) && (1..=4).contains(last),
        [] => false,
    }
}

fn iban(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let s = &b[r.clone()];
    let want = iban_len(&s[..2])?;
    let mut compact = [0u8; 34];
    let mut n = 0;
    let mut end = r.start;
    for (i, &c) in s.iter().enumerate() {
        if n == want {
            break;
        }
        if c != b' ' {
            compact[n] = c;
            n += 1;
            end = r.start + i + 1;
        }
    }
    if n < want || !iban_mod97(&compact[..n]) {
        return None;
    }
    let after_ok = !b.get(end).is_some_and(u8::is_ascii_alphanumeric);
    (after_ok && left_clean(b, r.start)).then_some(r.start..end)
}

fn ssn(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    (ssn_ok(&b[r.clone()]) && left_clean(b, r.start) && right_clean(b, r.end)).then_some(r)
}

fn ipv4(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let ok = text[r.clone()].parse::<Ipv4Addr>().is_ok()
        && left_clean(b, r.start)
        && right_clean(b, r.end)
        && !after_version_word(b, r.start);
    ok.then_some(r)
}

fn ipv6(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = text.as_bytes();
    let mut end = r.end;
    let mut s = &text[r.start..end];
    if s.ends_with(':') && !s.ends_with("::") {
        end -= 1;
        s = &text[r.start..end];
    }
    if !s.bytes().any(|c| c.is_ascii_digit()) || s.parse::<Ipv6Addr>().is_err() {
        return None;
    }
    let before_ok = r.start == 0 || {
        let p = b[r.start - 1];
        !(p.is_ascii_alphanumeric() || p == b'_' || p == b':' || p == b'.')
    };
    let after_ok = match b.get(end) {
        None => true,
        Some(&c) => !(c.is_ascii_alphanumeric() || c == b'_' || c == b':') && right_clean(b, end),
    };
    (before_ok && after_ok).then_some(r.start..end)
}

fn secret(text: &str, r: Range<usize>) -> Option<Range<usize>> {
    let s = &text[r.clone()];
    if let Some(rest) = s.strip_prefix("sk-") {
        // Real keys are random base62/base64url: all three character kinds.
        // Prose such as "sk-learn-2023-tutorial-series" has no upper case.
        let body = rest
            .strip_prefix("ant-")
            .or_else(|| rest.strip_prefix("proj-"))
            .unwrap_or(rest);
        let upper = body.bytes().any(|c| c.is_ascii_uppercase());
        let lower = body.bytes().any(|c| c.is_ascii_lowercase());
        let digit = body.bytes().any(|c| c.is_ascii_digit());
        if !(upper && lower && digit) {
            return None;
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests;
