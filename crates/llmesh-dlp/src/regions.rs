//! Where the built-in detectors run. Emails and secrets have a required
//! literal (`@`; `AKIA`, `sk-`, `-----BEGIN`, ...) that the regex crate's
//! prefilters find at memchr speed, so they run over the whole text. The
//! other detectors need digits, which prose has few of: one pass jumps from
//! digit to digit and marks small windows, and each detector runs only on
//! the windows that could hold one of its values:
//!
//! - a *numeric run* (digits joined by at most three of ` .-()+/` at a time,
//!   with a leading `+` or `(`) of 8+ digits for phones, 13+ for cards, 9+
//!   for SSNs, 4+ digits and 3+ dots for IPv4;
//! - a run starting right after two upper-case letters for IBANs (the
//!   window is the longest IBAN from those letters);
//! - a *hex run* (`[0-9A-Fa-f:.]`) around a colon, with a digit and two
//!   colons, for IPv6.
//!
//! Every value a detector's regex can match lies inside such a window, and
//! validators check the context outside it, so results are the same as a
//! whole-text search.

use std::ops::Range;

use memchr::memchr;

use crate::builtin::{detectors, Detector};
use crate::engine::Finding;
use crate::rule::Builtin;

/// Longest IBAN with a space every four characters.
const IBAN_WINDOW: usize = 34 + 8;

/// The enabled built-in detectors, each with its rule index.
#[derive(Debug, Default)]
pub(crate) struct Builtins {
    email: Option<(usize, Detector)>,
    phone: Option<(usize, Detector)>,
    card: Option<(usize, Detector)>,
    iban: Option<(usize, Detector)>,
    ssn: Option<(usize, Detector)>,
    ipv4: Option<(usize, Detector)>,
    ipv6: Option<(usize, Detector)>,
    secret: Option<(usize, Detector)>,
    enabled: Vec<(Builtin, usize)>,
}

impl Builtins {
    /// Enables `b` for rule `rule`. Returns the earlier rule when `b` was
    /// already enabled.
    pub(crate) fn enable(
        &mut self,
        b: Builtin,
        rule: usize,
    ) -> Result<Option<usize>, regex::Error> {
        if let Some(&(_, first)) = self.enabled.iter().find(|(x, _)| *x == b) {
            return Ok(Some(first));
        }
        let mut dets = detectors(b)?.into_iter();
        let mut next = || dets.next().map(|d| (rule, d));
        match b {
            Builtin::Email => self.email = next(),
            Builtin::Phone => self.phone = next(),
            Builtin::PaymentCard => self.card = next(),
            Builtin::Iban => self.iban = next(),
            Builtin::UsSsn => self.ssn = next(),
            Builtin::IpAddress => {
                self.ipv4 = next();
                self.ipv6 = next();
            }
            Builtin::Secret => self.secret = next(),
        }
        self.enabled.push((b, rule));
        Ok(None)
    }

    /// Number of enabled built-in classes.
    pub(crate) fn len(&self) -> usize {
        self.enabled.len()
    }

    fn digit_detectors(&self) -> bool {
        self.phone.is_some()
            || self.card.is_some()
            || self.iban.is_some()
            || self.ssn.is_some()
            || self.ipv4.is_some()
            || self.ipv6.is_some()
    }

    /// Pushes every built-in finding in `text` (unsorted, may overlap).
    pub(crate) fn find(&self, text: &str, out: &mut Vec<Finding>) {
        let b = text.as_bytes();
        if memchr(b'@', b).is_some() {
            run(&self.email, text, 0..b.len(), out);
        }
        run(&self.secret, text, 0..b.len(), out);
        if !self.digit_detectors() {
            return;
        }
        if self.ipv6.is_some() {
            // Hex runs around colons: a colon is rarer than a digit in prose.
            let mut i = 0;
            while let Some(off) = b.get(i..).and_then(|rest| memchr(b':', rest)) {
                let (span, colons) = hex_run(b, i + off);
                if colons >= 2 && b[span.clone()].iter().any(u8::is_ascii_digit) {
                    run(&self.ipv6, text, span.clone(), out);
                }
                i = span.end.max(i + off + 1);
            }
        }
        let mut i = 0;
        while let Some(off) = b
            .get(i..)
            .and_then(|rest| rest.iter().position(u8::is_ascii_digit))
        {
            let d0 = i + off;
            let n = numeric_run(b, d0);
            if n.digits >= 8 {
                run(&self.phone, text, n.range.clone(), out);
            }
            if n.digits >= 13 {
                run(&self.card, text, n.range.clone(), out);
            }
            if n.digits >= 9 {
                run(&self.ssn, text, n.range.clone(), out);
            }
            if n.digits >= 4 && n.dots >= 3 {
                run(&self.ipv4, text, n.range.clone(), out);
            }
            if self.iban.is_some()
                && d0 >= 2
                && b[d0 - 1].is_ascii_uppercase()
                && b[d0 - 2].is_ascii_uppercase()
                && b.get(d0 + 1).is_some_and(u8::is_ascii_digit)
            {
                let start = d0 - 2;
                let mut end = b.len().min(start + IBAN_WINDOW);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                run(&self.iban, text, start..end, out);
            }
            i = n.range.end.max(d0 + 1);
        }
    }
}

fn run(det: &Option<(usize, Detector)>, text: &str, window: Range<usize>, out: &mut Vec<Finding>) {
    if let Some((rule, d)) = det {
        d.find(text, window, &mut |range| {
            out.push(Finding { rule: *rule, range })
        });
    }
}

fn is_sep(c: u8) -> bool {
    matches!(c, b' ' | b'-' | b'.' | b'(' | b')' | b'+' | b'/')
}

struct NumericRun {
    range: Range<usize>,
    digits: usize,
    dots: usize,
}

/// The numeric run whose first digit is at `d0`.
fn numeric_run(b: &[u8], d0: usize) -> NumericRun {
    let mut start = d0;
    while start > 0 && start + 2 > d0 && matches!(b[start - 1], b'+' | b'(') {
        start -= 1;
    }
    let mut j = d0;
    let mut digits = 0;
    let mut dots = 0;
    loop {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
            digits += 1;
        }
        let mut k = j;
        while k < b.len() && k - j < 3 && is_sep(b[k]) {
            k += 1;
        }
        if k > j && b.get(k).is_some_and(u8::is_ascii_digit) {
            dots += b[j..k].iter().filter(|&&c| c == b'.').count();
            j = k;
        } else {
            break;
        }
    }
    // A phone may end with a bracketed group: `+44 (20)`.
    if b.get(j) == Some(&b')') {
        j += 1;
    }
    NumericRun {
        range: start..j,
        digits,
        dots,
    }
}

fn is_hexish(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// The hex run around the byte at `d`, and its number of colons.
fn hex_run(b: &[u8], d: usize) -> (Range<usize>, usize) {
    let mut s = d;
    while s > 0 && is_hexish(b[s - 1]) {
        s -= 1;
    }
    let mut e = d;
    while e < b.len() && is_hexish(b[e]) {
        e += 1;
    }
    let colons = b[s..e].iter().filter(|&&c| c == b':').count();
    (s..e, colons)
}

#[cfg(test)]
mod tests;
