use crate::{Action, Builtin, ClassRule, Engine};

fn found(b: Builtin, text: &str) -> Vec<String> {
    let engine = Engine::new(vec![ClassRule::builtin(b, Action::Redact)]).unwrap();
    engine
        .scan(text)
        .iter()
        .map(|f| text[f.range.clone()].to_string())
        .collect()
}

fn assert_finds(b: Builtin, text: &str, want: &[&str]) {
    assert_eq!(found(b, text), want, "{b} in {text:?}");
}

fn assert_none(b: Builtin, text: &str) {
    assert_eq!(found(b, text), Vec::<String>::new(), "{b} in {text:?}");
}

#[test]
fn email() {
    let b = Builtin::Email;
    assert_finds(
        b,
        "mail john.doe+tag@example.co.uk now",
        &["john.doe+tag@example.co.uk"],
    );
    assert_finds(b, "<a_b@x-y.io>, (c@d.org).", &["a_b@x-y.io", "c@d.org"]);
    assert_finds(b, "mailto:jane@corp.example", &["jane@corp.example"]);
    assert_none(b, "@handle and user@localhost and a@b.c");
    // Sloppy or non-ASCII local parts are still someone's address.
    assert_finds(
        b,
        "john..doe@example.com, .foo.@bar.com",
        &["john..doe@example.com", "foo.@bar.com"],
    );
    assert_none(b, "version 1.2@beta build");
}

#[test]
fn phone() {
    let b = Builtin::Phone;
    assert_finds(b, "call +1 (555) 123-4567 today", &["+1 (555) 123-4567"]);
    assert_finds(b, "UK: +44 20 7946 0958.", &["+44 20 7946 0958"]);
    assert_finds(b, "tel:+4915112345678", &["+4915112345678"]);
    assert_finds(b, "0044 20 7946 0958", &["0044 20 7946 0958"]);
    assert_finds(
        b,
        "office (555) 123-4567 or 555.987.6543",
        &["(555) 123-4567", "555.987.6543"],
    );
    assert_finds(b, "1-800-555-1234", &["1-800-555-1234"]);
    assert_finds(
        b,
        "ring 020 7946 0958 or 07700 900123",
        &["020 7946 0958", "07700 900123"],
    );
    assert_finds(b, "Paris 01 23 45 67 89", &["01 23 45 67 89"]);
    // Plain long numbers, dates, versions, IDs.
    assert_none(b, "order 5551234567 and 004915112345678");
    assert_none(b, "on 2024-01-15 at 10:30, 15.01.2024, 01-02-2024");
    assert_none(b, "version 1.2.3.4.5 and 10.0.19041.1");
    assert_none(b, "ssn 123-45-6789 and card 4111 1111 1111 1111");
    assert_none(b, "2+2 = 4 and +1 555");
    assert_none(b, "555-123-4567-89 and x555-123-4567");
    assert_none(b, "DE89 3704 0044 0532 0130 00");
}

#[test]
fn payment_card() {
    let b = Builtin::PaymentCard;
    assert_finds(b, "card 4111 1111 1111 1111 exp", &["4111 1111 1111 1111"]);
    assert_finds(b, "4111-1111-1111-1111", &["4111-1111-1111-1111"]);
    assert_finds(b, "amex 3782 822463 10005", &["3782 822463 10005"]);
    assert_finds(b, "5555555555554444,", &["5555555555554444"]);
    assert_finds(b, "4111 1111 1111 1111 123", &["4111 1111 1111 1111"]);
    // Luhn failures, wrong grouping, too short or long, repeated digits.
    assert_none(b, "4111 1111 1111 1112");
    assert_none(b, "4111111111111112");
    assert_none(b, "41 11 11 11 11 11 11 11");
    assert_none(b, "411111111111");
    assert_none(b, "41111111111111111111111");
    assert_none(b, "order id 1234567890123 shipped");
    assert_none(b, "+44 20 7946 0958 and x4111111111111111");
}

