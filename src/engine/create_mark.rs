//! The create mark's value (`accessplane.io/create-attempted`): written just before a
//! create is sent, it tells a later pass that a create may have happened.

use k8s_openapi::jiff::Timestamp;

/// The create mark's value: when the create was attempted and, with leader election,
/// by which replica (`<RFC 3339 time> by <identity>`; older marks hold the time only).
pub struct CreateMark<'a> {
    pub at: Option<Timestamp>,
    pub writer: Option<&'a str>,
}

impl<'a> CreateMark<'a> {
    pub fn value(at: Timestamp, writer: Option<&str>) -> String {
        match writer {
            Some(writer) => format!("{at} by {writer}"),
            None => at.to_string(),
        }
    }

    pub fn parse(value: &'a str) -> Self {
        let (at, writer) = match value.split_once(" by ") {
            Some((at, writer)) => (at, Some(writer.trim())),
            None => (value, None),
        };
        Self {
            at: at.trim().parse().ok(),
            writer: writer.filter(|w| !w.is_empty()),
        }
    }
}
