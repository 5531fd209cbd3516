//! `accessplane import` (`src/import`): the round trip through `plan` and the operator
//! for every kind, and what the import must never do (print a configuration, take a
//! built-in, rename on a re-import, read more than the scope's pages).

mod command;
mod guards;
mod round_trip;
