//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`): enough to
//! refuse a malformed override and to compare a request with its limit.

use std::fmt;

/// A parsed quantity, kept as text (what goes into the pod) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    text: String,
    value: f64,
}

/// Why a quantity does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a quantity (such as 100m, 0.5, 64Mi or 1Gi)")]
pub struct BadQuantity(pub String);

const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

impl Quantity {
    /// Parses `<number><suffix>` where the suffix is a binary (`Ki`..`Ei`) or
    /// decimal (`n`, `u`, `m`, ``, `k`..`E`) SI suffix or an exponent (`e3`).
    pub fn parse(text: &str) -> Result<Quantity, BadQuantity> {
        let bad = || BadQuantity(text.to_string());
        if text.is_empty() || text.len() > 64 {
            return Err(bad());
        }
        let num_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
            .unwrap_or(text.len());
        let (num, suffix) = text.split_at(num_end);
        if num.is_empty() || num.starts_with('.') && num.len() == 1 || num.matches('.').count() > 1
        {
            return Err(bad());
        }
        let base: f64 = num.parse().map_err(|_| bad())?;
        let mult = if suffix.is_empty() {
            1.0
        } else if suffix == "E" {
            1e18
        } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
            let e: i32 = exp.parse().map_err(|_| bad())?;
            if !(-30..=30).contains(&e) {
                return Err(bad());
            }
            10f64.powi(e)
        } else {
            SUFFIXES
                .iter()
                .find(|(s, _)| *s == suffix)
                .map(|(_, m)| *m)
                .ok_or_else(bad)?
        };
        Ok(Quantity {
            text: text.to_string(),
            value: base * mult,
        })
    }

    /// The value in base units (cores, bytes).
    pub fn value(&self) -> f64 {
        self.value
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_forms_parse() {
        let v = |s: &str| Quantity::parse(s).map(|q| q.value());
        assert_eq!(v("100m"), Ok(0.1));
        assert_eq!(v("2"), Ok(2.0));
        assert_eq!(v("64Mi"), Ok(64.0 * 1_048_576.0));
        assert_eq!(v("1G"), Ok(1e9));
        assert_eq!(v("1e3"), Ok(1000.0));
        assert_eq!(v("0.5"), Ok(0.5));
    }

    #[test]
    fn garbage_is_refused() {
        for s in ["", "lots", "10MB", "-1", "1..2", ".", "5 Mi", "1e99"] {
            assert!(Quantity::parse(s).is_err(), "{s}");
        }
    }
}
