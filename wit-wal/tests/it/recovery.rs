//! recovery tests.
