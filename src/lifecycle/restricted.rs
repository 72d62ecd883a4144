//! The `restricted` Pod Security Standard (Kubernetes v1.35, `latest`), as
//! the PodSecurity admission plugin checks it, over a pod spec. Used to
//! refuse a runner pod template that a namespace enforcing `restricted`
//! would refuse anyway, at start instead of at every pod create. Pure.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, PodSecurityContext, PodSpec, SELinuxOptions,
    SeccompProfile, SecurityContext, WindowsSecurityContextOptions,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::template::Problem;

/// Volume sources the restricted profile allows.
const VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the baseline profile allows (the rest may affect other pods).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

const SELINUX_TYPES: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

const APPARMOR_ANNOTATION: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Every way `spec` (with `meta`'s annotations) breaks the restricted
/// profile, each naming the field.
pub fn check(meta: &ObjectMeta, spec: &PodSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let pod_sc = spec.security_context.as_ref();
    for (field, set) in [
        ("spec.hostNetwork", spec.host_network),
        ("spec.hostPID", spec.host_pid),
        ("spec.hostIPC", spec.host_ipc),
    ] {
        if set == Some(true) {
            out.push(Problem::new(field, "must be false: host namespaces"));
        }
    }
    if let Some(sc) = pod_sc {
        check_pod_context(sc, &mut out);
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let json = serde_json::to_value(v).unwrap_or_default();
        let kind = json
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "name").cloned())
            .unwrap_or_default();
        if !VOLUMES.contains(&kind.as_str()) {
            out.push(Problem::new(
                format!("spec.volumes[{i}].{kind}"),
                format!(
                    "volume type {kind:?} is not allowed: use one of {}",
                    VOLUMES.join(", ")
                ),
            ));
        }
    }
    for (key, value) in meta.annotations.iter().flatten() {
        if key.starts_with(APPARMOR_ANNOTATION)
            && value != "runtime/default"
            && !value.starts_with("localhost/")
        {
            out.push(Problem::new(
                format!("metadata.annotations[{key}]"),
                format!(
                    "AppArmor profile {value:?} is not allowed: use runtime/default or localhost/*"
                ),
            ));
        }
    }
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root) == Some(true);
    let pod_seccomp = pod_sc.and_then(|s| s.seccomp_profile.as_ref()).is_some();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (path, c) in containers {
        check_container(&path, c, pod_non_root, pod_seccomp, &mut out);
    }
    out
}

fn check_pod_context(sc: &PodSecurityContext, out: &mut Vec<Problem>) {
    let path = "spec.securityContext";
    if sc.run_as_non_root == Some(false) {
        out.push(Problem::new(
            format!("{path}.runAsNonRoot"),
            "must not be false",
        ));
    }
    if sc.run_as_user == Some(0) {
        out.push(Problem::new(format!("{path}.runAsUser"), "must not be 0"));
    }
    if let Some(p) = &sc.seccomp_profile {
        check_seccomp(&format!("{path}.seccompProfile"), p, out);
    }
    check_shared(
        path,
        sc.app_armor_profile.as_ref(),
        sc.se_linux_options.as_ref(),
        sc.windows_options.as_ref(),
        out,
    );
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            out.push(Problem::new(
                format!("{path}.sysctls[{i}].name"),
                format!("sysctl {:?} is not allowed", s.name),
            ));
        }
    }
}

/// What pod and container security contexts share: AppArmor, SELinux,
/// Windows host processes.
fn check_shared(
    path: &str,
    apparmor: Option<&AppArmorProfile>,
    selinux: Option<&SELinuxOptions>,
    windows: Option<&WindowsSecurityContextOptions>,
    out: &mut Vec<Problem>,
) {
    if apparmor.is_some_and(|p| p.type_ == "Unconfined") {
        out.push(Problem::new(
            format!("{path}.appArmorProfile.type"),
            "must not be Unconfined",
        ));
    }
    if let Some(o) = selinux {
        check_selinux(&format!("{path}.seLinuxOptions"), o, out);
    }
    if windows.and_then(|w| w.host_process).unwrap_or(false) {
        out.push(Problem::new(
            format!("{path}.windowsOptions.hostProcess"),
            "must be false",
        ));
    }
}

