//! Kubernetes resource quantities (`500m`, `4Gi`, `1.5`, `2e3`), as
//! `k8s.io/apimachinery/pkg/api/resource` reads them: a signed decimal, then
//! one binary (Ki…Ei) or decimal (n, u, m, k, M…E) suffix or an exponent.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const BINARY: &[(&str, i32)] = &[
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];
const DECIMAL: &[(&str, i32)] = &[
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// The value of a quantity in base units (cores, bytes), or why it is not one.
pub fn value(text: &str) -> Result<f64, String> {
    let bad = || format!("{text:?} is not a quantity (like 500m, 2, 4Gi, 1e3)");
    let digits_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '+' || c == '-') && i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(digits_end);
    let unsigned = number.trim_start_matches(['+', '-']);
    if unsigned.is_empty() || unsigned == "." || unsigned.matches('.').count() > 1 {
        return Err(bad());
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = if let Some((_, p)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        2f64.powi(*p)
    } else if let Some((_, p)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        10f64.powi(*p)
    } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let digits = exp.trim_start_matches(['+', '-']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        10f64.powi(exp.parse::<i32>().map_err(|_| bad())?)
    } else {
        return Err(bad());
    };
    let v = n * scale;
    if v.is_finite() { Ok(v) } else { Err(bad()) }
}

/// A flag value that must be a quantity above zero.
pub fn positive_flag(text: &str) -> Result<Quantity, String> {
    match value(text)? {
        v if v > 0.0 => Ok(Quantity(text.to_owned())),
        _ => Err(format!("{text:?} must be more than zero")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_like_the_apiserver_reads_them() {
        for (text, want) in [
            ("1", 1.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            ("4Gi", 4.0 * 1024.0 * 1024.0 * 1024.0),
            ("128Mi", 134_217_728.0),
            ("2k", 2000.0),
            ("1E", 1e18),
            ("2e3", 2000.0),
            ("1E-3", 0.001),
            ("+3", 3.0),
            ("-1", -1.0),
            ("100u", 0.0001),
        ] {
            let got = value(text).unwrap_or(f64::NAN);
            assert!((got - want).abs() <= want.abs() * 1e-12, "{text}: {got}");
        }
        for text in [
            "", "Gi", "1.2.3", "1GB", "1 Gi", "1e", "1e+", ".", "1Ki2", "abc", "1ki",
        ] {
            assert!(value(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn a_resource_flag_is_a_positive_quantity() {
        assert_eq!(positive_flag("4Gi"), Ok(Quantity("4Gi".into())));
        assert!(positive_flag("0").is_err());
        assert!(positive_flag("-1").is_err());
        assert!(positive_flag("lots").is_err());
    }
}
