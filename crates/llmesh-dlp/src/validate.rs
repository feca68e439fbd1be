//! Checks that turn a regex candidate into a finding: checksums, ranges and
//! the context around the match (so `1.2.3.4.5` holds no IP address and
//! `v1.2.3.4` no version-shaped one).

/// True when `c` joins a number to the next one: `1.2`, `1-2`, `1/2`, `1,2`.
fn is_joiner(c: u8) -> bool {
    matches!(c, b'.' | b'-' | b'/' | b',')
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The match at `start` is not the tail of a longer token: the byte before
/// is not a letter, digit or `_`, nor a joiner (`.-/,`) right after a digit.
pub(crate) fn left_clean(text: &[u8], start: usize) -> bool {
    let Some(&prev) = start.checked_sub(1).and_then(|i| text.get(i)) else {
        return true;
    };
    if is_word(prev) {
        return false;
    }
    if is_joiner(prev) {
        if let Some(&before) = start.checked_sub(2).and_then(|i| text.get(i)) {
            return !before.is_ascii_digit();
        }
    }
    true
}

/// The match ending at `end` is not the head of a longer token: the byte
/// after is not a letter, digit or `_`, nor a joiner followed by a digit.
pub(crate) fn right_clean(text: &[u8], end: usize) -> bool {
    let Some(&next) = text.get(end) else {
        return true;
    };
    if is_word(next) {
        return false;
    }
    if is_joiner(next) {
        if let Some(&after) = text.get(end + 1) {
            return !after.is_ascii_digit();
        }
    }
    true
}

/// Luhn checksum over ASCII digits (other bytes are skipped).
pub(crate) fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &c in s.iter().rev() {
        if !c.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(c - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

/// IBAN length by country (ISO 13616 registry).
pub(crate) fn iban_len(cc: &[u8]) -> Option<usize> {
    let n = match cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FO" | b"GL" | b"NL" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HU" | b"LB" | b"PL" | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        _ => return None,
    };
    Some(n)
}

/// ISO 7064 mod-97-10 over a compact IBAN (no spaces, upper case).
pub(crate) fn iban_mod97(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem = 0u32;
    for &c in tail.iter().chain(head) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// `AAA-GG-SSSS` outside the ranges never issued.
pub(crate) fn ssn_ok(s: &[u8]) -> bool {
    let [a0, a1, a2, b'-', g0, g1, b'-', s0, s1, s2, s3] = *s else {
        return false;
    };
    let area = [a0, a1, a2];
    area != *b"000"
        && area != *b"666"
        && a0 != b'9'
        && [g0, g1] != *b"00"
        && [s0, s1, s2, s3] != *b"0000"
}

/// True when the word right before `start` (skipping spaces, `:` and `=`)
/// says the number that follows is a version.
pub(crate) fn after_version_word(text: &[u8], start: usize) -> bool {
    let head = &text[..start];
    let trimmed_len = head
        .iter()
        .rposition(|&c| !matches!(c, b' ' | b':' | b'=' | b'\t'))
        .map_or(0, |i| i + 1);
    let head = &head[..trimmed_len];
    let word_start = head
        .iter()
        .rposition(|&c| !c.is_ascii_alphabetic() && c != b'.')
        .map_or(0, |i| i + 1);
    let word = &head[word_start..];
    if word.len() > 8 {
        return false;
    }
    let mut buf = [0u8; 8];
    for (d, s) in buf.iter_mut().zip(word) {
        *d = s.to_ascii_lowercase();
    }
    matches!(
        &buf[..word.len()],
        b"version" | b"ver" | b"ver." | b"v." | b"release" | b"build" | b"firmware"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_known_numbers() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"4111 1111 1111 1111"));
        assert!(luhn(b"378282246310005"));
        assert!(!luhn(b"4111111111111112"));
    }

    #[test]
    fn iban_checksums() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB29NWBK60161331926819"));
        assert!(!iban_mod97(b"DE88370400440532013000"));
        assert_eq!(iban_len(b"DE"), Some(22));
        assert_eq!(iban_len(b"ZZ"), None);
    }

    #[test]
    fn ssn_ranges() {
        assert!(ssn_ok(b"123-45-6789"));
        assert!(!ssn_ok(b"000-12-3456"));
        assert!(!ssn_ok(b"666-12-3456"));
        assert!(!ssn_ok(b"912-12-3456"));
        assert!(!ssn_ok(b"123-00-3456"));
        assert!(!ssn_ok(b"123-45-0000"));
    }

    #[test]
    fn context() {
        assert!(left_clean(b"a 1.2", 2));
        assert!(!left_clean(b"a1.2", 1));
        assert!(!left_clean(b"1.2.3", 2));
        assert!(left_clean(b"x.2", 2));
        assert!(right_clean(b"1.2. end", 3));
        assert!(!right_clean(b"1.2.3", 3));
        assert!(after_version_word(b"version 1.2.3.4", 8));
        assert!(after_version_word(b"Version: 1.2.3.4", 9));
        assert!(!after_version_word(b"server at 1.2.3.4", 10));
    }
}
