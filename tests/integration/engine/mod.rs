//! The generic engine (`src/engine`): its behaviours through a small test provider, its
//! asynchronous path, and its economy of calls at scale.

mod async_path;
mod behaviours;
mod ownership;
mod scale;
