//! What a pod's volumes reference in the API (pure): the configMaps, secrets, claims and
//! service account tokens to fetch before the volumes can be set up.

use k8s_openapi::api::core::v1::{ServiceAccountTokenProjection, Volume};

use crate::cluster::{TokenWanted, VolumeRefs};

/// Upstream's default expirationSeconds of a serviceAccountToken projection.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The token a projection asks for.
pub fn token_wanted(t: &ServiceAccountTokenProjection) -> TokenWanted {
    TokenWanted {
        audience: t.audience.clone().unwrap_or_default(),
        expiration_seconds: t
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
    }
}

/// Everything `volumes` reference.
pub fn volume_refs<'a>(volumes: impl IntoIterator<Item = &'a Volume>) -> VolumeRefs {
    let mut refs = VolumeRefs::default();
    for v in volumes {
        if let Some(cm) = &v.config_map {
            refs.config_maps.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.secrets.insert(s);
        }
        if let Some(c) = &v.persistent_volume_claim {
            refs.claims.insert(c.claim_name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                refs.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(t) = &source.service_account_token {
                refs.tokens.insert(token_wanted(t));
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_source_kind_is_collected_once() {
        let volumes: Vec<Volume> = serde_json::from_value(json!([
            {"name": "a", "configMap": {"name": "cm"}},
            {"name": "b", "secret": {"secretName": "s"}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "d", "projected": {"sources": [
                {"configMap": {"name": "cm"}},
                {"configMap": {"name": "kube-root-ca.crt"}},
                {"secret": {"name": "s2"}},
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"serviceAccountToken": {"path": "vault", "audience": "vault"}},
                {"downwardAPI": {"items": []}},
            ]}},
            {"name": "e", "emptyDir": {}},
        ]))
        .unwrap();
        let refs = volume_refs(&volumes);
        assert_eq!(
            refs.config_maps.into_iter().collect::<Vec<_>>(),
            ["cm", "kube-root-ca.crt"]
        );
        assert_eq!(refs.secrets.into_iter().collect::<Vec<_>>(), ["s", "s2"]);
        assert_eq!(refs.claims.into_iter().collect::<Vec<_>>(), ["data"]);
        assert_eq!(
            refs.tokens.into_iter().collect::<Vec<_>>(),
            [
                TokenWanted {
                    audience: String::new(),
                    expiration_seconds: 3607
                },
                TokenWanted {
                    audience: "vault".into(),
                    expiration_seconds: 3600
                },
            ]
        );
    }
}
