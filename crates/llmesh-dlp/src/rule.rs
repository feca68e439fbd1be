//! The configuration an [`Engine`](crate::Engine) is built from: one
//! [`ClassRule`] per data class, as the policy compiler derives them from an
//! `LLMDataPolicy`.

use std::fmt;

/// What happens to text of a class found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Replace each value with a placeholder such as `[EMAIL_1]`, the same
    /// value with the same placeholder within one request, and keep the
    /// original in the request's [`Vault`](crate::Vault) so the answer can
    /// be restored.
    Redact,
    /// Replace each value with `[EMAIL]`; nothing is kept, nothing restored.
    Mask,
    /// Refuse the request. Only the classes and counts are reported.
    Block,
    /// Leave the text as is and report the class, so routing keeps the
    /// request to providers cleared for it.
    Restrict,
}

impl Action {
    /// The lowercase name used in policy and audit (`redact`, `mask`,
    /// `block`, `restrict`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Mask => "mask",
            Action::Block => "block",
            Action::Restrict => "restrict",
        }
    }

    /// Parses [`Action::name`].
    pub fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "redact" => Action::Redact,
            "mask" => Action::Mask,
            "block" => Action::Block,
            "restrict" => Action::Restrict,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The built-in detectors. Each finds candidates with a regex and confirms
/// them with a validator (checksum, ranges, a parser) before they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    /// `local@domain.tld`.
    Email,
    /// International numbers (`+` or `00`, 8 to 15 digits) and common
    /// national formats (`(555) 123-4567`, `555-123-4567`, `020 7946 0958`);
    /// never a run of digits without separators unless it starts with `+`.
    Phone,
    /// 13 to 19 digits starting with 2 to 6, in one piece or in groups of
    /// four (or 4-6-4/5) split by spaces or dashes, passing the Luhn check.
    PaymentCard,
    /// Country code, check digits and BBAN of the country's length (groups
    /// of four may be split by single spaces), passing the mod-97 check.
    Iban,
    /// US social security number `AAA-GG-SSSS`, excluding area 000, 666 and
    /// 9xx, group 00 and serial 0000.
    UsSsn,
    /// IPv4 (dotted quad, no leading zeros, not part of a longer dotted
    /// number nor after the word `version`) and IPv6 (incl. compressed and
    /// IPv4-mapped forms), confirmed by the standard library's parsers.
    IpAddress,
    /// Credentials: AWS access key ids (`AKIA`/`ASIA`), OpenAI (`sk-`,
    /// `sk-proj-`) and Anthropic (`sk-ant-`) keys, GitHub tokens (`ghp_`,
    /// `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Google API keys
    /// (`AIza`), Slack tokens (`xox[baprs]-`), JWTs and PEM private key
    /// blocks.
    Secret,
}

impl Builtin {
    /// Every built-in detector, in the order [`Builtin::name`] lists them.
    pub const ALL: [Builtin; 7] = [
        Builtin::Email,
        Builtin::Phone,
        Builtin::PaymentCard,
        Builtin::Iban,
        Builtin::UsSsn,
        Builtin::IpAddress,
        Builtin::Secret,
    ];

    /// The class name used in policy: `email`, `phone`, `payment-card`,
    /// `iban`, `us-ssn`, `ip-address`, `secret`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::PaymentCard => "payment-card",
            Builtin::Iban => "iban",
            Builtin::UsSsn => "us-ssn",
            Builtin::IpAddress => "ip-address",
            Builtin::Secret => "secret",
        }
    }

    /// Parses [`Builtin::name`].
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a class's detector comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassSource {
    /// One of the built-in detectors.
    Builtin(Builtin),
    /// Custom regexes (Rust `regex` syntax); a match of any of them is a
    /// finding. Empty matches are ignored.
    Patterns(Vec<String>),
    /// Words or phrases, matched on word boundaries. `case_insensitive`
    /// folds ASCII letters; for words with other letters the lower-case,
    /// upper-case and capitalised forms are matched too.
    Dictionary {
        /// The words or phrases (surrounding whitespace is ignored).
        words: Vec<String>,
        /// Match regardless of case.
        case_insensitive: bool,
    },
}

/// One data class of a policy: its name, how it is detected and what
/// happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRule {
    /// Class name: ASCII letters, digits, `-` and `_`, starting with a
    /// letter, at most 64 characters. Its upper-cased form with `-` turned
    /// into `_` is the placeholder label (`project-names` ->
    /// `[PROJECT_NAMES_1]`).
    pub class: String,
    /// The detector.
    pub source: ClassSource,
    /// What happens to findings.
    pub action: Action,
}

impl ClassRule {
    /// A rule for a built-in detector, named after it.
    pub fn builtin(builtin: Builtin, action: Action) -> ClassRule {
        ClassRule {
            class: builtin.name().to_string(),
            source: ClassSource::Builtin(builtin),
            action,
        }
    }
}

/// Checks a class name and returns its placeholder label.
pub(crate) fn label_of(class: &str) -> Result<String, &'static str> {
    if class.is_empty() {
        return Err("empty");
    }
    if class.len() > 64 {
        return Err("longer than 64 characters");
    }
    if !class.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("must start with an ASCII letter");
    }
    if !class
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("only ASCII letters, digits, '-' and '_' are allowed");
    }
    Ok(class
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect())
}
