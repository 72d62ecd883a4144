//! Self-managed certificates (`serve --manage-certs`).
//!
//! The CA lives in a Secret (created once even when replicas race:
//! create-if-absent, re-read on conflict). Each replica issues its own
//! serving certificate from it and holds it in memory only: a mounted
//! Secret takes the kubelet 30–100 s to update, while a caBundle change is
//! immediate, and waiting on the mount is how other webhooks caused outages.
//! The CA bundle is injected into both webhook configurations and the CRD's
//! conversion client config. On CA rotation old and new CA share every
//! bundle until the old one expires, and a serving certificate from the new
//! CA is used only after the bundles carry it. `/readyz` stays false until
//! this replica's serving CA is in all three bundles.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::authority;
use super::generate::{self as certs, CaPem, CertInfo, cert_info};
use super::metrics::Metrics;
use super::serving::{self as tls, CertStore};
use super::watch as reload;
use crate::telemetry::probes::Health;

/// Where "now" comes from (tests drive it).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const CA_PREVIOUS_KEY: &str = "ca-previous.crt";

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub namespace: String,
    pub ca_secret: String,
    pub mutating: String,
    pub validating: String,
    pub crd: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub cert_lifetime: Duration,
    pub ca_lifetime: Duration,
    /// Renew (and rotate the CA) after this fraction of the lifetime.
    pub renew_fraction: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificates: {0}")]
    Certs(#[from] certs::CertError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("CA Secret {0} is unreadable: {1}")]
    CorruptSecret(String, &'static str),
    #[error("{0} not found")]
    Missing(String),
    #[error("the CA Secret kept changing under us")]
    Conflicts,
}

struct CurrentCa {
    pem: CaPem,
    info: CertInfo,
    previous: Option<(String, CertInfo)>,
}

pub struct CertManager {
    client: Client,
    cfg: ManagerConfig,
    store: Arc<CertStore>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Serial of the CA that signed the serving certificate in `store`.
    serving_ca: Option<String>,
}

impl CertManager {
    pub fn new(
        client: Client,
        cfg: ManagerConfig,
        store: Arc<CertStore>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        CertManager {
            client,
            cfg,
            store,
            health,
            metrics,
            clock: Arc::new(OffsetDateTime::now_utc),
            serving_ca: None,
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Until `stop`: step, then sleep until the next renewal is due.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = match self.step().await {
                Ok(next) => {
                    failures = 0;
                    next
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait =
                        Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                    tracing::error!(error = %e, retry_in = ?wait, "certificate management failed");
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: CA, bundles, serving certificate, readiness. Returns when to look again.
    pub async fn step(&mut self) -> Result<Duration, Error> {
        let now = (self.clock)();
        let now_s = now.unix_timestamp();
        let ca = self.ensure_ca(now).await?;
        let bundle = authority::bundle(
            &ca.pem.cert_pem,
            ca.previous.as_ref().map(|(p, i)| (p.as_str(), i)),
            now_s,
        );
        self.inject(&bundle).await?;

        // Only now, with the CA in every bundle, may a certificate it signed be served.
        let renew = match (self.store.current(), &self.serving_ca) {
            (Some(cur), Some(issuer)) => {
                *issuer != ca.info.serial
                    || now_s
                        >= authority::due_at(
                            &CertInfo::window(cur.not_before, cur.not_after),
                            self.cfg.renew_fraction,
                        )
            }
            _ => true,
        };
        if renew {
            let pair = certs::issue_serving_at(
                &ca.pem,
                &self.cfg.dns_names,
                &self.cfg.ips,
                now,
                self.cfg.cert_lifetime,
            )?;
            let loaded = tls::load_pair(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes())?;
            tracing::info!(serial = %loaded.serial, ca = %ca.info.serial, "serving certificate issued from the managed CA");
            reload::install(&self.store, &self.metrics, loaded);
            self.serving_ca = Some(ca.info.serial.clone());
        }
        self.health.set_bundles_ready(true);

        let mut next = now_s + 600;
        if let Some(cur) = self.store.current() {
            next = next.min(authority::due_at(
                &CertInfo::window(cur.not_before, cur.not_after),
                self.cfg.renew_fraction,
            ));
        }
        next = next.min(authority::due_at(&ca.info, self.cfg.renew_fraction));
        if let Some((_, prev)) = &ca.previous
            && prev.not_after > now_s
        {
            next = next.min(prev.not_after);
        }
        Ok(Duration::from_secs(
            u64::try_from(next - now_s).unwrap_or(0).max(1),
        ))
    }

    fn secret_data(
        ca: &CaPem,
        previous: Option<&str>,
    ) -> std::collections::BTreeMap<String, ByteString> {
        let mut data = std::collections::BTreeMap::from([
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem.clone().into_bytes()),
            ),
            (
                CA_KEY_KEY.to_owned(),
                ByteString(ca.key_pem.clone().into_bytes()),
            ),
        ]);
        if let Some(p) = previous {
            data.insert(
                CA_PREVIOUS_KEY.to_owned(),
                ByteString(p.as_bytes().to_vec()),
            );
        }
        data
    }

    async fn ensure_ca(&self, now: OffsetDateTime) -> Result<CurrentCa, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let name = &self.cfg.ca_secret;
        for _ in 0..5 {
            let Some(secret) = secrets.get_opt(name).await? else {
                let pem = certs::generate_ca_at("agentic-webhook CA", now, self.cfg.ca_lifetime)?;
                let obj = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/name".to_owned(),
                                "agentic-webhook".to_owned(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(Self::secret_data(&pem, None)),
                    ..Secret::default()
                };
                match secrets.create(&PostParams::default(), &obj).await {
                    Ok(_) => {
                        tracing::info!(secret = %name, "created the webhook CA");
                        let info = cert_info(&pem.cert_pem)
                            .ok_or(Error::CorruptSecret(name.clone(), "new CA"))?;
                        return Ok(CurrentCa {
                            pem,
                            info,
                            previous: None,
                        });
                    }
                    // Another replica won the race: use its CA.
                    Err(e)
                        if crate::apiclient::is_api_status(
                            &e,
                            kube::core::Status::is_already_exists,
                        ) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let data = secret.data.clone().unwrap_or_default();
            let text = |k: &str| {
                data.get(k)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
            };
            let (Some(cert_pem), Some(key_pem)) = (text(CA_CERT_KEY), text(CA_KEY_KEY)) else {
                return Err(Error::CorruptSecret(
                    name.clone(),
                    "ca.crt or ca.key missing",
                ));
            };
            let info = cert_info(&cert_pem).ok_or(Error::CorruptSecret(
                name.clone(),
                "ca.crt is not a certificate",
            ))?;
            let previous = text(CA_PREVIOUS_KEY).and_then(|p| cert_info(&p).map(|i| (p, i)));
            let pem = CaPem { cert_pem, key_pem };
            if !authority::due(&info, self.cfg.renew_fraction, now.unix_timestamp()) {
                return Ok(CurrentCa {
                    pem,
                    info,
                    previous,
                });
            }
            // Rotate: the new CA signs from now on; the old one stays trusted.
            let fresh = certs::generate_ca_at("agentic-webhook CA", now, self.cfg.ca_lifetime)?;
            let mut updated = secret.clone();
            updated.data = Some(Self::secret_data(&fresh, Some(&pem.cert_pem)));
            match secrets
                .replace(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %name, old = %info.serial, "rotated the webhook CA");
                    let new_info = cert_info(&fresh.cert_pem)
                        .ok_or(Error::CorruptSecret(name.clone(), "new CA"))?;
                    return Ok(CurrentCa {
                        pem: fresh,
                        info: new_info,
                        previous: Some((pem.cert_pem, info)),
                    });
                }
                Err(e) if crate::apiclient::is_api_status(&e, kube::core::Status::is_conflict) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflicts)
    }

    /// Patch the caBundle of every webhook in one configuration that lacks
    /// `want`; `hooks` lists (name, caBundle) in the object's order.
    async fn inject_webhooks<K>(
        &self,
        name: &str,
        want: &[u8],
        b64: &str,
        hooks: impl for<'a> Fn(&'a K) -> Vec<(&'a str, Option<&'a ByteString>)>,
    ) -> Result<(), Error>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let obj = api
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::Missing(format!("{} {name}", K::kind(&()))))?;
        let stale = stale_webhooks(hooks(&obj).into_iter(), want);
        if let Some(patch) = bundle_patch(&stale, b64) {
            api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
                .await?;
        }
        Ok(())
    }

    async fn inject(&self, bundle: &str) -> Result<(), Error> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
        let want = bundle.as_bytes();
        let pp = PatchParams::default();

        self.inject_webhooks::<MutatingWebhookConfiguration>(&self.cfg.mutating, want, &b64, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref()))
                .collect()
        })
        .await?;
        self.inject_webhooks::<ValidatingWebhookConfiguration>(
            &self.cfg.validating,
            want,
            &b64,
            |c| {
                c.webhooks
                    .iter()
                    .flatten()
                    .map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref()))
                    .collect()
            },
        )
        .await?;

        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let crd = crds
            .get_opt(&self.cfg.crd)
            .await?
            .ok_or_else(|| Error::Missing(format!("CustomResourceDefinition {}", self.cfg.crd)))?;
        let current = crd
            .spec
            .conversion
            .as_ref()
            .and_then(|c| c.webhook.as_ref())
            .ok_or_else(|| Error::Missing(format!("conversion webhook of {}", self.cfg.crd)))?
            .client_config
            .as_ref()
            .and_then(|c| c.ca_bundle.as_ref())
            .map(|b| b.0.as_slice());
        if current != Some(want) {
            let merge =
                json!({"spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": b64}}}}});
            crds.patch(&self.cfg.crd, &pp, &Patch::Merge(&merge))
                .await?;
        }
        Ok(())
    }
}

/// Index and name of each webhook whose caBundle is not `want`.
fn stale_webhooks<'a>(
    hooks: impl Iterator<Item = (&'a str, Option<&'a ByteString>)>,
    want: &[u8],
) -> Vec<(usize, String)> {
    hooks
        .enumerate()
        .filter(|(_, (_, bundle))| bundle.map(|b| b.0.as_slice()) != Some(want))
        .map(|(i, (name, _))| (i, name.to_owned()))
        .collect()
}

/// A JSON patch setting `caBundle` on the listed webhooks; each guarded by a
/// `test` of the webhook's name so a reordered list is never mis-patched.
fn bundle_patch(stale: &[(usize, String)], b64: &str) -> Option<json_patch::Patch> {
    if stale.is_empty() {
        return None;
    }
    let ops: Vec<serde_json::Value> = stale
        .iter()
        .flat_map(|(i, name)| {
            [
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}),
                json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": b64}),
            ]
        })
        .collect();
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}
