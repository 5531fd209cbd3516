//! Each managed kind's [`crate::engine::Provider`], one module per SaaS upstream, and the
//! helpers they share. How a Connection reaches the upstream is [`crate::saas`].

pub mod conductorone;
pub mod instaclustr;
pub mod serval;

use crate::upstream::{UpstreamClient, UpstreamError};

/// Everything but RFC 3986 unreserved characters is escaped in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (ids may contain characters such as `/` or spaces).
pub fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, PATH_SEGMENT).to_string()
}

/// An upstream client for unit tests of pure provider logic (diffs, bodies); any call fails.
#[cfg(test)]
pub(crate) fn offline_client() -> UpstreamClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = crate::upstream::UpstreamConfig::new(
        "test",
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
        crate::upstream::Credentials::StaticBearer("unused".into()),
    );
    UpstreamClient::new(config).unwrap()
}

/// Whether a delete found its object.
pub enum Deleted {
    /// The upstream took every request.
    Sent,
    /// It answered 404: there was nothing (left) to delete.
    NotFound,
}

/// Sends the requests of a delete in order; a 404 is no failure (the object is gone).
pub async fn send_delete(
    upstream: &UpstreamClient,
    calls: Vec<crate::upstream::Call>,
) -> Result<Deleted, UpstreamError> {
    for call in calls {
        match upstream.send(call).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Deleted::NotFound),
            Err(e) => return Err(e),
        }
    }
    Ok(Deleted::Sent)
}

/// The one request of `calls` (for kinds whose create or update is one request).
pub fn single(calls: Vec<crate::upstream::Call>) -> crate::upstream::Call {
    let [call] = <[crate::upstream::Call; 1]>::try_from(calls).expect("one request");
    call
}

/// `field` of an observed object whose JSON names are the spec's (for
/// [`crate::engine::Provider::observed_value`]).
pub fn field_of(observed: &impl serde::Serialize, field: &str) -> Option<serde_json::Value> {
    serde_json::to_value(observed)
        .ok()?
        .get_mut(field)
        .map(serde_json::Value::take)
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn path_segments_keep_unreserved_characters() {
        assert_eq!(segment("ap-1_x.y~z"), "ap-1_x.y~z");
        assert_eq!(
            segment("b2c3_data analyst/ops"),
            "b2c3_data%20analyst%2Fops"
        );
    }
}
