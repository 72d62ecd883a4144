//! The reconciler's HMAC key (see [`super::mark`]): one Secret in its own
//! namespace, shared by its replicas so a new leader vouches for the pods
//! and tokens the last one made. Made once, by whichever replica starts
//! first; the others read it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

use super::mark::Marker;

/// The Secret's key for the HMAC key.
const DATA_KEY: &str = "key";
/// Fewer bytes than this would make marks and tokens guessable.
const MIN_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("kube API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0}/{1} has no {DATA_KEY:?} of at least {MIN_LEN} bytes")]
    Short(String, String),
    #[error("no random bytes for a new key")]
    Random,
}

fn key_of(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map(|b| b.0.as_slice())
        .filter(|k| k.len() >= MIN_LEN)
}

/// The key in `namespace/name`, made now if there is none.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Marker, KeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..3 {
        if let Some(found) = api.get_opt(name).await? {
            return key_of(&found)
                .map(Marker::new)
                .ok_or_else(|| KeyError::Short(namespace.to_owned(), name.to_owned()));
        }
        let mut bytes = [0u8; MIN_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| KeyError::Random)?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "agentic-reconciler".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                DATA_KEY.to_owned(),
                ByteString(bytes.to_vec()),
            )])),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(%namespace, %name, "reconciler key created");
                return Ok(Marker::new(&bytes));
            }
            // Another replica made it first: read theirs.
            Err(e)
                if crate::apiclient::is_api_status(&e, kube::core::Status::is_already_exists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(KeyError::Short(namespace.to_owned(), name.to_owned()))
}
