//! The engine's behaviours, once, through a small test provider: to be filled.
