//! The smallest [`Provider`]: an `AccessProfile` (its `teamId`, `name` and
//! `description`) kept as a thing of [`FakeThings`], so that the engine's own behaviour
//! can be tested once, apart from any real kind's provider.
//!
//! It needs a ready Connection of [`UpstreamKind::Serval`] (the harness's `serval`), as
//! the engine resolves one before any upstream call, but sends its requests through its
//! own client to the fake (bearer [`TOKEN`], one attempt per call, so that every fault
//! reaches the engine as it happened).
#![allow(dead_code)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use accessplane::api::AccessProfile;
use accessplane::api::connection::UpstreamKind;
use accessplane::engine::{Created, Cx, Diff, Engine, EngineError, Provider, Written};
use accessplane::upstream::{
    Call, Credentials, RateLimit, RetryPolicy, UpstreamClient, UpstreamConfig, UpstreamError,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::fake_things::{FakeThings, TOKEN};
use super::harness::Harness;

/// A thing as the fake answers it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Thing {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub description: String,
}

#[derive(Deserialize)]
struct Items {
    items: Vec<Thing>,
}

/// Cheap to clone: clones share the client and the write gate (an engine "restarted"
/// with a clone talks to the same upstream).
#[derive(Clone)]
pub struct ThingsProvider {
    client: UpstreamClient,
    gate_closed: Arc<AtomicBool>,
}

/// Why the write gate holds writes back while closed.
pub const GATE_CLOSED: &str = "the things store is busy";

impl ThingsProvider {
    pub fn new(fake: &FakeThings) -> Self {
        let base_url = fake.base_url().parse().expect("base URL");
        let mut config =
            UpstreamConfig::new("things", base_url, Credentials::StaticBearer(TOKEN.into()));
        config.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let fast = NonZeroU32::new(1000).expect("non-zero");
        config.rate_limit = RateLimit {
            requests_per_second: fast,
            burst: fast,
        };
        Self {
            client: UpstreamClient::new(config).expect("things client"),
            gate_closed: Arc::default(),
        }
    }

    /// Closes (`true`) or opens the write gate (as an upstream that is busy for a while).
    pub fn close_gate(&self, closed: bool) {
        self.gate_closed.store(closed, Ordering::SeqCst);
    }

    fn body(obj: &AccessProfile) -> Value {
        json!({
            "teamId": &*obj.spec.team_id,
            "name": obj.spec.name,
            "description": obj.spec.description.clone().unwrap_or_default(),
        })
    }
}

/// The fake and an engine of the `AccessProfile` kind keeping it, on `h`'s apiserver,
/// Connections and clock. Another `h.engine(provider.clone())` is the same operator
/// restarted: same upstream, no memory.
pub async fn things_engine(
    h: &Harness,
) -> (
    FakeThings,
    ThingsProvider,
    Arc<Engine<AccessProfile, ThingsProvider>>,
) {
    let fake = FakeThings::start().await;
    let provider = ThingsProvider::new(&fake);
    let engine = h.engine(provider.clone());
    (fake, provider, engine)
}

type ThingCx<'a> = Cx<'a, AccessProfile>;

impl Provider<AccessProfile> for ThingsProvider {
    type Observed = Thing;
    type Inputs = ();
    const UPSTREAM: UpstreamKind = UpstreamKind::Serval;

    fn id_of(&self, observed: &Thing) -> String {
        observed.id.clone()
    }

    async fn observe(&self, _cx: &ThingCx<'_>, id: &str) -> Result<Option<Thing>, UpstreamError> {
        match self
            .client
            .json(Call::get("get_thing", format!("things/{id}")))
            .await
        {
            Ok(thing) => Ok(Some(thing)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The natural key: team and name.
    async fn find(&self, cx: &ThingCx<'_>) -> Result<Vec<Thing>, UpstreamError> {
        let spec = &cx.obj.spec;
        let Some(name) = &spec.name else {
            return Ok(vec![]);
        };
        let call = Call::get("find_things", "things")
            .query("teamId", &*spec.team_id)
            .query("name", name);
        Ok(self.client.json::<Items>(call).await?.items)
    }

    /// `name` and `description` when set (omitted: unmanaged).
    fn diff(&self, cx: &ThingCx<'_>, observed: &Thing) -> Diff {
        let spec = &cx.obj.spec;
        let differs =
            |wanted: &Option<String>, is: &str| wanted.as_deref().is_some_and(|w| w != is);
        let mut diff = Diff::default();
        diff.check("name", differs(&spec.name, &observed.name));
        diff.check(
            "description",
            differs(&spec.description, &observed.description),
        );
        diff
    }

    fn create_calls(&self, cx: &ThingCx<'_>) -> Vec<Call> {
        vec![Call::post("create_thing", "things").json(Self::body(cx.obj))]
    }

    /// The differing fields only.
    fn update_calls(&self, cx: &ThingCx<'_>, observed: &Thing, diff: &Diff) -> Vec<Call> {
        let desired = Self::body(cx.obj);
        let body: serde_json::Map<String, Value> = diff
            .fields
            .iter()
            .map(|f| (f.to_string(), desired[*f].clone()))
            .collect();
        vec![Call::put("update_thing", format!("things/{}", observed.id)).json(body.into())]
    }

    fn delete_calls(&self, _cx: &ThingCx<'_>, id: &str) -> Vec<Call> {
        vec![Call::delete("delete_thing", format!("things/{id}"))]
    }

    async fn create(
        &self,
        _cx: &ThingCx<'_>,
        calls: Vec<Call>,
    ) -> Result<Created<Thing>, UpstreamError> {
        let [call] = <[Call; 1]>::try_from(calls).expect("one create call");
        Ok(Created::Done(self.client.json(call).await?))
    }

    async fn update(
        &self,
        _cx: &ThingCx<'_>,
        _observed: &Thing,
        _diff: &Diff,
        calls: Vec<Call>,
    ) -> Result<Written<Thing>, UpstreamError> {
        let mut last = None;
        for call in calls {
            last = Some(self.client.json(call).await?);
        }
        Ok(Written::Done(last))
    }

    /// A 404 is `Done`: the thing is gone either way.
    async fn delete(
        &self,
        _cx: &ThingCx<'_>,
        calls: Vec<Call>,
    ) -> Result<Written<()>, UpstreamError> {
        for call in calls {
            match self.client.send(call).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Written::Done(None))
    }

    async fn write_gate(&self, _cx: &ThingCx<'_>) -> Result<(), EngineError> {
        if self.gate_closed.load(Ordering::SeqCst) {
            return Err(EngineError::Dependency(GATE_CLOSED.into()));
        }
        Ok(())
    }
}
