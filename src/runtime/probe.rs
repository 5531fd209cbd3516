//! `accessplane probe URL`: one HTTP GET that succeeds only on a 2xx answer. The image
//! is distroless (no shell, no curl), so `helm test` runs this against the metrics
//! Service's `/readyz` to tell that an operator pod is up and reached the apiserver.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// GETs `url` within `timeout`; `Ok` with the body on 2xx. Plain HTTP on purpose: the
/// metrics port serves no TLS and no credentials are sent.
pub async fn probe(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let request_error = |e: reqwest::Error| ProbeError::Request {
        url: url.to_string(),
        reason: e.without_url().to_string(),
    };
    let client = reqwest::Client::builder()
        .user_agent(crate::USER_AGENT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(request_error)?;
    let response = client.get(url).send().await.map_err(request_error)?;
    let status = response.status();
    // A probe answer is short; cap what is echoed of an unexpected one.
    let mut body = response.text().await.map_err(request_error)?;
    body.truncate(200);
    if status.is_success() {
        Ok(body)
    } else {
        Err(ProbeError::Status {
            url: url.to_string(),
            status,
            body,
        })
    }
}
