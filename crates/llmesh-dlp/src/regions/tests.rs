use proptest::prelude::*;

use super::*;

#[test]
fn numeric_runs() {
    let t = b"call +1 (555) 123-4567, or 10.0.0.1 -- 12";
    let n = numeric_run(t, 6);
    assert_eq!(&t[n.range], b"+1 (555) 123-4567");
    assert_eq!(n.digits, 11);
    let n = numeric_run(t, 27);
    assert_eq!(&t[n.range.clone()], b"10.0.0.1");
    assert_eq!((n.digits, n.dots), (5, 3));
    // ", " is not a separator; four separators stop a run.
    assert_eq!(numeric_run(b"4567, 12", 0).range, 0..4);
    assert_eq!(numeric_run(b"4567 -- 12", 0).range, 0..4);
    assert_eq!(numeric_run(b"+44 (20) (1234)!", 1).range, 0..15);
}

#[test]
fn hex_runs() {
    let t = b"at [fe80::1]:443 now";
    let (r, colons) = hex_run(t, 6);
    assert_eq!(&t[r], b"fe80::1");
    assert_eq!(colons, 2);
}

fn all() -> &'static Builtins {
    static ALL: std::sync::OnceLock<Builtins> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut b = Builtins::default();
        for (i, k) in Builtin::ALL.into_iter().enumerate() {
            b.enable(k, i).expect("built-in regexes compile");
        }
        b
    })
}

/// The reference: every detector over the whole text.
fn whole_text(b: &Builtins, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    for det in [
        &b.email, &b.phone, &b.card, &b.ssn, &b.ipv4, &b.ipv6, &b.secret,
    ] {
        run(det, text, 0..text.len(), &mut out);
    }
    // The IBAN regex is anchored: try it at every position.
    for start in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        run(&b.iban, text, start..text.len(), &mut out);
    }
    sorted(out)
}

fn sorted(mut v: Vec<Finding>) -> Vec<Finding> {
    v.sort_unstable_by_key(|f| (f.range.start, f.range.end, f.rule));
    v.dedup();
    v
}

/// Pieces that make detectors fire, nearly fire, or touch each other.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,5}",
        "[ .()+/:-]{1,4}",
        "[A-Fa-f0-9:]{1,8}",
        "[A-Z]{1,3}[0-9]{1,3}",
        "[a-z ]{1,6}",
        Just("é".to_string()),
        prop::sample::select(vec![
            "+1 (555) 123-4567",
            "+44 20 7946 0958",
            "+44 (20) (1234)",
            "0044 20 7946 0958",
            "555-123-4567",
            "020 7946 0958",
            "01 23 45 67 89",
            "4111 1111 1111 1111",
            "4111111111111111",
            "3782 822463 10005",
            "DE89 3704 0044 0532 0130 00",
            "GB29NWBK60161331926819",
            "123-45-6789",
            "10.0.0.1",
            "192.168.1.10",
            "fe80::1",
            "::ffff:192.0.2.1",
            "2001:db8::8a2e:370:7334",
            "a@b.io",
            concat!("AKIA", "IOSFODNN7EXAMPLE"),
            "1.2.3.4.5",
        ])
        .prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Running detectors on windows finds exactly what running them over
    /// the whole text finds.
    #[test]
    fn windows_find_what_the_whole_text_holds(pieces in proptest::collection::vec(piece(), 0..12)) {
        let text: String = pieces.concat();
        let b = all();
        let mut got = Vec::new();
        b.find(&text, &mut got);
        prop_assert_eq!(sorted(got), whole_text(b, &text), "{:?}", text);
    }
}
