//! CRD conversion between v1alpha1 and v1alpha2 (the hub), and the
//! `/convert` core.

pub(crate) mod any;
pub(crate) mod convert;
pub(crate) mod object;
pub mod review;
pub(crate) mod stash;

use crate::api::Version;

pub use convert::ConvertError;
pub use object::{convert_object, normalize_object};
use review::{ConversionRequest, Converted, Outcome};

/// Per-direction counts, for `conversions_total{from,to}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub to_v1alpha1: u64,
    pub to_v1alpha2: u64,
    pub unchanged: u64,
}

/// Convert every object of a request, in order. One failure fails the
/// review, naming the object (`namespace/name`) and the reason.
pub fn convert_request(req: &ConversionRequest<'_>) -> (Outcome, Counts) {
    let mut counts = Counts::default();
    let Some(to) = Version::from_api_version(&req.desired_api_version) else {
        return (
            Outcome::Failure(format!(
                "desiredAPIVersion {:?} is not served (want vteam.ambient-code/v1alpha1 or v1alpha2)",
                req.desired_api_version
            )),
            counts,
        );
    };
    // Converted objects are about as large as the originals.
    let bytes: usize = req.objects.iter().map(|o| o.get().len() + 1).sum();
    let mut out = Converted::with_capacity(bytes + bytes / 8, req.objects.len());
    for (i, raw) in req.objects.iter().enumerate() {
        let json = raw.get();
        match convert_object(json, to) {
            Ok(converted) => {
                if converted.as_slice() == json.as_bytes() {
                    counts.unchanged += 1;
                } else if to == Version::V1Alpha1 {
                    counts.to_v1alpha1 += 1;
                } else {
                    counts.to_v1alpha2 += 1;
                }
                out.push(&converted);
            }
            Err(e) => {
                return (
                    Outcome::Failure(format!(
                        "converting objects[{i}] ({}) to {}: {e}",
                        object::object_ref(json),
                        to.api_version()
                    )),
                    counts,
                );
            }
        }
    }
    (Outcome::Success(out), counts)
}

/// The conversion seam the server calls.
pub trait ConversionService: Send + Sync + 'static {
    fn convert(&self, req: &ConversionRequest<'_>) -> (Outcome, Counts);
}

/// The conversion rules of SPEC section 2.
#[derive(Clone, Copy, Debug, Default)]
pub struct Converter;

impl ConversionService for Converter {
    fn convert(&self, req: &ConversionRequest<'_>) -> (Outcome, Counts) {
        convert_request(req)
    }
}
