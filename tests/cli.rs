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
            agentic_webhook::testkit::client::Alpn::Both,
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
    // A burst means nothing without a client-side rate (none by default).
    let out = run(&["reconcile", "--api-burst", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("required arguments were not provided:\n  --api-qps"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_rules_about_who_may_write_what_cannot_be_warn_only() {
    // Warn-only V17 would let anyone write a session's status; V18 the
    // runner's credentials; V19/V25 whose behalf it acts on; V20 other
    // sessions; V26 restarts without end.
    for rule in ["V17", "V18", "V19", "V20", "V25", "V26"] {
        for cmd in [&["serve"][..], &["review", "-"][..]] {
            let out = run(&[cmd, &["--warn-only", rule]].concat());
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {rule}");
            assert!(
                text(&out.stderr).contains(&format!("{rule} decides who may write what")),
                "{cmd:?} {rule}: {}",
                text(&out.stderr)
            );
        }
    }
    let out = run(&["review", "--warn-only", "V3,V10", BAD]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
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

// ---------------------------------------------------------------------------
// review and verify, as a CI pipeline runs them.

fn run_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).unwrap_or_else(|e| panic!("{e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

const LEGACY: &str = "examples/sessions/legacy-v1alpha1.yaml";
const BAD: &str = "examples/sessions/bad-v1alpha2.yaml";

#[test]
fn review_text_puts_results_on_stdout_and_warnings_and_denials_on_stderr() {
    let ok = run(&["review", LEGACY]);
    assert_eq!(ok.status.code(), Some(0));
    let (out, err) = (text(&ok.stdout), text(&ok.stderr));
    assert!(
        out.starts_with("agenticsession.vteam.ambient-code/legacy-1 allowed"),
        "{out}"
    );
    assert!(
        out.contains("Summary: 1 objects: 1 allowed, 0 denied"),
        "{out}"
    );
    assert!(!out.contains("Warning"), "{out}");
    assert!(
        err.contains("Warning: spec.prompt is deprecated: moved to spec.initialPrompt"),
        "{err}"
    );

    let denied = run(&["review", BAD]);
    assert_eq!(denied.status.code(), Some(1));
    let err = text(&denied.stderr);
    // kubectl's words for a refused `kubectl create -f FILE`: an Invalid
    // status with causes reads like built-in validation.
    assert!(
        err.starts_with(
            "The AgenticSession \"bad-1\" is invalid: \n* spec.repos[0].url: Invalid value: \"file:///etc\""
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "* spec.environmentVariables[S3_BUCKET]: Forbidden: is reserved: the runner sets it\n"
        ),
        "{err}"
    );
    assert!(!err.contains("not printed"), "{err}");
    assert!(!text(&denied.stdout).contains("Error from server"));
}

#[test]
fn review_takes_directories_streams_lists_and_skips_other_kinds() {
    // A kustomize-style stream: other kinds, a List of two sessions.
    let stream = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-a}}\n---\n{}\n---\n{}",
        std::fs::read_to_string(LEGACY).expect("readable"),
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
             "metadata": {"name": "a", "namespace": "team-a"}, "spec": {"initialPrompt": "p"}},
            {"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
             "metadata": {"name": "b", "namespace": "team-a"},
             "spec": {"initialPrompt": "p", "repos": [{"url": "file:///x"}]}}]})
    );
    let out = run_stdin(&["review", "-", "-o", "json"], stream.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v = json(&out.stdout);
    assert_eq!(
        v["summary"],
        serde_json::json!({"objects": 4, "allowed": 2, "denied": 1, "skipped": 1, "errors": 0})
    );
    let results = v["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results[0]["decision"], "skipped");
    assert_eq!(results[0]["kind"], "Namespace");
    assert_eq!(results[1]["name"], "team-a/legacy-1");
    assert_eq!(results[1]["document"], 2);
    assert!(
        results[1]["patch"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    assert!(results[1]["object"]["spec"]["initialPrompt"].is_string());
    assert_eq!(results[3]["item"], 1);
    assert_eq!(results[3]["decision"], "denied");
    assert_eq!(results[3]["code"], 422);
    assert_eq!(results[3]["rules"], serde_json::json!(["V1"]));
    assert_eq!(results[3]["causes"][0]["field"], "spec.repos[0].url");
    assert_eq!(results[3]["causes"][0]["rule"], "V1");
    assert_eq!(results[3]["causes"][0]["reason"], "FieldValueInvalid");

    // A directory, recursively: every example session.
    let dir = run(&["review", "examples/sessions", "-o", "json"]);
    let v = json(&dir.stdout);
    assert_eq!(v["summary"]["objects"], 5);
    assert_eq!(dir.status.code(), Some(1));
}

#[test]
fn review_refuses_what_the_apiserver_would_never_send() {
    let dir = tempdir();
    let file = |name: &str, body: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, body.to_string()).unwrap_or_else(|e| panic!("{e}"));
        p
    };
    let session = |name: &str| serde_json::json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "metadata": {"name": name, "namespace": "team-a"}, "spec": {"initialPrompt": "p"}});
    let good = file("good.json", session("good"));
    let other = file("other.json", session("other"));
    let foo = file(
        "foo.json",
        serde_json::json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "Foo", "metadata": {"name": "x"}}),
    );
    let noname = file(
        "noname.json",
        serde_json::json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession", "metadata": {}, "spec": {}}),
    );
    let badname = file("badname.json", session("Not_A_Name"));
    for (args, why) in [
        (
            vec!["review", p(&good), "--operation", "UPDATE"],
            "an UPDATE needs the stored object",
        ),
        (
            vec!["review", p(&good), "--subresource", "status"],
            "a status write is an UPDATE of a stored object",
        ),
        (
            vec!["review", p(&foo)],
            "kind \"Foo\" is not AgenticSession",
        ),
        (vec!["review", p(&noname)], "metadata.name: Required value"),
        (
            vec!["review", p(&badname)],
            "metadata.name: Invalid value: \"Not_A_Name\"",
        ),
        (
            vec!["review", p(&good), "--old", p(&other)],
            "the stored object is team-a/other, not team-a/good",
        ),
        (
            vec![
                "review",
                p(&good),
                "--old",
                p(&good),
                "--operation",
                "CREATE",
            ],
            "a CREATE has no stored object",
        ),
        (
            vec!["review", "-", "--old", "-"],
            "stdin (-) can be read only once",
        ),
    ] {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(err.matches(why).count(), 1, "said more than once: {err}");
    }
}