fn check_seccomp(path: &str, p: &SeccompProfile, out: &mut Vec<Problem>) {
    if p.type_ != "RuntimeDefault" && p.type_ != "Localhost" {
        out.push(Problem::new(
            format!("{path}.type"),
            format!(
                "{:?} is not allowed: use RuntimeDefault or Localhost",
                p.type_
            ),
        ));
    }
}

fn check_selinux(path: &str, o: &SELinuxOptions, out: &mut Vec<Problem>) {
    let t = o.type_.as_deref().unwrap_or_default();
    if !SELINUX_TYPES.contains(&t) {
        out.push(Problem::new(
            format!("{path}.type"),
            format!("SELinux type {t:?} is not allowed"),
        ));
    }
    for (field, v) in [("user", &o.user), ("role", &o.role)] {
        if v.as_deref().is_some_and(|v| !v.is_empty()) {
            out.push(Problem::new(format!("{path}.{field}"), "must not be set"));
        }
    }
}

fn check_container(
    path: &str,
    c: &Container,
    pod_non_root: bool,
    pod_seccomp: bool,
    out: &mut Vec<Problem>,
) {
    let sc = c.security_context.as_ref();
    let sc_path = format!("{path}.securityContext");
    for (i, p) in c.ports.iter().flatten().enumerate() {
        if p.host_port.is_some_and(|h| h != 0) {
            out.push(Problem::new(
                format!("{path}.ports[{i}].hostPort"),
                "must not be set: host ports",
            ));
        }
    }
    if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        out.push(Problem::new(
            format!("{sc_path}.allowPrivilegeEscalation"),
            "must be false",
        ));
    }
    match sc.and_then(|s| s.run_as_non_root) {
        Some(false) => out.push(Problem::new(
            format!("{sc_path}.runAsNonRoot"),
            "must not be false",
        )),
        None if !pod_non_root => out.push(Problem::new(
            format!("{sc_path}.runAsNonRoot"),
            "must be true (here or in spec.securityContext)",
        )),
        _ => {}
    }
    match sc.and_then(|s| s.seccomp_profile.as_ref()) {
        Some(p) => check_seccomp(&format!("{sc_path}.seccompProfile"), p, out),
        None if !pod_seccomp => out.push(Problem::new(
            format!("{sc_path}.seccompProfile.type"),
            "must be RuntimeDefault or Localhost (here or in spec.securityContext)",
        )),
        None => {}
    }
    let Some(sc) = sc else {
        out.push(Problem::new(
            format!("{sc_path}.capabilities.drop"),
            "must include ALL",
        ));
        return;
    };
    check_context(&sc_path, sc, out);
    check_capabilities(&sc_path, sc.capabilities.as_ref(), out);
}

fn check_context(path: &str, sc: &SecurityContext, out: &mut Vec<Problem>) {
    if sc.privileged == Some(true) {
        out.push(Problem::new(format!("{path}.privileged"), "must be false"));
    }
    if sc.run_as_user == Some(0) {
        out.push(Problem::new(format!("{path}.runAsUser"), "must not be 0"));
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        out.push(Problem::new(format!("{path}.procMount"), "must be Default"));
    }
    check_shared(
        path,
        sc.app_armor_profile.as_ref(),
        sc.se_linux_options.as_ref(),
        sc.windows_options.as_ref(),
        out,
    );
}

fn check_capabilities(path: &str, caps: Option<&Capabilities>, out: &mut Vec<Problem>) {
    let drop = caps.and_then(|c| c.drop.as_ref());
    if !drop.is_some_and(|d| d.iter().any(|c| c == "ALL")) {
        out.push(Problem::new(
            format!("{path}.capabilities.drop"),
            "must include ALL",
        ));
    }
    for (i, cap) in caps
        .and_then(|c| c.add.as_ref())
        .iter()
        .flat_map(|a| a.iter())
        .enumerate()
    {
        if cap != "NET_BIND_SERVICE" {
            out.push(Problem::new(
                format!("{path}.capabilities.add[{i}]"),
                format!("capability {cap:?} is not allowed: only NET_BIND_SERVICE"),
            ));
        }
    }
}
