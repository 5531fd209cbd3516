//! `accessplane import`: bring upstream objects that already exist under Git. For one
//! kind and its list scopes ([`importer`]), the provider's own List through a Connection's
//! read-only client; every object becomes the resource that manages it exactly as it is
//! (checked with the provider's own diff), named stably ([`names`]), printed or written
//! one file each ([`output`]). Nothing is written anywhere but the output.

pub mod command;
pub mod importer;
pub mod names;
pub mod output;