#[test]
fn review_pairs_stored_objects_by_namespace_and_name() {
    let dir = tempdir();
    let new = dir.path().join("new.yaml");
    let old = dir.path().join("old.yaml");
    let doc = |name: &str, prompt: &str, phase: Option<&str>| {
        let mut v = serde_json::json!({"apiVersion": "vteam.ambient-code/v1alpha2", "kind": "AgenticSession",
            "metadata": {"name": name, "namespace": "team-a"}, "spec": {"initialPrompt": prompt}});
        if let Some(phase) = phase {
            v["status"] = serde_json::json!({"phase": phase});
        }
        v.to_string()
    };
    std::fs::write(
        &new,
        format!(
            "{}\n---\n{}\n",
            doc("a", "changed", None),
            doc("b", "changed", None)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Stored in the other order: b is Running (its prompt is frozen), a is Pending.
    std::fs::write(
        &old,
        format!(
            "{}\n---\n{}\n",
            doc("b", "orig", Some("Running")),
            doc("a", "orig", Some("Pending"))
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["review", p(&new), "--old", p(&old), "-o", "json"]);
    let v = json(&out.stdout);
    assert_eq!(v["results"][0]["name"], "team-a/a");
    assert_eq!(v["results"][0]["decision"], "allowed");
    assert_eq!(v["results"][0]["operation"], "UPDATE");
    assert_eq!(v["results"][1]["decision"], "denied");
    assert_eq!(v["results"][1]["rules"], serde_json::json!(["V14"]));
}

#[test]
fn review_reads_a_raw_admission_review_and_writes_junit_and_yaml() {
    let review = run(&[
        "review",
        "examples/status-update-by-user.json",
        "-o",
        "json",
    ]);
    assert_eq!(review.status.code(), Some(1));
    let v = json(&review.stdout);
    assert_eq!(v["results"][0]["code"], 403);
    assert_eq!(v["results"][0]["rules"], serde_json::json!(["V17"]));

    let junit = run(&[
        "review",
        LEGACY,
        BAD,
        "examples/status-update-by-user.json",
        "-o",
        "junit",
    ]);
    assert_eq!(junit.status.code(), Some(1));
    let xml = text(&junit.stdout);
    let parsed = roxmltree::Document::parse(&xml)
        .unwrap_or_else(|e| panic!("JUnit does not parse: {e}\n{xml}"));
    let root = parsed.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("3"));
    assert_eq!(root.attribute("failures"), Some("2"));
    let cases: Vec<_> = parsed
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 3);
    assert!(cases[0].children().all(|c| !c.has_tag_name("failure")));
    let failure = cases[1]
        .children()
        .find(|c| c.has_tag_name("failure"))
        .unwrap_or_else(|| panic!("no failure for the bad session"));
    assert!(
        failure
            .attribute("message")
            .unwrap_or_default()
            .contains("file:///etc")
    );
    assert!(
        failure
            .text()
            .unwrap_or_default()
            .contains("spec.repos[0].url [V1]")
    );

    // YAML: the allowed objects as they would be stored, ready to apply.
    let yaml = run(&["review", LEGACY, BAD, "-o", "yaml"]);
    assert_eq!(yaml.status.code(), Some(1));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text(&yaml.stdout)).unwrap_or_else(|e| panic!("{e}"));
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["metadata"]["name"], "legacy-1");
    assert!(docs[0]["spec"].get("prompt").is_none());
    assert!(docs[0]["spec"]["initialPrompt"].is_string());
    assert!(text(&yaml.stderr).contains("The AgenticSession \"bad-1\" is invalid: "));
}