#[test]
fn iban() {
    let b = Builtin::Iban;
    assert_finds(
        b,
        "pay DE89 3704 0044 0532 0130 00 today",
        &["DE89 3704 0044 0532 0130 00"],
    );
    assert_finds(b, "GB29NWBK60161331926819.", &["GB29NWBK60161331926819"]);
    assert_finds(
        b,
        "FR1420041010050500013M02606",
        &["FR1420041010050500013M02606"],
    );
    assert_finds(
        b,
        "NL91 ABNA 0417 1643 00 and more",
        &["NL91 ABNA 0417 1643 00"],
    );
    assert_none(b, "DE88 3704 0044 0532 0130 00");
    assert_none(b, "XX89 3704 0044 0532 0130 00");
    assert_none(b, "DE89 3704 0044");
    assert_none(b, "DE89370400440532013000X");
}

#[test]
fn us_ssn() {
    let b = Builtin::UsSsn;
    assert_finds(b, "ssn 123-45-6789.", &["123-45-6789"]);
    assert_none(
        b,
        "666-12-3456 000-12-3456 912-34-5678 123-00-4567 123-45-0000",
    );
    assert_none(b, "1123-45-6789 123-45-67890 123-45-6789-1");
}

#[test]
fn ip_address() {
    let b = Builtin::IpAddress;
    assert_finds(
        b,
        "host 192.168.1.10, gw 10.0.0.1.",
        &["192.168.1.10", "10.0.0.1"],
    );
    assert_finds(
        b,
        "v6 2001:db8:85a3::8a2e:370:7334 up",
        &["2001:db8:85a3::8a2e:370:7334"],
    );
    assert_finds(b, "lo ::1 and fe80::1%eth0", &["::1", "fe80::1"]);
    assert_finds(b, "mapped ::ffff:192.0.2.1.", &["::ffff:192.0.2.1"]);
    assert_finds(b, "[2001:db8::1]:443", &["2001:db8::1"]);
    assert_none(b, "999.1.1.1 and 256.0.0.1 and 01.2.3.4");
    assert_none(
        b,
        "release 1.2.3.4.5, v1.2.3.4, version 1.2.3.4, version: 2.0.0.1",
    );
    assert_none(
        b,
        "at 12:30:45, mac 00:1a:2b:3c:4d:5e, std::io::Read, a::b, ::",
    );
}

#[test]
fn secret() {
    let b = Builtin::Secret;
    let keys = [
        concat!("AKIA", "IOSFODNN7EXAMPLE"),
        "ASIAY34FZKBOKMUTVV7A",
        concat!("sk-proj-", "Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789"),
        concat!("sk-ant-", "api03-AbCdEf0123456789_GhIjKlMn-OpQrStUv"),
        concat!("sk-", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJ"),
        concat!("ghp_", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
        concat!(
            "github_pat_",
            "11ABCDEFG0123456789_abcdefghijKLMNOPQRSTuvwxyz"
        ),
        concat!("AIza", "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
        concat!("xoxb-", "1234567890-0987654321-AbCdEfGhIjKl"),
        concat!(
            "eyJhbGciOiJIUzI1NiJ9.",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        ),
    ];
    for k in keys {
        assert_finds(b, &format!("key: {k} end"), &[k]);
    }
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK==\n-----END RSA PRIVATE KEY-----";
    assert_finds(b, &format!("here:\n{pem}\nthanks"), &[pem]);
    let head = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq";
    assert_finds(b, &format!("key follows: {head}"), &[head]);
    assert_none(
        b,
        "ask-me-anything-about-a-long-hyphenated-thing; task-force; sk-learn",
    );
    assert_none(b, "sk-learn-2023-tutorial-series-for-beginners");
    assert_none(
        b,
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    );
    assert_none(b, concat!("myAKIA", "IOSFODNN7EXAMPLE"));
}

#[test]
fn unicode_text_is_fine() {
    let t = "Grüße, schreib an jörg@example.de oder jorg@example.de — ☎ +49 30 1234567 😀";
    assert_finds(Builtin::Email, t, &["jörg@example.de", "jorg@example.de"]);
    assert_finds(Builtin::Phone, t, &["+49 30 1234567"]);
}
