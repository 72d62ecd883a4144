//! Pure decisions of the certificate manager: when to renew the serving
//! certificate, when to rotate the CA, and what goes into the caBundle.

use crate::certs::CertInfo;

/// A certificate is due for replacement once `fraction` of its lifetime has passed.
pub fn due(cert: &CertInfo, fraction: f64, now: i64) -> bool {
    now >= due_at(cert, fraction)
}

pub fn due_at(cert: &CertInfo, fraction: f64) -> i64 {
    let life = (cert.not_after - cert.not_before).max(0) as f64;
    cert.not_before + (life * fraction.clamp(0.0, 1.0)) as i64
}

/// The bundle the apiserver must trust: the current CA, plus the previous
/// one while it is still valid (serving certificates it signed may still be
/// in use by other replicas).
pub fn bundle(current_pem: &str, previous: Option<(&str, &CertInfo)>, now: i64) -> String {
    let mut out = current_pem.trim_end().to_owned();
    out.push('\n');
    if let Some((pem, info)) = previous
        && info.not_after > now
    {
        out.push_str(pem.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(nb: i64, na: i64) -> CertInfo {
        CertInfo {
            not_before: nb,
            not_after: na,
            serial: String::new(),
            der: vec![nb as u8],
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let c = info(0, 90);
        assert!(!due(&c, 2.0 / 3.0, 59));
        assert!(due(&c, 2.0 / 3.0, 60));
        assert_eq!(due_at(&c, 2.0 / 3.0), 60);
    }

    #[test]
    fn the_previous_ca_stays_in_the_bundle_until_it_expires() {
        let prev = info(0, 100);
        assert_eq!(bundle("NEW\n", Some(("OLD", &prev)), 99), "NEW\nOLD\n");
        assert_eq!(bundle("NEW", Some(("OLD", &prev)), 100), "NEW\n");
        assert_eq!(bundle("NEW", None, 0), "NEW\n");
    }
}
