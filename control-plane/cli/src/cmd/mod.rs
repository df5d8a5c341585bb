//! One module per subcommand.

pub mod admin;
pub mod ca;
pub mod token;
pub mod translate;
