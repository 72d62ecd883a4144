//! The command line as a CI pipeline or an operator meets it: exit codes,
//! what goes to stdout and what to stderr, refusals that protect an
//! install (an overwritten CA, empty caBundles, a leaf given as a CA),
//! `version`, shell completion, and flags that contradict each other.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

#[test]
fn certs_refuse_to_replace_a_ca_and_issue_from_an_existing_one() {
    let dir = tempdir();
    let out = dir.path().join("certs");
    let first = run(&["certs", "--out", p(&out), "--ip", "127.0.0.1"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let ca_before = read(&out.join("ca.crt"));

    // Again: refused, the CA untouched, and the way out named.
    let again = run(&["certs", "--out", p(&out)]);
    assert_eq!(again.status.code(), Some(2));
    let err = text(&again.stderr);
    assert!(
        err.contains("ca.key exists") && err.contains("--force") && err.contains("--ca-cert"),
        "{err}"
    );
    assert_eq!(
        err.matches("exists").count(),
        1,
        "said more than once: {err}"
    );
    assert_eq!(read(&out.join("ca.crt")), ca_before);

    // A new serving pair from the existing CA: the old CA still verifies it
    // (a real TLS handshake against a server using the new pair).
    let leaf_before = read(&out.join("tls.crt"));
    let renewed = run(&[
        "certs",
        "--out",
        p(&out),
        "--ip",
        "127.0.0.1",
        "--ca-cert",
        p(&out.join("ca.crt")),
        "--ca-key",
        p(&out.join("ca.key")),
    ]);
    assert!(renewed.status.success(), "{}", text(&renewed.stderr));
    assert_eq!(read(&out.join("ca.crt")), ca_before);
    assert_ne!(read(&out.join("tls.crt")), leaf_before);
    let server = Server::start(&[
        "--tls-cert",
        p(&out.join("tls.crt")),
        "--tls-key",
        p(&out.join("tls.key")),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let mut conn = connect(
            server.https,
            &ca_before,
            agentic_webhook::client::Alpn::Both,
        )
        .await;
        let resp = conn
            .post(
                "/validate",
                fixture("01-apply-v1alpha1-legacy.validate.json"),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status, 200);
    });

    // A leaf is not a CA, and a key must belong to its certificate.
    let leaf_as_ca = run(&[
        "certs",
        "--out",
        p(&dir.path().join("x")),
        "--ca-cert",
        p(&out.join("tls.crt")),
        "--ca-key",
        p(&out.join("tls.key")),
    ]);
    assert_eq!(leaf_as_ca.status.code(), Some(2));
    assert!(
        text(&leaf_as_ca.stderr).contains("is not a CA certificate"),
        "{}",
        text(&leaf_as_ca.stderr)
    );
    let other = dir.path().join("other");
    assert!(run(&["certs", "--out", p(&other)]).status.success());
    let mismatched = run(&[
        "certs",
        "--out",
        p(&dir.path().join("y")),
        "--ca-cert",
        p(&out.join("ca.crt")),
        "--ca-key",
        p(&other.join("ca.key")),
    ]);
    assert_eq!(mismatched.status.code(), Some(2));
    assert!(text(&mismatched.stderr).contains("does not belong to the CA certificate"));

    // --force replaces it.
    let forced = run(&["certs", "--out", p(&out), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_ne!(read(&out.join("ca.crt")), ca_before);
    // Half of a pair is a usage error.
    let half = run(&[
        "certs",
        "--out",
        p(&out),
        "--ca-cert",
        p(&out.join("ca.crt")),
    ]);
    assert_eq!(half.status.code(), Some(2));
}

#[test]
fn manifests_need_a_ca_bundle_or_an_explicit_no_and_refuse_a_leaf() {
    let dir = tempdir();
    make_certs(dir.path());
    let none = run(&["manifests"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("--ca-file"),
        "{}",
        text(&none.stderr)
    );
    assert!(none.stdout.is_empty());

    let empty = run(&["manifests", "--no-ca-bundle"]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert!(!text(&empty.stdout).contains("caBundle"));

    let leaf = run(&["manifests", "--ca-file", p(&dir.path().join("tls.crt"))]);
    assert_eq!(leaf.status.code(), Some(2));
    let err = text(&leaf.stderr);
    assert!(err.contains("is not a CA certificate"), "{err}");
    assert!(leaf.stdout.is_empty());

    let good = run(&["manifests", "--ca-file", p(&dir.path().join("ca.crt"))]);
    assert!(good.status.success());
    assert_eq!(text(&good.stdout).matches("caBundle:").count(), 3);

    let both = run(&[
        "manifests",
        "--no-ca-bundle",
        "--ca-file",
        p(&dir.path().join("ca.crt")),
    ]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn convert_warns_on_stderr_when_its_output_carries_the_conversion_data_annotation() {
    let dir = tempdir();
    let file = dir.path().join("bot.yaml");
    std::fs::write(
        &file,
        "apiVersion: vteam.ambient-code/v1alpha1\nkind: AgenticSession\nmetadata: {name: s1, namespace: team-a}\nspec:\n  prompt: hi\n  botAccount: {name: bot}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["convert", p(&file), "--to", "v1alpha2"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.contains("vteam.ambient-code/conversion-data"),
        "{stdout}"
    );
    assert!(!stdout.contains("Warning"), "{stdout}");
    assert!(stderr.starts_with("Warning: "), "{stderr}");
    assert!(
        stderr.contains("controller principals") && stderr.contains("V18"),
        "{stderr}"
    );
    // Nothing to carry: no warning.
    let plain = run(&[
        "convert",
        "examples/sessions/modern-v1alpha2.yaml",
        "--to",
        "v1alpha2",
    ]);
    assert!(plain.status.success());
    assert!(plain.stderr.is_empty(), "{}", text(&plain.stderr));
}

#[test]
fn version_names_the_commit_the_date_and_the_compiler() {
    let out = run(&["version", "-o", "json"]);
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let commit = v["gitCommit"].as_str().unwrap_or_default();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned());
    if let Some(head) = head {
        assert_eq!(commit, head);
    }
    assert!(v["rustc"].as_str().is_some_and(|r| r.starts_with("rustc ")));
    assert_eq!(v["buildDate"].as_str().map(str::len), Some(10));
    let plain = text(&run(&["version"]).stdout);
    assert!(
        plain.starts_with(&format!("agentic-webhook {}\n", env!("CARGO_PKG_VERSION"))),
        "{plain}"
    );
    assert!(text(&run(&["--version"]).stdout).contains(commit));
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source <({BIN} completion bash) && COMP_WORDS=({}) && COMP_CWORD={} && COMP_LINE='{line}' && COMP_POINT=${{#COMP_LINE}} && _agentic__webhook agentic-webhook '{}' '{}' && echo \"${{COMPREPLY[@]}}\"",
            words.join(" "),
            words.len() - 1,
            words.last().copied().unwrap_or_default(),
            words
                .get(words.len().saturating_sub(2))
                .copied()
                .unwrap_or_default(),
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|e| panic!("bash: {e}"));
        text(&out.stdout)
    };
    assert_eq!(complete("agentic-webhook rev").trim(), "review");
    assert!(complete("agentic-webhook reconcile --kube").contains("--kubeconfig"));
    for shell in ["zsh", "fish"] {
        let out = run(&["completion", shell]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("agentic-webhook"));
    }
    let bad = run(&["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn contradicting_flags_are_refused_before_anything_runs() {
    for args in [
        &["reconcile", "--leader-election", "--no-leader-election"][..],
        &["certs", "--force", "--ca-cert", "a", "--ca-key", "b"][..],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("cannot be used with"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn cluster_commands_take_a_kubeconfig_and_a_context() {
    let dir = tempdir();
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
         users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: real\n  context: {cluster: c, user: u}\ncurrent-context: real\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A context the file does not have is named in the error.
    let out = run(&[
        "migrate",
        "--kubeconfig",
        p(&kubeconfig),
        "--context",
        "missing",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("missing"), "{err}");
    // The right context reaches the server it names (nothing listens there).
    let out = run(&[
        "migrate",
        "--kubeconfig",
        p(&kubeconfig),
        "--context",
        "real",
        "--dry-run",
        "--api-timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1") || err.contains("onnect"),
        "{err}"
    );
    for cmd in ["reconcile", "serve"] {
        let help = text(&run(&[cmd, "--help"]).stdout);
        assert!(
            help.contains("--kubeconfig") && help.contains("--context"),
            "{cmd}"
        );
    }
}
