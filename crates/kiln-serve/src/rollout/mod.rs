//! Rollouts: which version answers a request that does not name one. A model with a
//! deployment in the registry (`kiln deploy`) splits its traffic between the deployment's arms
//! by weight, at random or sticky by a caller key on a consistent-hash ring ([`ring`]), and
//! mirrors each routed request to its shadow versions ([`shadow`]); a model without one is
//! answered by its production version, else its latest. A request that names a version, in
//! its URL or body or (for testing) in the `x-kiln-version` header, gets that version and is
//! not mirrored.

pub mod canary;
pub mod ring;
pub mod shadow;

use axum::http::HeaderMap;
use kiln_core::deploy::{Deployment, FULL, Sticky};
use kiln_core::spec::ModelVersion;
use kiln_registry::ModelState;
use std::collections::BTreeMap;

use crate::inference::{InferError, ModelHub};
use ring::Ring;

/// Picks a version whatever the deployment says (for testing a version through the routed
/// endpoints).
pub const VERSION_HEADER: &str = "x-kiln-version";
/// The caller key of a request without entities under a deployment sticky by entity.
pub const ROUTE_KEY_HEADER: &str = "x-kiln-route-key";

/// A model's deployment, ready to route.
#[derive(Debug)]
pub struct Router {
    pub deployment: Deployment,
    /// Built when the deployment is sticky.
    ring: Option<Ring>,
}

impl Router {
    pub fn new(deployment: Deployment) -> Router {
        Router {
            ring: deployment
                .sticky
                .is_some()
                .then(|| Ring::new(&deployment.arms)),
            deployment,
        }
    }

    /// The arm that answers a caller: by its key on the ring when the deployment is sticky
    /// and the key is known, else at random by weight.
    pub fn arm(&self, key: Option<&[u8]>) -> u32 {
        if let (Some(ring), Some(key)) = (&self.ring, key) {
            return ring.arm(key);
        }
        let mut r = fastrand::u32(0..FULL);
        for a in &self.deployment.arms {
            if r < a.weight {
                return a.version;
            }
            r -= a.weight;
        }
        // Unreachable for a checked deployment (its weights sum to FULL).
        self.deployment.arms[0].version
    }
}

/// Routers of the models that have a deployment.
pub fn routers(models: &BTreeMap<String, ModelState>) -> BTreeMap<String, Router> {
    models
        .values()
        .filter_map(|m| {
            let d = m.deployment.clone()?;
            Some((m.name.clone(), Router::new(d)))
        })
        .collect()
}

/// The version that answers a request, and the versions it is mirrored to.
#[derive(Debug)]
pub struct Routed {
    pub spec: ModelVersion,
    pub shadow: Vec<ModelVersion>,
}

/// Routes a request for `name`. `version` is the one the request names, if any; `entity` the
/// caller key of a predict-by-entity request (its entity keys).
pub fn route(
    models: &BTreeMap<String, ModelState>,
    routers: &BTreeMap<String, Router>,
    name: &str,
    version: Option<u32>,
    headers: &HeaderMap,
    entity: Option<&str>,
) -> Result<Routed, InferError> {
    let pinned = match headers.get(VERSION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    InferError::BadRequest(format!(
                        "header {VERSION_HEADER}: {v:?} is not a version number"
                    ))
                })?,
        ),
    };
    let router = routers.get(name);
    let asked = version.or(pinned);
    let Some(router) = router.filter(|_| asked.is_none()) else {
        return Ok(Routed {
            spec: ModelHub::pick(models, name, asked)?.clone(),
            shadow: Vec::new(),
        });
    };
    let header = |h: &str| headers.get(h).map(|v| v.as_bytes());
    let key = match &router.deployment.sticky {
        None => None,
        Some(Sticky::Entity) => entity
            .map(str::as_bytes)
            .or_else(|| header(ROUTE_KEY_HEADER)),
        Some(Sticky::Header { name }) => header(name),
    };
    let spec = ModelHub::pick(models, name, Some(router.arm(key)))?.clone();
    let shadow = router
        .deployment
        .shadow
        .iter()
        .filter_map(|v| ModelHub::pick(models, name, Some(*v)).ok().cloned())
        .collect();
    Ok(Routed { spec, shadow })
}

#[cfg(test)]
mod tests {
    use kiln_core::deploy::Arm;

    use super::*;

    #[test]
    fn random_routing_follows_the_weights() {
        let router = Router::new(Deployment {
            arms: vec![
                Arm {
                    version: 1,
                    weight: 8_000,
                },
                Arm {
                    version: 2,
                    weight: 2_000,
                },
            ],
            sticky: None,
            shadow: Vec::new(),
            canary: None,
        });
        let n = 20_000;
        let twos = (0..n).filter(|_| router.arm(Some(b"ignored")) == 2).count();
        let share = twos as f64 / f64::from(n);
        assert!((share - 0.2).abs() < 0.02, "{share}");
    }
}
