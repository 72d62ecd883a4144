//! Marks only the reconciler can make, and the runner's notice token: HMAC
//! (SHA-256) under the reconciler's key (the Secret `--key-secret`, shared by
//! its replicas). Pure: the key comes from the driver.
//!
//! - A runner pod or Service carries `vteam.ambient-code/runner-mark`, the
//!   HMAC of its kind, namespace, name, session uid (and attempt): a tenant
//!   who copies labels and owner references cannot copy a valid mark onto
//!   another object, so nothing is adopted that the reconciler did not make.
//! - A runner's token (`AGUI_TOKEN`, sent back as `X-Ambient-Session-Token`
//!   with every notice) is the HMAC of the session uid and attempt: each
//!   attempt gets its own, and the reconciler can say it again after a
//!   restart without reading any Secret.

use ring::hmac;

/// The annotation holding an object's mark.
pub const MARK: &str = "vteam.ambient-code/runner-mark";

#[derive(Clone)]
pub struct Marker {
    key: hmac::Key,
}

impl std::fmt::Debug for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Marker(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

impl Marker {
    /// Keys shorter than 32 bytes are refused by the driver before this.
    pub fn new(secret: &[u8]) -> Self {
        Marker {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn sign(&self, parts: &[&str]) -> String {
        // Newlines cannot occur in Kubernetes names or uids: no two part
        // lists sign the same text.
        hex(hmac::sign(&self.key, parts.join("\n").as_bytes()).as_ref())
    }

    fn verify(&self, parts: &[&str], mark: &str) -> bool {
        let Some(tag) = unhex(mark) else {
            return false;
        };
        hmac::verify(&self.key, parts.join("\n").as_bytes(), &tag).is_ok()
    }

    pub fn pod_mark(&self, ns: &str, name: &str, session_uid: &str, attempt: i64) -> String {
        self.sign(&["pod", ns, name, session_uid, &attempt.to_string()])
    }

    pub fn pod_ok(
        &self,
        ns: &str,
        name: &str,
        session_uid: &str,
        attempt: i64,
        mark: &str,
    ) -> bool {
        self.verify(&["pod", ns, name, session_uid, &attempt.to_string()], mark)
    }

    pub fn service_mark(&self, ns: &str, name: &str, session_uid: &str) -> String {
        self.sign(&["service", ns, name, session_uid])
    }

    pub fn service_ok(&self, ns: &str, name: &str, session_uid: &str, mark: &str) -> bool {
        self.verify(&["service", ns, name, session_uid], mark)
    }

    /// The token the runner of `attempt` is started with and notices carry.
    pub fn token(&self, session_uid: &str, attempt: i64) -> String {
        self.sign(&["token", session_uid, &attempt.to_string()])
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_holds_for_its_object_only() {
        let m = Marker::new(&[7; 32]);
        let mark = m.pod_mark("team-a", "s1-runner-1", "uid-1", 1);
        assert!(m.pod_ok("team-a", "s1-runner-1", "uid-1", 1, &mark));
        for (ns, name, uid, attempt) in [
            ("team-b", "s1-runner-1", "uid-1", 1),
            ("team-a", "s2-runner-1", "uid-1", 1),
            ("team-a", "s1-runner-1", "uid-2", 1),
            ("team-a", "s1-runner-1", "uid-1", 2),
        ] {
            assert!(
                !m.pod_ok(ns, name, uid, attempt, &mark),
                "{ns} {name} {uid} {attempt}"
            );
        }
        assert!(!Marker::new(&[8; 32]).pod_ok("team-a", "s1-runner-1", "uid-1", 1, &mark));
        for junk in ["", "zz", "abc", &mark[..10]] {
            assert!(!m.pod_ok("team-a", "s1-runner-1", "uid-1", 1, junk));
        }
        // A pod's mark is not a Service's, nor a token.
        assert!(!m.service_ok("team-a", "s1-runner-1", "uid-1", &mark));
        assert_ne!(m.token("uid-1", 1), mark);
    }

    #[test]
    fn each_attempt_has_its_own_token_and_it_is_stable() {
        let m = Marker::new(&[7; 32]);
        assert_eq!(m.token("uid-1", 1), Marker::new(&[7; 32]).token("uid-1", 1));
        assert_ne!(m.token("uid-1", 1), m.token("uid-1", 2));
        assert_eq!(m.token("uid-1", 1).len(), 64);
    }
}
