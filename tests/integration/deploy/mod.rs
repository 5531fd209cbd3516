//! What `deploy/argocd/` ships for Argo CD: the Application's file selection and the
//! resource health check (`health.lua`).

mod argocd_application;
mod argocd_health;
