//! `accessplane plan` (`src/plan`).

mod connections;
mod end_to_end;
mod equals_operator;
