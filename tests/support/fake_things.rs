//! A tiny stateful upstream for the engine's own tests: a store of "things" (`id`,
//! `teamId`, `name`, `description`) served over real HTTP by [`FakeServer`], with its
//! request log and fault injection (fail the next requests, apply then drop the
//! connection: a lost response).
//!
//! - `POST /things` creates (ids `t-1`, `t-2`, … are the server's); a name longer than
//!   [`MAX_NAME`] characters is refused with 422, and nothing is made.
//! - `GET /things/{id}`, `PUT /things/{id}` (sets the fields the body carries),
//!   `DELETE /things/{id}`: 404 for an unknown id.
//! - `GET /things?teamId=…&name=…`: the things matching both (the natural key).
//! - Every call needs `Authorization: Bearer` [`TOKEN`] (401 otherwise).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use axum::response::Response;
use serde_json::{Value, json};

use super::fake_http::{Backend, FakeServer, Req, auth_param, reply};

pub const THINGS_PATH: &str = "/things";
/// The bearer token the fake accepts.
pub const TOKEN: &str = "things-token";
/// Longest name the fake accepts (the CRD allows longer: the upstream's own rule).
pub const MAX_NAME: usize = 64;

/// Handle to a running fake; the request log and fault controls (`requests`, `count`,
/// `push_fault`, `fail_next`, …) are the shared [`FakeServer`]'s.
pub struct FakeThings {
    http: FakeServer<Store>,
}

impl std::ops::Deref for FakeThings {
    type Target = FakeServer<Store>;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

/// The things, by id.
#[derive(Default)]
pub struct Store {
    things: BTreeMap<String, Value>,
    next: u64,
}

impl FakeThings {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> Self {
        Self {
            http: FakeServer::start(Store::default()).await,
        }
    }

    /// Inserts a thing made outside the operator (in the SaaS UI); returns its id.
    pub fn seed(&self, team_id: &str, name: &str, description: &str) -> String {
        self.state()
            .insert(json!({"teamId": team_id, "name": name, "description": description}))
    }

    pub fn thing(&self, id: &str) -> Option<Value> {
        self.state().things.get(id).cloned()
    }

    /// Every stored thing, by id.
    pub fn things(&self) -> Vec<Value> {
        self.state().things.values().cloned().collect()
    }

    /// Changes a stored thing behind the operator's back (drift). Panics if absent.
    pub fn edit(&self, id: &str, field: &str, value: Value) {
        let mut store = self.state();
        let thing = store
            .things
            .get_mut(id)
            .unwrap_or_else(|| panic!("no thing {id}"));
        thing[field] = value;
    }

    /// Removes a stored thing behind the operator's back. Panics if absent.
    pub fn remove(&self, id: &str) {
        self.state()
            .things
            .remove(id)
            .unwrap_or_else(|| panic!("no thing {id}"));
    }

    /// Requests with this method to the things, whatever their outcome.
    pub fn calls(&self, method: &str) -> usize {
        self.count(method, THINGS_PATH)
    }

    /// POST, PUT and DELETE requests, whatever their outcome.
    pub fn writes(&self) -> usize {
        ["POST", "PUT", "DELETE"]
            .iter()
            .map(|m| self.calls(m))
            .sum()
    }
}

impl Store {
    fn insert(&mut self, mut thing: Value) -> String {
        self.next += 1;
        let id = format!("t-{}", self.next);
        thing["id"] = json!(id);
        self.things.insert(id.clone(), thing);
        id
    }

    fn create(&mut self, body: &Value) -> Response {
        let name = body["name"].as_str().unwrap_or_default();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return error(422, format!("name must be 1 to {MAX_NAME} characters long"));
        }
        let thing = json!({
            "teamId": body["teamId"],
            "name": name,
            "description": body["description"].as_str().unwrap_or_default(),
        });
        let id = self.insert(thing);
        reply(201, self.things[&id].clone())
    }

    fn list(&self, query: &HashMap<String, String>) -> Response {
        let items: Vec<&Value> = self
            .things
            .values()
            .filter(|t| ["teamId", "name"].iter().all(|k| t[k] == query[*k]))
            .collect();
        reply(200, json!({"items": items}))
    }

    fn update(&mut self, id: &str, body: &Value) -> Response {
        let Some(thing) = self.things.get_mut(id) else {
            return not_found(id);
        };
        for field in ["name", "description"] {
            if let Some(value) = body.get(field) {
                thing[field] = value.clone();
            }
        }
        reply(200, thing.clone())
    }
}

impl Backend for Store {
    const TOKEN_PATH: &'static str = "";

    fn serve(&mut self, req: &Req) -> Response {
        if auth_param(&req.headers, "Bearer") != Some(TOKEN) {
            return error(401, "missing or wrong bearer token".into());
        }
        let Some(rest) = req.path.strip_prefix(THINGS_PATH) else {
            return error(404, format!("no route {}", req.path));
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let id = rest.strip_prefix('/').filter(|id| !id.contains('/'));
        match (req.method.as_str(), id) {
            ("POST", None) if rest.is_empty() => self.create(&body),
            ("GET", None) if rest.is_empty() => {
                let query = req.query_map();
                if !query.contains_key("teamId") || !query.contains_key("name") {
                    return error(400, "teamId and name are required".into());
                }
                self.list(&query)
            }
            ("GET", Some(id)) => match self.things.get(id) {
                Some(thing) => reply(200, thing.clone()),
                None => not_found(id),
            },
            ("PUT", Some(id)) => self.update(id, &body),
            ("DELETE", Some(id)) => match self.things.remove(id) {
                Some(_) => reply(200, json!({})),
                None => not_found(id),
            },
            _ => error(405, format!("{} {} not allowed", req.method, req.path)),
        }
    }

    fn fault_body(status: u16) -> Value {
        json!({"message": format!("injected fault ({status})")})
    }
}

fn error(status: u16, message: String) -> Response {
    reply(status, json!({ "message": message }))
}

fn not_found(id: &str) -> Response {
    error(404, format!("no thing {id}"))
}