#[test]
fn verify_passes_the_shipped_suite_and_fails_a_wrong_expectation() {
    let ok = run(&["verify", "examples/suite.yaml"]);
    let out = text(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}{}", text(&ok.stderr));
    assert!(out.contains("11 cases: 11 passed, 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    let dir = tempdir();
    std::fs::copy(
        "examples/sessions/bad-v1alpha2.yaml",
        dir.path().join("bad.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let suite = dir.path().join("suite.yaml");
    std::fs::write(
        &suite,
        "kind: Suite\ncases:\n- name: wrong rules\n  object: bad.yaml\n  expect: {decision: denied, rules: [V1]}\n\
         - name: wrong decision\n  object: bad.yaml\n  expect: {decision: allowed}\n\
         - name: right\n  object: bad.yaml\n  expect: {decision: denied, code: 422}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bad = run(&["verify", p(&suite)]);
    let out = text(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL") && out.contains("wrong rules") && out.contains("expected rules"),
        "{out}"
    );
    assert!(out.contains("expected Allowed, got Denied"), "{out}");
    assert!(out.contains("PASS") && out.contains(": right"), "{out}");
    assert!(out.contains("3 cases: 1 passed, 2 failed"), "{out}");

    std::fs::write(
        &suite,
        "kind: Suite\ncases:\n- name: x\n  objekt: bad.yaml\n  expect: {decision: allowed}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let broken = run(&["verify", p(&suite)]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        text(&broken.stderr).contains("objekt"),
        "{}",
        text(&broken.stderr)
    );
}
